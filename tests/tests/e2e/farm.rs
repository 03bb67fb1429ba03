//! A whole farm: two ingest instances and two forwarders (one consumer
//! group) against the real Kafka and Redis and a fake Sentry, with real SDK
//! clients, a flood of one error, a busy project and a small one.
//!
//! Checked: every accepted event reaches Sentry with its body and auth; the
//! flood is cut farm-wide to `max_uses`; the small project is not starved by
//! the busy one; `cyclops-count` over the four instances adds up to what
//! Sentry received and what ingest dropped; and a forwarder killed mid-run
//! loses nothing.

use std::time::Duration;

use cyclops_common::config::{Config, ProjectKey};
use cyclops_common::encoding::{Encoding, decode};
use cyclops_count::{FarmReport, fetch_all, merge_floods};
use cyclops_tests::fake_sentry::{FakeSentry, Recorded};
use cyclops_tests::process::ForwarderProcess;
use cyclops_tests::sdk::{python_sends, rust_sends};
use cyclops_tests::{TestService, event_id, sentry_auth, spawn_ingest, test_config, wait_for};
use futures::future::join_all;
use serde_json::Value;

const FLOOD: u64 = 81;
const BUSY: u64 = 82;
const SMALL: u64 = 83;
const MAX_USES: u64 = 5;
const WAIT: Duration = Duration::from_secs(90);

fn key(project: u64) -> String {
    format!("{project:0>32}")
}

fn farm_config(sentry: &FakeSentry) -> Config {
    let mut config = test_config();
    config.projects = [FLOOD, BUSY, SMALL].map(|id| ProjectKey { id, public_key: key(id), secret_key: None }).to_vec();
    config.kafka.topic_partitions = 2;
    // One window for the whole run: the flood must pass exactly max_uses farm-wide.
    config.ingest.flood.max_uses = MAX_USES;
    config.ingest.flood.window_secs = 120;
    config.sentry.base_url = sentry.url();
    config.forwarder.topic_refresh_secs = 1;
    config.forwarder.session_timeout_ms = 6000;
    config.forwarder.commit_interval_ms = 100;
    config.forwarder.concurrency_initial = 2;
    config.forwarder.concurrency_max = 2;
    config.forwarder.retry_initial_ms = 20;
    config.forwarder.retry_max_ms = 500;
    config
}

/// An accepted event, as its SDK sent it.
#[derive(Debug, Clone)]
struct Accepted {
    project: u64,
    id: String,
    /// The body sent, for the store events this test builds itself.
    body: Option<Vec<u8>>,
}

/// Posts a store event; returns it when ingest answered PROCESSED, and the
/// `X-CYCLOPS-STATUS` it gave.
async fn submit(
    client: &reqwest::Client,
    ingest: &TestService,
    project: u64,
    body: Value,
) -> (String, Option<Accepted>) {
    let id = body["event_id"].as_str().expect("an id").to_owned();
    let body = serde_json::to_vec(&body).expect("json");
    let response = client
        .post(ingest.url(&format!("/api/{project}/store/")))
        .header("x-sentry-auth", sentry_auth(&key(project)))
        .body(body.clone())
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(response.status(), 200);
    let status = response.headers()["x-cyclops-status"].to_str().expect("ascii").to_owned();
    let accepted = (status == "PROCESSED").then_some(Accepted { project, id, body: Some(body) });
    (status, accepted)
}

fn flood_event() -> Value {
    serde_json::json!({
        "event_id": event_id(), "server_name": "web-7", "release": "shop@9.9.9",
        "exception": {"values": [{"type": "ZeroDivisionError", "value": "division by zero",
            "stacktrace": {"frames": [{"filename": "cart.py", "function": "total", "lineno": 12}]}}]}
    })
}

fn distinct_event(label: &str, n: usize) -> Value {
    serde_json::json!({"event_id": event_id(), "message": format!("{label} event {n}"), "level": "error"})
}

/// Sends `events` spread over the ingest instances, all at once.
async fn send_all(ingests: &[&TestService], events: Vec<(u64, Value)>) -> Vec<(String, Option<Accepted>)> {
    let client = reqwest::Client::new();
    join_all(events.into_iter().enumerate().map(|(i, (project, body))| {
        let (client, ingest) = (client.clone(), ingests[i % ingests.len()]);
        async move { submit(&client, ingest, project, body).await }
    }))
    .await
}

