//! Both services serve /healthcheck, /live, /ready and /metrics, and /ready
//! tells the truth about Kafka, Redis (ingest's only) and shutdown.

use std::time::Duration;

use cyclops_common::config::Config;
use cyclops_tests::{TestService, spawn_forwarder, spawn_ingest, test_config, unique, wait_for};
use serde_json::Value;

async fn get(service: &TestService, path: &str) -> (u16, String) {
    let response = reqwest::get(service.url(path)).await.expect("request");
    (response.status().as_u16(), response.text().await.expect("body"))
}

fn check<'a>(ready: &'a Value, name: &str) -> &'a Value {
    ready["checks"].as_array().expect("checks").iter().find(|c| c["name"] == name).expect("check present")
}

async fn assert_serves_status(service: TestService, healthcheck_text: &str) {
    assert_eq!(get(&service, "/healthcheck").await, (200, healthcheck_text.to_owned()));
    assert_eq!(get(&service, "/live").await.0, 200);

    let (code, body) = get(&service, "/ready").await;
    assert_eq!(code, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["ready"], true);
    assert_eq!(check(&ready, "kafka")["ok"], true);
    let label = if healthcheck_text.starts_with("INGEST") { "ingest" } else { "forwarder" };
    let redis = ready["checks"].as_array().expect("checks").iter().find(|c| c["name"] == "redis");
    if label == "ingest" {
        assert_eq!(redis.expect("ingest checks the redis its flood filter uses")["ok"], true);
    } else {
        assert!(redis.is_none(), "the forwarder does not use redis: {ready}");
    }

    let (code, metrics) = get(&service, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains(&format!("cyclops_build_info{{service=\"{label}\"")), "{metrics}");

    service.stop().await.expect("stops cleanly");
}

#[tokio::test]
async fn ingest_serves_status_endpoints() {
    let mut config = test_config();
    config.ingest.healthcheck_text = unique("INGEST-OK");
    let text = config.ingest.healthcheck_text.clone();
    assert_serves_status(spawn_ingest(config).await.expect("ingest starts"), &text).await;
}

#[tokio::test]
async fn forwarder_serves_status_endpoints() {
    let mut config = test_config();
    config.forwarder.healthcheck_text = unique("FORWARDER-OK");
    let text = config.forwarder.healthcheck_text.clone();
    assert_serves_status(spawn_forwarder(config).await.expect("forwarder starts"), &text).await;
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn ready_is_503_while_kafka_is_unreachable_unless_the_spool_takes_events() {
    let mut config = test_config();
    config.kafka.brokers = format!("127.0.0.1:{}", closed_port());
    config.kafka.metadata_timeout_ms = 500;
    // With the spool on, ingest still takes events: degraded, not unready.
    let ingest = spawn_ingest(config.clone()).await.expect("ingest starts without Kafka");
    let (code, body) = get(&ingest, "/ready").await;
    assert_eq!(code, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["degraded"], true);
    assert_eq!(
        (check(&ready, "kafka")["ok"].clone(), check(&ready, "kafka")["critical"].clone()),
        (false.into(), false.into())
    );
    assert_eq!(check(&ready, "spool")["ok"], true, "nothing spooled yet: {body}");
    ingest.stop().await.expect("stops");

    config.ingest.spool.enabled = false;
    let ingest = spawn_ingest(config).await.expect("ingest starts without Kafka");
    let (code, body) = get(&ingest, "/ready").await;
    assert_eq!(code, 503, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["ready"], false);
    assert_eq!(check(&ready, "kafka")["ok"], false);
    assert_eq!(check(&ready, "redis")["ok"], true);
    assert_eq!(get(&ingest, "/live").await.0, 200, "liveness does not depend on Kafka");
    ingest.stop().await.expect("stops");
}

/// Ingest keeps accepting without Redis (its flood filter counts in process),
/// so Redis down makes `/ready` degraded, not 503.
#[tokio::test]
async fn ready_is_degraded_not_503_while_redis_is_unreachable() {
    let mut config = test_config();
    config.redis.url = Some(format!("redis://127.0.0.1:{}/0", closed_port()).into());
    let ingest = spawn_ingest(config).await.expect("ingest starts without Redis");
    let (code, body) = get(&ingest, "/ready").await;
    assert_eq!(code, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["degraded"], true);
    assert_eq!(check(&ready, "redis")["ok"], false);
    assert_eq!(check(&ready, "kafka")["ok"], true);
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn without_redis_only_kafka_is_checked() {
    let mut config: Config = test_config();
    config.redis.url = None;
    let ingest = spawn_ingest(config).await.expect("ingest starts");
    let (code, body) = get(&ingest, "/ready").await;
    assert_eq!(code, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("json");
    let names: Vec<&str> =
        ready["checks"].as_array().expect("checks").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["kafka", "tasks", "flood_filter", "spool"], "no redis check without redis.url");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn ingest_answers_503_on_ready_before_it_stops_accepting() {
    let mut config = test_config();
    config.ingest.shutdown_delay_ms = 3_000;
    let ingest = spawn_ingest(config).await.expect("ingest starts");
    assert_eq!(get(&ingest, "/ready").await.0, 200);
    ingest.shutdown.cancel();
    let (code, body) = get(&ingest, "/ready").await;
    assert_eq!(code, 503, "a load balancer sees 503 while the listener still serves: {body}");
    let ready: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["shutting_down"], true);
    assert!(ready["checks"].as_array().expect("checks").iter().all(|c| c["ok"] == true), "only shutdown is wrong");
    assert_eq!(get(&ingest, "/healthcheck").await.0, 200, "still serving during the delay");
    ingest.stop().await.expect("stops after the delay");
}

async fn assert_stops_and_frees_port(service: TestService) {
    let addr = service.addr;
    assert_eq!(get(&service, "/live").await.0, 200);
    service.stop().await.expect("stops within the drain time");
    wait_for(Duration::from_secs(5), "the port to close", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await
    .expect("nothing listens after shutdown");
}

#[tokio::test]
async fn shutdown_stops_both_services_and_frees_their_ports() {
    assert_stops_and_frees_port(spawn_ingest(test_config()).await.expect("ingest starts")).await;
    assert_stops_and_frees_port(spawn_forwarder(test_config()).await.expect("forwarder starts")).await;
}
