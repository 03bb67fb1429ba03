//! The *bare consume-and-POST* loop: what any Kafka-to-HTTP service on this
//! machine pays before it does anything of its own — one consumer of the
//! group reading the project's topic with the forwarder's read-ahead, the
//! record headers read (the contract), each body POSTed as stored to the
//! path it names with its encoding and auth, at most
//! `forwarder.concurrency_max` requests at once over one pooled client.
//! Offsets are committed by librdkafka's auto-commit, as soon as a record is
//! read: no per-offset bookkeeping, no scheduler, no pacing, no retries, no
//! `sent_at`, no holds.
//!
//! The forwarder against an instant upstream is read against it: absolute
//! rates differ threefold between machines of one kind, the ratio to this
//! loop much less.

use std::sync::Arc;

use cyclops_common::config::{Overrides, Service};
use cyclops_common::ids::ProjectId;
use cyclops_common::kafka::ClientBuilder;
use cyclops_common::record::{RecordHeaders, topic_name};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::Semaphore;

/// Reads and POSTs the configuration at `conf`'s project topic until killed.
pub async fn serve(conf: &std::path::Path, project: u64) {
    let config = cyclops_common::config::load(Some(conf), Vec::new(), Service::Forwarder, &Overrides::default())
        .expect("the benchmark's configuration loads");
    let consumer: StreamConsumer = ClientBuilder::new(&config.kafka, "cyclops-bench-bare")
        .set("group.id", &config.forwarder.group_id)
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.queue.backoff.ms", "20")
        .create_plain()
        .expect("consumer");
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(project));
    consumer.subscribe(&[&topic]).expect("subscribe");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(config.forwarder.request_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = config.sentry.base_url.trim_end_matches('/').to_owned();
    let slots = Arc::new(Semaphore::new(config.forwarder.concurrency_max as usize));
    // The benchmark waits for the forwarder's own line.
    eprintln!("status endpoints on (bare consume-and-POST)");
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(e) => {
                eprintln!("bare consume-and-POST: {e}");
                continue;
            }
        };
        let Ok(headers) = RecordHeaders::from_kafka(rdkafka::Message::headers(&message)) else { continue };
        let body = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let mut request = client.post(format!("{base}{}", headers.path)).body(body);
        for (name, value) in [
            ("content-type", headers.content_type),
            ("content-encoding", headers.content_encoding),
            ("x-sentry-auth", headers.auth),
        ] {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        tokio::spawn(async move {
            if let Err(e) = request.send().await {
                eprintln!("bare consume-and-POST: {e}");
            }
            drop(permit);
        });
    }
}
