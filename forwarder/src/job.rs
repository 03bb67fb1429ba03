//! One event read from Kafka on its way to Sentry: what the engine buffers
//! and schedules, the upstream sends, and the dead-letter writer keeps.

use std::sync::Arc;

use bytes::Bytes;
use cyclops_common::record::RecordHeaders;
use rdkafka::message::OwnedHeaders;

use crate::pacing::backoff::Backoff;

/// A partition: topic and partition number.
pub type Tp = (Arc<str>, i32);

/// One event read from Kafka, waiting for or on its way to Sentry.
#[derive(Debug)]
pub struct Job {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub project: u64,
    /// Kafka's timestamp of the record, Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Bytes,
    /// The record's headers as stored, kept for the dead-letter topic.
    pub headers: Option<OwnedHeaders>,
    /// The headers read, or why they cannot be.
    pub record: Result<RecordHeaders, String>,
    pub generation: u64,
    /// The retry schedule, once a delivery failed.
    pub backoff: Option<Backoff>,
}

impl Job {
    pub fn tp(&self) -> Tp {
        (self.topic.clone(), self.partition)
    }
}
