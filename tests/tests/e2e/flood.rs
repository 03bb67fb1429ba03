//! The flood filter and sampling: exact farm-wide limits through Redis, an
//! in-process fallback that never turns an outage into lost events, and
//! per-project sampling.

use cyclops_common::ids::ProjectId;
use std::time::Duration;

use cyclops_common::config::{Config, ProjectKey};
use cyclops_common::record::topic_name;
use cyclops_tests::kafka::{holds_no_records, read_records, record_count};
use cyclops_tests::redis_server::OwnRedis;
use cyclops_tests::{TestService, event_id, sentry_auth, spawn_ingest, test_config, unique};
use futures::future::join_all;
use serde_json::Value;

const KEY: &str = "f100df100df100df100df100df100d01";
const PROJECT: u64 = 9;

fn config(max_uses: u64, window_secs: u64) -> Config {
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    config.redis.key_prefix = format!("{}:", unique("flood"));
    config.ingest.flood.max_uses = max_uses;
    config.ingest.flood.window_secs = window_secs;
    config
}

/// The same error each time (a new event id, a new timestamp: volatile fields).
fn the_same_error() -> Vec<u8> {
    format!(
        r#"{{"event_id":"{}","timestamp":{},"exception":{{"values":[{{"type":"ZeroDivisionError","value":"division by zero",
        "stacktrace":{{"frames":[{{"filename":"app.py","function":"handler","lineno":42}}]}}}}]}}}}"#,
        event_id(),
        volatile_number()
    )
    .into_bytes()
}

fn volatile_number() -> u128 {
    uuid::Uuid::new_v4().as_u128() % 1_000_000
}

/// Waits until `ingest`'s flood filter counts in Redis (it connects in the background).
async fn wait_for_redis(ingest: &TestService) {
    cyclops_tests::wait_for(Duration::from_secs(15), "the flood filter to connect to redis", || async {
        let ready: Value = reqwest::get(ingest.url("/ready")).await.ok()?.json().await.ok()?;
        let checks = ready["checks"].as_array()?.clone();
        checks.iter().any(|c| c["name"] == "flood_filter" && c["detail"] == "counting farm-wide in redis").then_some(())
    })
    .await
    .expect("flood filter on redis");
}

/// Sends `body` to `ingest` and returns (status, X-CYCLOPS-STATUS, X-CYCLOPS-CACHE-COUNT).
async fn submit(client: &reqwest::Client, ingest: &TestService, body: Vec<u8>) -> (u16, String, u64) {
    let response = client
        .post(ingest.url(&format!("/api/{PROJECT}/store/")))
        .header("x-sentry-auth", sentry_auth(KEY))
        .body(body)
        .send()
        .await
        .expect("request");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (cyclops, count) = (header("x-cyclops-status"), header("x-cyclops-cache-count").parse().unwrap_or(0));
    (response.status().as_u16(), cyclops, count)
}

