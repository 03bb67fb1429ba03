//! The forwarder against real Kafka and the fake Sentry: fairness, newest
//! first, rate-limit holds, outages, crashes and a shared consumer group.
//! Backlogs are written straight to Kafka as ingest would have written them.

use cyclops_common::ids::{EventId, ProjectId};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cyclops_common::config::Config;
use cyclops_tests::fake_sentry::{FakeSentry, Recorded, Rule};
use cyclops_tests::kafka::produce_backlog;
use cyclops_tests::process::ForwarderProcess;
use cyclops_tests::{spawn_forwarder, test_config, wait_for};

const KEY: &str = "fedcba9876543210fedcba9876543210";
const WAIT: Duration = Duration::from_secs(90);

fn config(sentry: &FakeSentry) -> Config {
    let mut config = test_config();
    config.sentry.base_url = sentry.url();
    config.forwarder.retry_initial_ms = 20;
    config.forwarder.retry_max_ms = 500;
    config.forwarder.breaker_max_probe_secs = 1;
    config
}

/// The `pN-nM` tag of a request made from [`produce_backlog`]'s bodies.
fn tag(r: &Recorded) -> Option<(u64, usize)> {
    let text = r.text();
    let rest = text.split("\"message\":\"p").nth(1)?;
    let (project, rest) = rest.split_once("-n")?;
    let (n, _) = rest.split_once("-end")?;
    Some((project.parse().ok()?, n.parse().ok()?))
}

/// Waits until every `(project, n)` in `expected` was answered 200.
async fn wait_delivered(sentry: &FakeSentry, expected: &HashSet<(u64, usize)>) -> Vec<Recorded> {
    let found = wait_for(WAIT, "every event delivered", || async {
        let requests = sentry.requests();
        let delivered: HashSet<_> = requests.iter().filter(|r| r.status == 200).filter_map(tag).collect();
        expected.is_subset(&delivered).then_some(requests)
    })
    .await;
    match found {
        Ok(requests) => requests,
        Err(e) => {
            let delivered: HashSet<_> = sentry.requests().iter().filter(|r| r.status == 200).filter_map(tag).collect();
            panic!("{e}: {} of {} delivered", expected.intersection(&delivered).count(), expected.len())
        }
    }
}

/// A forwarder's `/count`, when it answers.
async fn count_of(url: &str) -> Option<serde_json::Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

fn all(project: u64, count: usize) -> HashSet<(u64, usize)> {
    (0..count).map(|n| (project, n)).collect()
}

#[tokio::test]
async fn a_small_project_is_not_starved_by_a_flooding_one() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.set_latency(Duration::from_millis(20));
    let mut config = config(&sentry);
    config.forwarder.concurrency_initial = 1;
    config.forwarder.concurrency_max = 1;
    produce_backlog(&config.kafka.topic_prefix, 1, KEY, 300, 1).await.expect("flood backlog");
    produce_backlog(&config.kafka.topic_prefix, 2, KEY, 10, 1).await.expect("small backlog");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let expected: HashSet<_> = all(1, 300).union(&all(2, 10)).copied().collect();
    let requests = wait_delivered(&sentry, &expected).await;
    let order: Vec<u64> = requests.iter().filter_map(tag).map(|(p, _)| p).collect();
    let small_done_at = order.iter().rposition(|&p| p == 2).expect("small project delivered");
    assert!(
        small_done_at < 30,
        "the small project's 10 events went out within the first 30 requests, not after the flood: {small_done_at}"
    );
    forwarder.stop().await.expect("stops");
}

