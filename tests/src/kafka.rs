//! Reading what ingest stored, straight from Kafka.

use std::time::Duration;

use cyclops_common::record::RecordHeaders;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

use crate::{kafka_brokers, unique};

/// One stored record.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: RecordHeaders,
}

/// Reads records from `topic` (from its start) until `n` arrived or
/// `deadline` passed; returns what it got.
pub async fn read_records(topic: &str, n: usize, deadline: Duration) -> Vec<Stored> {
    let Ok(consumer) = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create::<StreamConsumer>()
    else {
        return Vec::new();
    };
    if consumer.subscribe(&[topic]).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    while out.len() < n {
        let Ok(Ok(message)) = tokio::time::timeout_at(end, consumer.recv()).await else { break };
        let Ok(headers) = RecordHeaders::from_kafka(message.headers()) else { continue };
        out.push(Stored {
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// Checks that `topic` stays without a record for `quiet`.
pub async fn stays_empty(topic: &str, quiet: Duration) -> bool {
    read_records(topic, 1, quiet).await.is_empty()
}
