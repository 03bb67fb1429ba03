//! Real Sentry SDKs send to ingest: Python's sentry-sdk 1.x (store endpoint,
//! gzip), 2.x (envelopes) and the Rust `sentry` crate (envelopes). Each
//! event lands in its project's topic under the event id the SDK reported.

use cyclops_common::ids::ProjectId;
use std::time::Duration;

use cyclops_common::config::ProjectKey;
use cyclops_common::record::topic_name;
use cyclops_tests::kafka::{Stored, read_records};
use cyclops_tests::sdk::{python_sends, rust_sends};
use cyclops_tests::{spawn_ingest, test_config};

const KEY: &str = "5d55d55d55d55d55d55d55d55d55d501";
const PROJECT: u64 = 1234;

async fn stored_event(topic: &str, event_id: &str) -> Stored {
    let records = read_records(topic, 1, Duration::from_secs(30)).await;
    let record = records.into_iter().next().expect("the event reached Kafka");
    assert_eq!(record.headers.event_id, event_id, "stored under the id the SDK reported");
    assert_eq!(record.key, event_id.as_bytes());
    record
}

async fn python_sdk_sends(major: u8) -> Stored {
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let dsn = format!("http://{KEY}@{}/{PROJECT}", ingest.addr);
    let sent = python_sends(major, &dsn, "raised in python").await.expect("the SDK sends");
    assert!(sent.stderr.trim_start().starts_with(&format!("{major}.")), "sentry-sdk {major}.x ran: {}", sent.stderr);
    let record = stored_event(&topic, &sent.event_id).await;
    cyclops_tests::fuzz_seeds::save(&format!("python-sentry-sdk-{major}"), &record);
    ingest.stop().await.expect("stops");
    record
}

#[tokio::test]
async fn python_sentry_sdk_1_sends_to_the_store_endpoint() {
    let record = python_sdk_sends(1).await;
    assert_eq!(record.headers.path, format!("/api/{PROJECT}/store/"));
    assert!(
        record.headers.auth.as_deref().is_some_and(|a| a.contains(KEY)),
        "auth forwarded: {:?}",
        record.headers.auth
    );
}

#[tokio::test]
async fn python_sentry_sdk_2_sends_envelopes() {
    let record = python_sdk_sends(2).await;
    assert_eq!(record.headers.path, format!("/api/{PROJECT}/envelope/"));
}

#[tokio::test]
async fn the_rust_sentry_crate_sends_envelopes() {
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let dsn = format!("http://{KEY}@{}/{PROJECT}", ingest.addr);
    let sent = rust_sends(&dsn, "sent by the sentry crate").await.expect("the SDK sends");
    let record = stored_event(&topic, &sent.event_id).await;
    cyclops_tests::fuzz_seeds::save("rust-sentry", &record);
    assert_eq!(record.headers.path, format!("/api/{PROJECT}/envelope/"));
    ingest.stop().await.expect("stops");
}