#[tokio::test]
async fn newest_events_go_first_and_the_backlog_still_drains() {
    for newest_first in [true, false] {
        let sentry = FakeSentry::start().await.expect("fake sentry");
        sentry.set_latency(Duration::from_millis(10));
        let mut config = config(&sentry);
        config.forwarder.concurrency_initial = 1;
        config.forwarder.concurrency_max = 1;
        config.forwarder.process_newer_messages_first = newest_first;
        produce_backlog(&config.kafka.topic_prefix, 5, KEY, 100, 1).await.expect("backlog");
        let forwarder = spawn_forwarder(config).await.expect("forwarder");
        let requests = wait_delivered(&sentry, &all(5, 100)).await;
        let order: Vec<usize> = requests.iter().filter_map(tag).map(|(_, n)| n).collect();
        if newest_first {
            assert!(order[0] >= 90, "the newest go first: {:?}", &order[..10]);
            assert!(order[..10].contains(&0), "the oldest keeps its share: {:?}", &order[..10]);
        } else {
            assert_eq!(&order[..10], &(0..10).collect::<Vec<_>>(), "oldest first");
        }
        forwarder.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn a_rate_limited_project_is_held_while_the_others_flow() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.rule(Rule::path("/api/7/", 429).times(1).header("X-Sentry-Rate-Limits", "3:error:project:quota"));
    let mut config = config(&sentry);
    config.forwarder.concurrency_initial = 1;
    config.forwarder.concurrency_max = 1;
    produce_backlog(&config.kafka.topic_prefix, 7, KEY, 5, 1).await.expect("held backlog");
    produce_backlog(&config.kafka.topic_prefix, 8, KEY, 20, 1).await.expect("other backlog");
    sentry.set_latency(Duration::from_millis(20));
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let expected: HashSet<_> = all(7, 5).union(&all(8, 20)).copied().collect();
    let requests = wait_delivered(&sentry, &expected).await;
    let limited = requests.iter().find(|r| r.status == 429).expect("the 429");
    let hold_end = limited.at + Duration::from_secs(3);
    let during: Vec<_> = requests.iter().filter(|r| r.at > limited.at && r.at < hold_end).filter_map(tag).collect();
    assert!(during.iter().all(|&(p, _)| p == 8), "nothing for the held project during its hold: {during:?}");
    assert!(during.len() >= 10, "the other project flowed meanwhile: {}", during.len());
    let after = requests.iter().filter(|r| r.at > limited.at && tag(r).is_some_and(|(p, _)| p == 7));
    assert!(after.clone().all(|r| r.at >= hold_end), "the held project resumed after the hold");
    assert_eq!(after.filter(|r| r.status == 200).count(), 5, "then its events were all delivered");
    forwarder.stop().await.expect("stops");
}

/// Sentry limits each data category on its own: a project over its
/// transaction quota still takes its errors, so only its transactions wait.
#[tokio::test]
async fn a_quota_on_one_category_holds_only_that_category() {
    use cyclops_common::record::topic_name;
    const PROJECT: u64 = 15;
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.rule(
        Rule::body("\"type\":\"transaction\"", 429)
            .times(1)
            .header("X-Sentry-Rate-Limits", "4:transaction:organization:quota"),
    );
    sentry.set_latency(Duration::from_millis(20));
    let mut config = config(&sentry);
    config.forwarder.concurrency_initial = 1;
    config.forwarder.concurrency_max = 1;
    config.forwarder.process_newer_messages_first = false;
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    // Transactions first, so that the limit comes before most errors went.
    for (n, category) in (0..20).map(|n| (n, if n < 10 { "transaction" } else { "error" })) {
        let body = format!(
            r#"{{"event_id":"{}","type":"{category}","message":"p{PROJECT}-n{n}-end"}}"#,
            cyclops_tests::event_id()
        );
        let headers = cyclops_tests::kafka::store_headers(PROJECT, KEY, &cyclops_tests::event_id(), category);
        cyclops_tests::kafka::produce_one(&topic, &headers, body.as_bytes()).await.expect("stored");
    }
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let requests = wait_delivered(&sentry, &all(PROJECT, 20)).await;
    let limited = requests.iter().find(|r| r.status == 429).expect("the 429");
    let hold_end = limited.at + Duration::from_secs(4);
    let is_transaction = |r: &&Recorded| r.text().contains("\"type\":\"transaction\"");
    let during: Vec<_> = requests.iter().filter(|r| r.at > limited.at && r.at < hold_end).collect();
    assert!(!during.iter().any(is_transaction), "no transaction is sent during the hold");
    let errors_during = during.iter().filter(|r| r.status == 200 && !is_transaction(r)).count();
    assert_eq!(errors_during, 10, "every error went during the transactions' hold");
    let transactions_after = requests.iter().filter(|r| r.at >= hold_end && r.status == 200).filter(is_transaction);
    assert_eq!(transactions_after.count(), 10, "then every transaction was delivered");
    let count: serde_json::Value =
        reqwest::get(forwarder.url("/count")).await.expect("count").json().await.expect("json");
    assert_eq!(count["processed"], 20, "{count}");
    forwarder.stop().await.expect("stops");
}

#[tokio::test]
async fn an_outage_of_503s_is_ridden_out_without_loss() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.rule(Rule::path("/api/", 503).times(8));
    let mut config = config(&sentry);
    config.forwarder.breaker_grace_secs = 0;
    produce_backlog(&config.kafka.topic_prefix, 9, KEY, 40, 2).await.expect("backlog");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let requests = wait_delivered(&sentry, &all(9, 40)).await;
    let failed = requests.iter().filter(|r| r.status == 503).count();
    assert_eq!(failed, 8, "every scripted 503 was met");
    let metrics = reqwest::get(forwarder.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("cyclops_forwarder_breaker_openings_total"), "the breaker opened");
    assert!(metrics.contains("cyclops_forwarder_retried_total{reason=\"server_error\"}"));
    forwarder.stop().await.expect("stops");
}

