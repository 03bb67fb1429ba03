//! Real Sentry SDKs send to ingest: Python's sentry-sdk 1.x (store endpoint,
//! gzip), 2.x (envelopes) and the Rust `sentry` crate (envelopes). Each
//! event lands in its project's topic under the event id the SDK reported.

use std::path::PathBuf;
use std::time::Duration;

use cyclops_common::config::ProjectKey;
use cyclops_common::record::topic_name;
use cyclops_tests::kafka::{Stored, read_records};
use cyclops_tests::{spawn_ingest, test_config};

const KEY: &str = "5d55d55d55d55d55d55d55d55d55d501";
const PROJECT: u64 = 1234;

/// The interpreter of the venv `stack/sdks.sh` made for sentry-sdk `major`.
fn venv_python(major: u8) -> PathBuf {
    let stack = std::env::var("CYCLOPS_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack"));
    stack.join(format!("venvs/sentry-sdk-{major}/bin/python"))
}

async fn stored_event(topic: &str, event_id: &str) -> Stored {
    let records = read_records(topic, 1, Duration::from_secs(30)).await;
    let record = records.into_iter().next().expect("the event reached Kafka");
    assert_eq!(record.headers.event_id, event_id, "stored under the id the SDK reported");
    assert_eq!(record.key, event_id.as_bytes());
    record
}

async fn python_sdk_sends(major: u8) -> Stored {
    let python = venv_python(major);
    assert!(python.exists(), "{} missing: run `bash stack/sdks.sh` (make test does)", python.display());
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    let topic = topic_name(&config.kafka.topic_prefix, PROJECT);
    let ingest = spawn_ingest(config).await.expect("ingest");
    let dsn = format!("http://{KEY}@{}/{PROJECT}", ingest.addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/send_python.py");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python).args([script, &dsn, "raised in python"]).kill_on_drop(true).output(),
    )
    .await
    .expect("the SDK finishes within 60 s")
    .expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim_start().starts_with(&format!("{major}.")), "sentry-sdk {major}.x ran: {stderr}");
    let event_id = String::from_utf8_lossy(&output.stdout).trim().replace('-', "");
    let record = stored_event(&topic, &event_id).await;
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
    let topic = topic_name(&config.kafka.topic_prefix, PROJECT);
    let ingest = spawn_ingest(config).await.expect("ingest");
    let dsn = format!("http://{KEY}@{}/{PROJECT}", ingest.addr);
    // The SDK's transport blocks while it flushes: keep it off the runtime.
    let event_id = tokio::task::spawn_blocking(move || {
        let mut options = sentry::ClientOptions::default();
        options.transport = Some(std::sync::Arc::new(sentry::transports::DefaultTransportFactory));
        let client = sentry::Client::from_config((dsn.as_str(), options));
        let hub = sentry::Hub::new(Some(std::sync::Arc::new(client)), std::sync::Arc::new(sentry::Scope::default()));
        let id = hub.capture_message("sent by the sentry crate", sentry::Level::Error);
        let flushed = hub.client().is_some_and(|c| c.flush(Some(Duration::from_secs(10))));
        (id, flushed)
    })
    .await
    .expect("sdk thread");
    assert!(event_id.1, "the SDK flushed its queue");
    let record = stored_event(&topic, &event_id.0.simple().to_string()).await;
    assert_eq!(record.headers.path, format!("/api/{PROJECT}/envelope/"));
    ingest.stop().await.expect("stops");
}
