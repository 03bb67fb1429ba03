//! The dead-letter topic: events Sentry refused for good (its
//! `forwarder.dead_letter_statuses`) and records that cannot be replayed are
//! written there — the original key, value and headers, plus `cyclops-dlq-*`
//! headers saying why and where from — before their offset is committed.
//! Nothing is dropped silently.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cyclops_common::config::Config;
use cyclops_common::kafka::{self, ClientBuilder, TopicSpec};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::job::Job;

/// Header names added to a dead-lettered record.
pub mod header {
    /// Why: `sentry answered 400`, `malformed: …`.
    pub const REASON: &str = "cyclops-dlq-reason";
    /// Sentry's HTTP status, when it answered.
    pub const STATUS: &str = "cyclops-dlq-status";
    /// Where the record came from: topic, partition, offset.
    pub const SOURCE_TOPIC: &str = "cyclops-dlq-source-topic";
    pub const SOURCE_PARTITION: &str = "cyclops-dlq-source-partition";
    pub const SOURCE_OFFSET: &str = "cyclops-dlq-source-offset";
    /// When it was dead-lettered, Unix milliseconds.
    pub const AT_MS: &str = "cyclops-dlq-at-ms";
}

/// Longest wait for the dead-letter topic to take a record.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a record could not be dead-lettered (the caller retries).
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("kafka did not take the dead letter: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka acknowledged the dead letter without an offset")]
    Unconfirmed,
}

/// Writes records to the dead-letter topic.
pub struct DeadLetter {
    producer: FutureProducer<kafka::Context>,
    admin: AdminClient<kafka::Context>,
    topic: String,
    /// How the topic is created; its `max.message.bytes` fits any record.
    spec: TopicSpec,
    created: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl DeadLetter {
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let producer = ClientBuilder::new(&config.kafka, "cyclops-forwarder-deadletter")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.max.bytes", config.max_record_bytes().to_string())
            .create()?;
        let admin = ClientBuilder::new(&config.kafka, "cyclops-forwarder-admin").create()?;
        Ok(Self {
            producer,
            admin,
            topic: config.deadletter_topic(),
            spec: TopicSpec::new(&config.kafka, config.max_record_bytes()),
            created: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn ensure_topic(&self) -> Result<(), KafkaError> {
        if self.created.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        // As large as a project topic's records: the broker's 1 MiB default
        // would refuse the very records Sentry answers 413 to, forever.
        let topic = self.spec.new_topic(&self.topic);
        let options = AdminOptions::new().operation_timeout(Some(SEND_TIMEOUT));
        for result in self.admin.create_topics(&[topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        self.created.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Creates the topic now, so that readers can subscribe before the
    /// first record; a failure is only logged (it is tried again on use).
    pub async fn prepare(&self) {
        if let Err(e) = self.ensure_topic().await {
            tracing::warn!(topic = %self.topic, error = %e, "cannot create the dead-letter topic yet");
        }
    }

    /// Writes `job`'s record with why it is here; returns once Kafka has it
    /// and said where ([`kafka::written`]: the caller's retry sends it again).
    pub async fn send(&self, job: &Job, reason: &str, status: Option<u16>) -> Result<(), DeadLetterError> {
        self.ensure_topic().await?;
        let mut headers = OwnedHeaders::new();
        if let Some(original) = &job.headers {
            for h in original.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let partition = job.partition.to_string();
        let offset = job.offset.to_string();
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()).to_string();
        let status = status.map(|s| s.to_string());
        let mut added = vec![
            (header::REASON, reason),
            (header::SOURCE_TOPIC, &*job.topic),
            (header::SOURCE_PARTITION, partition.as_str()),
            (header::SOURCE_OFFSET, offset.as_str()),
            (header::AT_MS, at.as_str()),
        ];
        if let Some(status) = &status {
            added.push((header::STATUS, status.as_str()));
        }
        for (key, value) in added {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        let mut record = FutureRecord::to(&self.topic).headers(headers).payload(job.payload.as_ref());
        if let Some(key) = &job.key {
            record = record.key(key.as_slice());
        }
        match self.producer.send(record, SEND_TIMEOUT).await {
            Ok(delivery) if kafka::written(&delivery) => Ok(()),
            Ok(_) => Err(DeadLetterError::Unconfirmed),
            Err((e, _)) => Err(DeadLetterError::Kafka(e)),
        }
    }
}
