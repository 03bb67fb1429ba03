//! Durable produce: one topic per project, created on first use through the
//! admin API (never by the broker's auto-create), and an event counts as
//! stored only once Kafka acknowledged it (`acks=all`, idempotent producer),
//! unless `ingest.ack = "enqueue"` trades that for latency.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyclops_common::config::{AckMode, Config};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

use crate::stats::Stats;

/// Most topics remembered as existing.
const MAX_KNOWN_TOPICS: usize = 100_000;
/// Least bound on the producer's queue; it is raised to hold two of the
/// largest records. A full queue makes ingest answer 503.
const QUEUE_MIN_KBYTES: usize = 64 * 1024;

/// Why an event could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
    #[error("kafka did not take the event: {0}")]
    Send(KafkaError),
    #[error("kafka did not acknowledge the event within {0:?}")]
    Timeout(Duration),
}

/// Produces events to their project's topic.
pub struct EventProducer {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist; shared with the tasks that wait for `enqueue`
    /// deliveries, which forget a topic whose delivery failed.
    known_topics: Arc<Mutex<HashSet<String>>>,
    partitions: i32,
    replication: i32,
    max_message_bytes: usize,
    timeout: Duration,
    ack: AckMode,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").field("timeout", &self.timeout).field("ack", &self.ack).finish_non_exhaustive()
    }
}

impl EventProducer {
    pub fn new(config: &Config, stats: Arc<Stats>) -> Result<Self, KafkaError> {
        let timeout = Duration::from_millis(config.ingest.produce_timeout_ms);
        let max_message_bytes = config.max_record_bytes();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("client.id", "cyclops-ingest")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // Past this, the delivery fails and the SDK gets a 503.
            .set("message.timeout.ms", config.ingest.produce_timeout_ms.to_string())
            .set("message.max.bytes", max_message_bytes.to_string())
            .set("queue.buffering.max.kbytes", QUEUE_MIN_KBYTES.max(2 * max_message_bytes / 1024).to_string())
            .set("linger.ms", "1")
            // Every SDK waits on this socket: Nagle's algorithm would hold a
            // small produce request back until the broker acknowledges the previous one.
            .set("socket.nagle.disable", "true")
            .create()?;
        let admin = ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create()?;
        Ok(Self {
            producer,
            admin,
            known_topics: Arc::new(Mutex::new(HashSet::new())),
            partitions: config.kafka.topic_partitions,
            replication: config.kafka.topic_replication_factor,
            max_message_bytes,
            timeout,
            ack: config.ingest.ack,
            stats,
        })
    }

    /// A delivery to `topic` failed because Kafka does not know the topic
    /// (an operator deleted it, and the broker does not create topics): the
    /// next event creates it again. Other failures (timeouts, an outage)
    /// keep it known, so that a struggling cluster is not sent a
    /// CreateTopics per request.
    fn forget_if_gone(known: &Mutex<HashSet<String>>, topic: &str, error: &KafkaError) {
        use rdkafka::types::RDKafkaErrorCode::{UnknownTopic, UnknownTopicOrPartition};
        if matches!(error.rdkafka_error_code(), Some(UnknownTopic | UnknownTopicOrPartition))
            && let Ok(mut known) = known.lock()
        {
            known.remove(topic);
        }
    }

    /// How long to wait at exit for queued events, given what is `left` of
    /// the drain: with `ack = "enqueue"` they were answered 200 already, so
    /// they get at least a whole produce timeout.
    pub fn exit_flush_time(&self, left: Duration, floor: Duration) -> Duration {
        match self.ack {
            AckMode::Enqueue => left.max(floor).max(self.timeout),
            AckMode::Acknowledged => left.max(floor),
        }
    }

    fn is_known(&self, topic: &str) -> bool {
        self.known_topics.lock().map(|t| t.contains(topic)).unwrap_or(false)
    }

    async fn ensure_topic(&self, topic: &str, budget: Duration) -> Result<(), ProduceError> {
        if self.is_known(topic) {
            return Ok(());
        }
        let max_message = self.max_message_bytes.to_string();
        let new = NewTopic::new(topic, self.partitions, TopicReplication::Fixed(self.replication))
            .set("max.message.bytes", &max_message);
        let options = AdminOptions::new().operation_timeout(Some(budget)).request_timeout(Some(budget));
        let error = |message: String| ProduceError::CreateTopic { topic: topic.to_owned(), message };
        let results = self.admin.create_topics(&[new], &options).await.map_err(|e| error(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) => {
                    metrics::counter!(crate::metrics::TOPICS_CREATED).increment(1);
                    tracing::info!(topic, partitions = self.partitions, "created project topic");
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(error(code.to_string())),
            }
        }
        if let Ok(mut known) = self.known_topics.lock() {
            // Bounded: with restrict_api_access = false any client can name a
            // project; forgetting only costs a CreateTopics that answers "exists".
            if known.len() >= MAX_KNOWN_TOPICS {
                known.clear();
            }
            known.insert(topic.to_owned());
        }
        Ok(())
    }

    /// Stores one event. With `ack = acknowledged` it returns once Kafka
    /// acknowledged it, or fails within `ingest.produce_timeout_ms` all told
    /// (topic creation included); with `enqueue`, once it is queued.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), ProduceError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let in_flight = self.stats.in_flight();
        self.ensure_topic(topic, self.timeout).await?;
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        match self.ack {
            AckMode::Acknowledged => {
                let left = deadline.saturating_duration_since(Instant::now());
                let delivered = self.producer.send(record, left);
                // librdkafka also enforces message.timeout.ms; this bounds the whole.
                match tokio::time::timeout_at(deadline, delivered).await {
                    Ok(Ok(_)) => {
                        self.stats.acknowledged_after(started.elapsed());
                        Ok(())
                    }
                    Ok(Err((e, _))) => {
                        Self::forget_if_gone(&self.known_topics, topic, &e);
                        Err(ProduceError::Send(e))
                    }
                    Err(_) => Err(ProduceError::Timeout(self.timeout)),
                }
            }
            AckMode::Enqueue => {
                let delivery = self.producer.send_result(record).map_err(|(e, _)| ProduceError::Send(e))?;
                let stats = self.stats.clone();
                let known = self.known_topics.clone();
                let topic = topic.to_owned();
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    match delivery.await {
                        Ok(Ok(_)) => stats.acknowledged_after(started.elapsed()),
                        Ok(Err((e, _))) => {
                            Self::forget_if_gone(&known, &topic, &e);
                            metrics::counter!(crate::metrics::LOST_AFTER_ENQUEUE).increment(1);
                            tracing::error!(topic, error = %e, "an event answered 200 (ack = enqueue) was not stored");
                        }
                        Err(_) => {
                            metrics::counter!(crate::metrics::LOST_AFTER_ENQUEUE).increment(1);
                            tracing::error!(topic, "producer dropped an event answered 200 (ack = enqueue)");
                        }
                    }
                });
                Ok(())
            }
        }
    }

    /// Waits (bounded) for queued events to be delivered, at shutdown.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "events still queued at shutdown");
        }
    }
}