#[tokio::test]
async fn count_reports_the_backlog_and_sentrys_latency() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.rule(Rule::path("/api/", 503));
    let config = config(&sentry);
    produce_backlog(&config.kafka.topic_prefix, 11, KEY, 30, 1).await.expect("backlog");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let count = wait_for(WAIT, "a backlog of 30 in /count", || async {
        let count = count_of(&forwarder.url("/count")).await?;
        (count["count"] == 30).then_some(count)
    })
    .await
    .expect("count");
    assert_eq!(count["service"], "forwarder");
    assert_eq!(count["projects"]["11"]["backlog"], 30);
    assert!(count["oldest_pending_age_secs"].as_f64().is_some());
    sentry.clear_rules();
    let done = wait_for(WAIT, "an empty backlog", || async {
        let count = count_of(&forwarder.url("/count")).await?;
        (count["count"] == 0 && count["processed"] == 30).then_some(count)
    })
    .await
    .expect("drained");
    for key in ["average", "percentile", "ignored", "concurrency_limit", "in_flight"] {
        assert!(done[key].is_number(), "{key} in {done}");
    }
    forwarder.stop().await.expect("stops");
}

/// Per event, how many times Sentry accepted it.
fn deliveries(requests: &[Recorded]) -> HashMap<(u64, usize), usize> {
    let mut out = HashMap::new();
    for tag in requests.iter().filter(|r| r.status == 200).filter_map(tag) {
        *out.entry(tag).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn a_forwarder_killed_mid_stream_loses_nothing_and_duplicates_little() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.set_latency(Duration::from_millis(20));
    let mut config = config(&sentry);
    config.forwarder.concurrency_max = 4;
    config.forwarder.commit_interval_ms = 100;
    config.forwarder.session_timeout_ms = 6000;
    produce_backlog(&config.kafka.topic_prefix, 12, KEY, 600, 2).await.expect("backlog");
    let first = ForwarderProcess::start(&config).await.expect("first forwarder");
    wait_for(WAIT, "some deliveries", || async { (sentry.requests().len() >= 150).then_some(()) })
        .await
        .expect("first forwarder delivers");
    first.kill9().await.expect("killed");
    let delivered_before = sentry.requests().len();
    assert!(delivered_before < 600, "killed mid-stream ({delivered_before} sent)");
    let second = ForwarderProcess::start(&config).await.expect("second forwarder");
    let requests = wait_delivered(&sentry, &all(12, 600)).await;
    let counts = deliveries(&requests);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    // At most what was in flight (4) plus what was delivered in one commit
    // interval (100 ms at about 4 × 200 requests/s) before the kill.
    assert!(duplicates <= 120, "{duplicates} duplicates after a kill -9");
    second.kill9().await.expect("stopped");
}

#[tokio::test]
async fn two_forwarders_share_the_partitions_and_one_survives_the_other() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.set_latency(Duration::from_millis(20));
    let mut config = config(&sentry);
    config.forwarder.session_timeout_ms = 6000;
    config.forwarder.concurrency_initial = 1;
    config.forwarder.concurrency_max = 1;
    produce_backlog(&config.kafka.topic_prefix, 13, KEY, 400, 4).await.expect("backlog");
    let a = ForwarderProcess::start(&config).await.expect("a");
    let b = ForwarderProcess::start(&config).await.expect("b");
    let owned = |f: &ForwarderProcess| {
        let url = f.url("/count");
        async move { Some(count_of(&url).await?["partitions"].as_array()?.len()) }
    };
    let shared = wait_for(WAIT, "both forwarders owning partitions", || async {
        let (x, y) = (owned(&a).await?, owned(&b).await?);
        (x > 0 && y > 0 && x + y == 4).then_some((x, y))
    })
    .await;
    assert!(shared.is_ok(), "the four partitions spread over both: {shared:?}");
    a.kill9().await.expect("killed");
    let requests = wait_delivered(&sentry, &all(13, 400)).await;
    assert!(deliveries(&requests).len() == 400);
    // Everything may have been delivered before the rebalance gave b the
    // dead one's partitions: wait for that too.
    let survivor =
        wait_for(WAIT, "the survivor owning every partition", || async { (owned(&b).await? == 4).then_some(()) });
    assert!(survivor.await.is_ok(), "the survivor took every partition over");
    b.kill9().await.expect("stopped");
}