async fn wait_for_redis(ingest: &TestService) {
    wait_for(Duration::from_secs(15), "the flood filter to count in redis", || async {
        let ready: Value = reqwest::get(ingest.url("/ready")).await.ok()?.json().await.ok()?;
        let checks = ready["checks"].as_array()?.clone();
        checks.iter().any(|c| c["name"] == "flood_filter" && c["detail"] == "counting farm-wide in redis").then_some(())
    })
    .await
    .expect("flood filter on redis");
}

/// The request's body with its content encoding undone, as text.
fn decoded_text(r: &Recorded) -> String {
    let encoding = Encoding::from_header(r.header("content-encoding")).unwrap_or(Encoding::Identity);
    decode(encoding, &r.body, 20 << 20).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Which accepted event each 200-answered request carried, in the order Sentry received them.
fn delivered(requests: &[Recorded], accepted: &[Accepted]) -> Vec<(usize, Recorded)> {
    let mut out = Vec::new();
    for r in requests.iter().filter(|r| r.status == 200) {
        let text = decoded_text(r);
        let hyphenated = |id: &str| uuid::Uuid::parse_str(id).map(|u| u.hyphenated().to_string()).unwrap_or_default();
        if let Some(i) = accepted.iter().position(|a| text.contains(&a.id) || text.contains(&hyphenated(&a.id))) {
            out.push((i, r.clone()));
        }
    }
    out
}

/// Waits until every accepted event was answered 200 by the fake Sentry.
async fn wait_all_delivered(sentry: &FakeSentry, accepted: &[Accepted]) -> Vec<(usize, Recorded)> {
    let result = wait_for(WAIT, "every accepted event delivered", || async {
        let got = delivered(&sentry.requests(), accepted);
        let mut seen = vec![false; accepted.len()];
        got.iter().for_each(|(i, _)| seen[*i] = true);
        seen.iter().all(|s| *s).then_some(got)
    })
    .await;
    result.unwrap_or_else(|e| {
        let got = delivered(&sentry.requests(), accepted);
        let missing: Vec<_> =
            accepted.iter().enumerate().filter(|(i, _)| !got.iter().any(|(j, _)| j == i)).map(|(_, a)| a).collect();
        panic!("{e}: {} of {} missing, e.g. {:?}", missing.len(), accepted.len(), missing.first())
    })
}

#[tokio::test]
async fn a_farm_of_two_ingests_and_two_forwarders() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.set_latency(Duration::from_millis(20));
    let config = farm_config(&sentry);
    let (ingest_a, ingest_b) =
        (spawn_ingest(config.clone()).await.expect("ingest a"), spawn_ingest(config.clone()).await.expect("ingest b"));
    wait_for_redis(&ingest_a).await;
    wait_for_redis(&ingest_b).await;
    let ingests = [&ingest_a, &ingest_b];

    // One event per project creates the topics, so that the forwarders find
    // them and settle their group before the workload arrives.
    let warmup =
        send_all(&ingests, [FLOOD, BUSY, SMALL].map(|p| (p, distinct_event("warm-up", p as usize))).to_vec()).await;
    let mut accepted: Vec<Accepted> = warmup.into_iter().filter_map(|(_, a)| a).collect();
    let forwarder_a = ForwarderProcess::start(&config).await.expect("forwarder a");
    let forwarder_b = ForwarderProcess::start(&config).await.expect("forwarder b");
    let owned = |f: &ForwarderProcess| {
        let url = f.url("/count");
        async move {
            let count: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            Some(count["partitions"].as_array()?.len())
        }
    };
    wait_for(WAIT, "both forwarders to own the six partitions", || async {
        let (a, b) = (owned(&forwarder_a).await?, owned(&forwarder_b).await?);
        (a > 0 && b > 0 && a + b == 6).then_some(())
    })
    .await
    .expect("the group settled");

    // The workload: a busy project, then a small one, a flood of one error, and real SDKs.
    let mut events: Vec<(u64, Value)> = (0..150).map(|n| (BUSY, distinct_event("busy", n))).collect();
    events.extend((0..20).map(|n| (SMALL, distinct_event("small", n))));
    events.extend((0..100).map(|_| (FLOOD, flood_event())));
    let answers = send_all(&ingests, events).await;
    let flood_passed =
        answers.iter().filter(|(s, a)| s == "PROCESSED" && a.as_ref().is_some_and(|a| a.project == FLOOD)).count();
    assert_eq!(flood_passed as u64, MAX_USES, "the flood is cut farm-wide, whichever instance took it");
    assert!(answers.iter().all(|(s, _)| s == "PROCESSED" || s == "IGNORED"));
    accepted.extend(answers.into_iter().filter_map(|(_, a)| a));
    for (i, ingest) in ingests.iter().enumerate() {
        let dsn = format!("http://{}@{}/{SMALL}", key(SMALL), ingest.addr);
        let sent = if i == 0 {
            python_sends(2, &dsn, "raised in python").await.expect("sentry-sdk 2 sends")
        } else {
            rust_sends(&dsn, "sent by the sentry crate").await.expect("the sentry crate sends")
        };
        accepted.push(Accepted { project: SMALL, id: sent.event_id, body: None });
    }

    let got = wait_all_delivered(&sentry, &accepted).await;
    for (i, request) in &got {
        let event = &accepted[*i];
        let auth = request.header("x-sentry-auth").unwrap_or_default();
        assert!(auth.contains(&key(event.project)), "auth forwarded for {event:?}: {auth:?}");
        if let Some(body) = &event.body {
            assert_eq!(&request.body[..], &body[..], "the body reaches Sentry as sent");
        }
    }
    // Fair turns: the small project, sent after the busy one, is through before the busy one is.
    // The store events only: the SDKs' two are sent after the others.
    let last_small =
        got.iter().rposition(|(i, _)| accepted[*i].project == SMALL && accepted[*i].body.is_some()).expect("delivered");
    let busy_before_small_done = got[..last_small].iter().filter(|(i, _)| accepted[*i].project == BUSY).count();
    assert!(busy_before_small_done < 120, "the small project waited for {busy_before_small_done} busy events");

    // cyclops-count over the four instances adds up.
    let urls: Vec<String> = [ingest_a.url(""), ingest_b.url(""), forwarder_a.url(""), forwarder_b.url("")].to_vec();
    let client = reqwest::Client::new();
    let report = wait_for(Duration::from_secs(30), "the forwarders to commit everything", || async {
        let report = FarmReport::new(&urls, fetch_all(&client, &urls, "/count", Duration::from_secs(2)).await);
        (report.to_send == 0).then_some(report)
    })
    .await
    .expect("nothing left to send");
    let sentry_200s = sentry.requests().iter().filter(|r| r.status == 200).count() as u64;
    assert_eq!(report.not_found, 0);
    assert_eq!(report.ingest.processed, accepted.len() as u64, "ingest stored what it answered PROCESSED");
    assert_eq!(report.ingest.ignored, 100 - MAX_USES, "and dropped the rest of the flood");
    assert_eq!(report.forwarders.processed, sentry_200s, "the forwarders delivered what Sentry received");
    assert_eq!(report.forwarders.ignored, 0, "nothing dead-lettered");
    let text = cyclops_count::render_text(&report);
    assert!(text.contains(&format!("Total {} processed items and {} ignored items", accepted.len(), 100 - MAX_USES)));

    // The flood report, merged over both ingests.
    let floods: Vec<Value> =
        fetch_all(&client, &urls[..2], "/floods", Duration::from_secs(2)).await.into_iter().flatten().collect();
    let top = merge_floods(&floods, 5);
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!((top[0].project, top[0].dropped), (FLOOD, 100 - MAX_USES));
    assert_eq!(top[0].title, "ZeroDivisionError: division by zero");
    assert_eq!(top[0].hosts, vec![("web-7".to_owned(), 100 - MAX_USES)]);

    // A forwarder killed mid-run: its partitions move to the other, nothing is
    // lost. A slower Sentry (2 × 2 requests in flight, 50 ms each: 80/s)
    // keeps the 200 events under way for seconds.
    sentry.set_latency(Duration::from_millis(50));
    let before = sentry.requests().len();
    let more = send_all(&ingests, (0..200).map(|n| (BUSY, distinct_event("after", n))).collect()).await;
    let more: Vec<Accepted> = more.into_iter().filter_map(|(_, a)| a).collect();
    assert_eq!(more.len(), 200);
    wait_for(WAIT, "the second batch under way", || async { (sentry.requests().len() >= before + 30).then_some(()) })
        .await
        .expect("delivering");
    forwarder_b.kill9().await.expect("killed");
    let at_kill = delivered(&sentry.requests(), &more).len();
    assert!(at_kill < more.len(), "killed mid-run ({at_kill} of {} delivered)", more.len());
    wait_all_delivered(&sentry, &more).await;
    let report = FarmReport::new(&urls, fetch_all(&client, &urls, "/count", Duration::from_secs(2)).await);
    assert_eq!(report.not_found, 1, "the killed forwarder is named as not answering");
    assert!(report.instances[3].error.is_some());

    forwarder_a.kill9().await.expect("stopped");
    ingest_a.stop().await.expect("stops");
    ingest_b.stop().await.expect("stops");
}