#[tokio::test]
async fn three_instances_sharing_redis_pass_exactly_max_uses_of_a_burst() {
    let config = config(10, 60);
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let mut instances = Vec::new();
    for _ in 0..3 {
        let ingest = spawn_ingest(config.clone()).await.expect("ingest");
        wait_for_redis(&ingest).await;
        instances.push(ingest);
    }
    let client = reqwest::Client::new();
    // 90 copies of one error, 30 per instance, all at once.
    let burst = (0..90).map(|i| submit(&client, &instances[i % 3], the_same_error()));
    let results = join_all(burst).await;
    assert!(results.iter().all(|(status, _, _)| *status == 200), "drops are answered 200: {results:?}");
    let processed: Vec<u64> = results.iter().filter(|(_, s, _)| s == "PROCESSED").map(|(_, _, c)| *c).collect();
    let ignored = results.iter().filter(|(_, s, _)| s == "IGNORED").count();
    assert_eq!(processed.len(), 10, "exactly max_uses pass farm-wide");
    assert_eq!(ignored, 80);
    let mut counts = processed.clone();
    counts.sort_unstable();
    assert_eq!(counts, (1..=10).collect::<Vec<_>>(), "each passing event has its own slot");
    assert_eq!(read_records(&topic, 10, Duration::from_secs(30)).await.len(), 10, "those reach Kafka");
    assert_eq!(record_count(&topic).await, Some(10), "and only those");
    for instance in instances {
        instance.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn different_errors_are_counted_apart_and_windows_reopen() {
    let config = config(2, 2);
    let ingest = spawn_ingest(config).await.expect("ingest");
    wait_for_redis(&ingest).await;
    let client = reqwest::Client::new();
    let other = || format!(r#"{{"event_id":"{}","message":"another error"}}"#, event_id()).into_bytes();
    // Create the topic first, so that the window below is not spent on it.
    assert_eq!(submit(&client, &ingest, other()).await.1, "PROCESSED");
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(submit(&client, &ingest, the_same_error()).await.1);
    }
    assert_eq!(first, ["PROCESSED", "PROCESSED", "IGNORED"]);
    assert_eq!(submit(&client, &ingest, other()).await.1, "PROCESSED", "another fingerprint has its own count");
    assert_eq!(submit(&client, &ingest, other()).await.1, "IGNORED", "and its own limit");
    // Once the window is over, the error passes again.
    let reopened = cyclops_tests::wait_for(Duration::from_secs(5), "the window to reopen", || async {
        (submit(&client, &ingest, the_same_error()).await.1 == "PROCESSED").then_some(())
    })
    .await;
    assert!(reopened.is_ok());
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn a_zero_window_turns_the_filter_off() {
    let ingest = spawn_ingest(config(1, 0)).await.expect("ingest");
    let client = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(submit(&client, &ingest, the_same_error()).await.1, "PROCESSED");
    }
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn redis_dying_mid_run_falls_back_to_counting_in_process_without_a_5xx() {
    let mut redis = OwnRedis::start().await.expect("own redis");
    let mut config = config(3, 60);
    config.redis.url = Some(redis.url.clone().into());
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    wait_for_redis(&ingest).await;
    let client = reqwest::Client::new();
    assert_eq!(submit(&client, &ingest, the_same_error()).await.1, "PROCESSED");
    redis.kill().await.expect("redis killed");

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(submit(&client, &ingest, the_same_error()).await);
    }
    assert!(statuses.iter().all(|(code, _, _)| *code == 200), "no 5xx while redis is gone: {statuses:?}");
    let passed = statuses.iter().filter(|(_, s, _)| s == "PROCESSED").count();
    assert_eq!(passed, 3, "the instance counts in process: max_uses again, from zero");
    assert_eq!(read_records(&topic, 4, Duration::from_secs(30)).await.len(), 4, "1 before + 3 during the outage");
    assert_eq!(record_count(&topic).await, Some(4), "and no more");

    let ready: Value = reqwest::get(ingest.url("/ready")).await.expect("ready").json().await.expect("json");
    assert_eq!(ready["ready"], true, "still in rotation: {ready}");
    assert_eq!(ready["degraded"], true);
    let flood =
        ready["checks"].as_array().expect("checks").iter().find(|c| c["name"] == "flood_filter").expect("check");
    assert_eq!(flood["ok"], false, "{flood}");
    let count: Value = reqwest::get(ingest.url("/count")).await.expect("count").json().await.expect("json");
    assert_eq!(count["flood_fallback_active"], true);
    // The gauge is per process and other tests' filters set it too; the error counter only grows.
    let metrics = reqwest::get(ingest.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("cyclops_flood_redis_errors_total"), "redis failures visible in metrics");
    assert!(metrics.contains("cyclops_flood_fallback_active"), "the fallback gauge is exported");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn sampling_drops_the_configured_share_of_a_project() {
    let mut config = config(1000, 60);
    config.ingest.sampling.ignore_percentage.insert(PROJECT.to_string(), 100.0);
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let (code, status, _) = submit(&client, &ingest, the_same_error()).await;
        assert_eq!((code, status.as_str()), (200, "IGNORED"));
    }
    assert!(holds_no_records(&topic).await);
    let count: Value = reqwest::get(ingest.url("/count")).await.expect("count").json().await.expect("json");
    assert_eq!(count["ignored_by_reason"]["sampled"], 5);
    assert_eq!(count["ignored"], 5);
    assert_eq!(count["processed"], 0, "nothing was stored");
    ingest.stop().await.expect("stops");

    let mut half = self::config(1000, 60);
    half.ingest.sampling.ignore_percentage.insert(PROJECT.to_string(), 50.0);
    let ingest = spawn_ingest(half).await.expect("ingest");
    let mut ignored = 0;
    for _ in 0..200 {
        if submit(&client, &ingest, the_same_error()).await.1 == "IGNORED" {
            ignored += 1;
        }
    }
    // Binomial(200, 0.5): 60..140 holds with probability 1 - 1e-8.
    assert!((60..=140).contains(&ignored), "about half ignored, got {ignored}");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn the_flood_report_names_what_is_dropped_and_since_when() {
    let mut config = config(2, 60);
    // About the report, not Redis: counted in process, so no fallback can shift a count.
    config.redis.url = None;
    let ingest = spawn_ingest(config).await.expect("ingest");
    let client = reqwest::Client::new();
    let tagged = |host: &str| {
        let mut event: Value = serde_json::from_slice(&the_same_error()).expect("json");
        event["server_name"] = host.into();
        event["release"] = "shop@3.1.0".into();
        serde_json::to_vec(&event).expect("json")
    };
    let other = format!(r#"{{"event_id":"{}","message":"passes once"}}"#, event_id()).into_bytes();
    assert_eq!(submit(&client, &ingest, other).await.1, "PROCESSED");
    let mut statuses = Vec::new();
    for host in ["web-1", "web-1", "web-1", "web-2", "web-1", "web-1", "web-2"] {
        statuses.push(submit(&client, &ingest, tagged(host)).await.1);
    }
    assert_eq!(statuses.iter().filter(|s| *s == "IGNORED").count(), 5);

    let report: Value = reqwest::get(ingest.url("/floods")).await.expect("floods").json().await.expect("json");
    assert_eq!(report["service"], "ingest");
    let floods = report["projects"][PROJECT.to_string()].as_array().expect("the project's floods").clone();
    assert_eq!(floods.len(), 1, "only what was dropped: {floods:?}");
    let flood = &floods[0];
    assert_eq!(flood["dropped"], 5);
    assert_eq!(flood["title"], "ZeroDivisionError: division by zero");
    assert_eq!(flood["release"], "shop@3.1.0");
    assert!(flood["fingerprint"].as_str().is_some_and(|f| f.starts_with("exc-frames:")));
    assert_eq!(flood["hosts"][0], serde_json::json!({"host": "web-1", "count": 3}));
    assert_eq!(flood["hosts"][1], serde_json::json!({"host": "web-2", "count": 2}));
    let (first, last) = (flood["first_seen_ms"].as_u64().expect("ms"), flood["last_seen_ms"].as_u64().expect("ms"));
    assert!(first <= last && last <= report["now_ms"].as_u64().expect("ms"));
    ingest.stop().await.expect("stops");
}