#[tokio::test]
async fn an_envelope_delivered_late_keeps_its_event_time() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let config = config(&sentry);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let received_at_ms = hour_ago.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
    let sent_at = rfc3339(hour_ago);
    let body = format!(
        "{{\"event_id\":\"{}\",\"sent_at\":\"{sent_at}\"}}\n{{\"type\":\"event\"}}\n{{\"message\":\"late\"}}\n",
        cyclops_tests::event_id()
    );
    let headers = cyclops_common::record::RecordHeaders {
        method: "POST".into(),
        path: "/api/14/envelope/".into(),
        query: None,
        content_type: Some("application/x-sentry-envelope".into()),
        content_encoding: Some("gzip".into()),
        auth: Some(cyclops_tests::sentry_auth(KEY)),
        event_id: EventId::new(cyclops_tests::event_id()),
        project_id: ProjectId::new(14),
        received_at_ms,
        client_ip: None,
        user_agent: None,
        fingerprint: None,
        categories: vec!["error".into()],
    };
    let topic = cyclops_common::record::topic_name(&config.kafka.topic_prefix, ProjectId::new(14));
    cyclops_tests::kafka::produce_one(&topic, &headers, &cyclops_tests::gzip(body.as_bytes())).await.expect("stored");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let request =
        wait_for(WAIT, "the envelope", || async { sentry.requests().into_iter().next() }).await.expect("sent");
    assert_eq!(request.header("content-encoding"), Some("gzip"), "sent in the encoding it was stored in");
    let text = request.decoded_text();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().expect("header")).expect("json");
    let moved = header["sent_at"].as_str().expect("sent_at");
    let moved_at = time::OffsetDateTime::parse(moved, &time::format_description::well_known::Rfc3339).expect("rfc3339");
    let off = (time::OffsetDateTime::from(SystemTime::now()) - moved_at).abs();
    // The record waited an hour; the request says it was sent about now.
    assert!(off < time::Duration::seconds(120), "sent_at {moved} moved to about now ({off} off)");
    assert!(text.ends_with("{\"type\":\"event\"}\n{\"message\":\"late\"}\n"), "items unchanged");
    forwarder.stop().await.expect("stops");
}

