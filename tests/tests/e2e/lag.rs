//! Watching consumer lag: Kafka's own `kafka-consumer-groups --describe`
//! (run from the jars the stack fetched), the forwarder's `/count` and its
//! Prometheus gauges agree; and the Grafana dashboard in `compose/` only
//! charts metrics the services define.

use cyclops_common::ids::ProjectId;
use std::time::Duration;

use cyclops_common::config::Config;
use cyclops_common::record::topic_name;
use cyclops_tests::fake_sentry::{FakeSentry, Rule};
use cyclops_tests::kafka::{produce_backlog, produce_backlog_range};
use cyclops_tests::process::ForwarderProcess;
use cyclops_tests::{test_config, wait_for};
use serde_json::Value;

const KEY: &str = "1a91a91a91a91a91a91a91a91a91a901";
const PROJECT: u64 = 61;

/// The LAG column of `kafka-consumer-groups --describe` summed over `topic`'s rows.
async fn consumer_groups_lag(config: &Config, topic: &str) -> Option<u64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../stack/kafka-consumer-groups.sh");
    let output = tokio::process::Command::new("bash")
        .args([
            script,
            "--bootstrap-server",
            &config.kafka.brokers,
            "--describe",
            "--group",
            &config.forwarder.group_id,
        ])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
    let lags: Vec<u64> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.get(1) == Some(&topic))
        .filter_map(|cols| cols.get(5)?.parse().ok())
        .collect();
    (!lags.is_empty()).then(|| lags.iter().sum())
}

/// `cyclops_forwarder_lag_events` summed over `topic`'s partitions.
async fn metrics_lag(forwarder: &ForwarderProcess, topic: &str) -> Option<u64> {
    let text = reqwest::get(forwarder.url("/metrics")).await.ok()?.text().await.ok()?;
    let needle = format!("topic=\"{topic}\"");
    let lags: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("cyclops_forwarder_lag_events{") && l.contains(&needle))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!lags.is_empty()).then(|| lags.iter().sum::<f64>() as u64)
}

async fn count_backlog(forwarder: &ForwarderProcess) -> Option<u64> {
    let count: Value = reqwest::get(forwarder.url("/count")).await.ok()?.json().await.ok()?;
    count["count"].as_u64()
}

#[tokio::test]
async fn kafka_consumer_groups_count_and_metrics_agree_on_lag() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let mut config = test_config();
    config.sentry.base_url = sentry.url();
    config.forwarder.commit_interval_ms = 100;
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    produce_backlog(&config.kafka.topic_prefix, PROJECT, KEY, 30, 2).await.expect("backlog");
    let forwarder = ForwarderProcess::start(&config).await.expect("forwarder");
    let all_three = |want: u64| {
        let (config, topic, forwarder) = (&config, &topic, &forwarder);
        async move {
            let seen = (
                count_backlog(forwarder).await?,
                metrics_lag(forwarder, topic).await?,
                consumer_groups_lag(config, topic).await?,
            );
            (seen == (want, want, want)).then_some(seen)
        }
    };
    let drained = wait_for(Duration::from_secs(60), "no lag once all is delivered", || all_three(0)).await;
    assert!(drained.is_ok(), "{drained:?}");

    // Sentry rate-limits the project: new events wait in Kafka, and all three tools see them.
    sentry.rule(Rule::path("/api/", 429).header("retry-after", "120"));
    produce_backlog_range(&config.kafka.topic_prefix, PROJECT, KEY, 30..55, 2, None).await.expect("more");
    let held = wait_for(Duration::from_secs(60), "a lag of 25 everywhere", || all_three(25)).await;
    assert!(held.is_ok(), "count, metrics and kafka-consumer-groups disagree: {held:?}");
    forwarder.kill9().await.expect("stopped");
}

/// Every `cyclops_*` series the dashboard queries is one the services define.
#[test]
fn the_grafana_dashboard_charts_only_defined_metrics() {
    use cyclops_forwarder::metrics as f;
    use cyclops_ingest::metrics as i;
    let defined: Vec<&str> = [i::ALL, f::ALL, cyclops_common::telemetry::names::ALL].concat();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose/grafana/dashboards/cyclops.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    for expr in &exprs {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("cyclops_"))
            .map(|w| w.trim_end_matches("_bucket"));
        for name in names {
            assert!(defined.contains(&name), "{name} in {expr:?} is not a metric the services define");
        }
    }
    for wanted in [i::ACCEPTED, i::IGNORED, f::LAG_EVENTS, f::LAG_SECONDS, f::UPSTREAM_SECONDS, f::CONCURRENCY_LIMIT] {
        assert!(exprs.iter().any(|e| e.contains(wanted)), "the dashboard charts {wanted}");
    }
}