/// RFC 3339 in UTC.
fn rfc3339(t: std::time::SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(t).format(&Rfc3339).expect("formats")
}

#[tokio::test]
async fn replay_delivers_again_from_a_point_in_time() {
    use cyclops_forwarder::replay::{ReplayError, ReplayRequest, Target, replay};
    use cyclops_tests::kafka::produce_backlog_range;
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let config = config(&sentry);
    let prefix = config.kafka.topic_prefix.clone();
    let now = std::time::SystemTime::now();
    let minute_ago = now - Duration::from_secs(60);
    let ms = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64;
    produce_backlog_range(&prefix, 15, KEY, 0..5, 2, Some(ms(minute_ago))).await.expect("older events");
    produce_backlog_range(&prefix, 15, KEY, 5..10, 2, None).await.expect("newer events");
    let since = now - Duration::from_secs(30);
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    wait_delivered(&sentry, &all(15, 10)).await;

    let request = |dry_run| ReplayRequest {
        group: config.forwarder.group_id.clone(),
        target: Target::datetime(&rfc3339(since)).expect("a time"),
        project: Some(15),
        dry_run,
    };
    let run = |request: ReplayRequest| {
        let config = config.clone();
        async move { tokio::task::spawn_blocking(move || replay(&config, &request, |_| {})).await.expect("task") }
    };
    let refused = run(request(false)).await;
    assert!(matches!(refused, Err(ReplayError::GroupActive { .. })), "refused while forwarders run: {refused:?}");
    forwarder.stop().await.expect("stops");

    let plan = run(request(true)).await.expect("dry run");
    assert_eq!(plan.iter().map(|p| p.to_deliver).sum::<i64>(), 5, "the five newer events: {plan:?}");
    assert!(plan.iter().all(|p| p.current.is_some()), "from where the group was");
    let again = run(request(true)).await.expect("second dry run");
    assert_eq!(plan, again, "a dry run commits nothing");
    assert!(plan.iter().all(|p| p.committed.is_none()), "nothing read back from a dry run");
    let done = run(request(false)).await.expect("replayed");
    assert!(done.iter().all(|p| p.committed == Some(p.target)), "the result, read back from Kafka: {done:?}");

    let forwarder = spawn_forwarder(config).await.expect("forwarder again");
    let twice = wait_for(WAIT, "the newer events delivered twice", || async {
        let counts = deliveries(&sentry.requests());
        (5..10).all(|n| counts.get(&(15, n)) == Some(&2)).then_some(counts)
    })
    .await
    .expect("replayed events delivered");
    assert!((0..5).all(|n| twice.get(&(15, n)) == Some(&1)), "the older ones not again: {twice:?}");
    forwarder.stop().await.expect("stops");
}

#[tokio::test]
async fn a_deep_backlog_jumps_to_the_newest_events_and_backfills_the_rest() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.set_latency(Duration::from_millis(10));
    let mut config = config(&sentry);
    config.forwarder.concurrency_initial = 1;
    config.forwarder.concurrency_max = 1;
    config.forwarder.jump_threshold_events = 300;
    config.forwarder.buffer_events_per_partition = 100;
    let prefix = config.kafka.topic_prefix.clone();
    produce_backlog(&prefix, 16, KEY, 1500, 1).await.expect("backlog");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    wait_for(WAIT, "the jump", || async {
        let count = count_of(&forwarder.url("/count")).await?;
        (count["partitions"][0]["backfill_gaps"] == 1).then_some(())
    })
    .await
    .expect("a deep backlog jumps");
    // Fresh events during the incident go before the backlog.
    cyclops_tests::kafka::produce_backlog_range(&prefix, 16, KEY, 1500..1530, 1, None).await.expect("fresh events");
    let requests = wait_delivered(&sentry, &all(16, 1530)).await;
    let order: Vec<usize> = requests.iter().filter_map(tag).map(|(_, n)| n).collect();
    let head = order.iter().position(|&n| (1400..1500).contains(&n)).expect("the newest delivered");
    assert!(head < 250, "the newest of the backlog went out early (request {head}), not after all of it");
    let last_fresh = order.iter().rposition(|&n| n >= 1500).expect("fresh delivered");
    let last_old = order.iter().rposition(|&n| n < 1000).expect("backlog delivered");
    assert!(last_fresh < last_old, "fresh events overtook the backlog ({last_fresh} < {last_old})");
    let backfilled: Vec<usize> = order[head..].iter().copied().filter(|&n| n < 1000).take(20).collect();
    assert!(backfilled.windows(2).all(|w| w[0] < w[1]), "the backfill drains oldest first: {backfilled:?}");
    let drained = wait_for(WAIT, "everything committed", || async {
        let count = count_of(&forwarder.url("/count")).await?;
        (count["count"] == 0 && count["partitions"][0]["committed"] == 1530).then_some(count)
    })
    .await;
    assert!(drained.is_ok(), "the committed offset reached the end: {drained:?}");
    forwarder.stop().await.expect("stops");
}

#[tokio::test]
async fn a_long_failure_keeps_the_backlog_in_kafka_not_in_memory() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.rule(Rule::path("/api/", 500));
    let mut config = config(&sentry);
    config.forwarder.buffer_events_per_partition = 50;
    config.forwarder.retry_max_ms = 200;
    produce_backlog(&config.kafka.topic_prefix, 17, KEY, 3000, 1).await.expect("backlog");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let url = forwarder.url("/count");
    let failing = wait_for(WAIT, "a failing Sentry, retried for a while", || async {
        let count = count_of(&url).await?;
        let part = &count["partitions"][0];
        (sentry.requests().len() >= 300 && part["paused"] == true && part["high_watermark"] == 3000).then_some(count)
    })
    .await
    .expect("paused while failing");
    let buffered = failing["buffered"].as_u64().unwrap_or(u64::MAX);
    assert!(buffered <= 600, "at most the buffer (and one read batch) in memory, not the backlog of 3000: {buffered}");
    assert_eq!(failing["count"], 3000, "nothing delivered, nothing lost");
    sentry.clear_rules();
    wait_delivered(&sentry, &all(17, 3000)).await;
    forwarder.stop().await.expect("stops");
}

/// A runtime dropped under a running forwarder (what a failing test does)
/// must finish dropping: the forwarder's poll thread stops with it instead
/// of keeping the runtime's drop waiting forever.
#[test]
fn dropping_the_runtime_under_a_running_forwarder_returns() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let sentry = FakeSentry::start().await.expect("fake sentry");
            let forwarder =
                cyclops_forwarder::Forwarder::build(config(&sentry), Default::default()).await.expect("forwarder");
            let healthcheck = format!("http://{}/healthcheck", forwarder.local_addr());
            let serving = tokio::spawn(forwarder.run());
            // Once it serves (its poll thread runs), the test body "ends" without stopping it.
            wait_for(Duration::from_secs(30), "the forwarder serving", || async {
                reqwest::get(&healthcheck).await.ok().map(|_| ())
            })
            .await
            .expect("serving");
            std::mem::forget(serving);
        });
        drop(runtime);
        done.send(()).ok();
    });
    assert!(finished.recv_timeout(Duration::from_secs(30)).is_ok(), "the runtime's drop never returned");
}
