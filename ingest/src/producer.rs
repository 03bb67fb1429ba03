//! Durable produce: one topic per project, created on first use through the
//! admin API, and an event counts as stored only once Kafka acknowledged it
//! (`acks=all`, idempotent producer).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use cyclops_common::config::Config;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// Why an event could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
    #[error("kafka did not acknowledge the event: {0}")]
    Send(KafkaError),
    #[error("kafka did not acknowledge the event within {0:?}")]
    Timeout(Duration),
}

/// Produces events to their project's topic.
pub struct EventProducer {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist; a topic is created at most once per process.
    known_topics: Mutex<HashSet<String>>,
    partitions: i32,
    replication: i32,
    timeout: Duration,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl EventProducer {
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let timeout = Duration::from_millis(config.ingest.produce_timeout_ms);
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("client.id", "cyclops-ingest")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // Past this, the delivery fails and the SDK gets a 503.
            .set("message.timeout.ms", config.ingest.produce_timeout_ms.to_string())
            .set("linger.ms", "5")
            .create()?;
        let admin = ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create()?;
        Ok(Self {
            producer,
            admin,
            known_topics: Mutex::new(HashSet::new()),
            partitions: config.kafka.topic_partitions,
            replication: config.kafka.topic_replication_factor,
            timeout,
        })
    }

    fn is_known(&self, topic: &str) -> bool {
        self.known_topics.lock().map(|t| t.contains(topic)).unwrap_or(false)
    }

    async fn ensure_topic(&self, topic: &str, budget: Duration) -> Result<(), ProduceError> {
        if self.is_known(topic) {
            return Ok(());
        }
        let new = NewTopic::new(topic, self.partitions, TopicReplication::Fixed(self.replication));
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
            known.insert(topic.to_owned());
        }
        Ok(())
    }

    /// Stores one event; returns once Kafka acknowledged it, or fails within
    /// `ingest.produce_timeout_ms` all told (topic creation included).
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), ProduceError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let stored = async {
            self.ensure_topic(topic, self.timeout).await?;
            let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.producer.send(record, left).await.map(|_| ()).map_err(|(e, _)| ProduceError::Send(e))
        };
        // librdkafka also enforces message.timeout.ms; this bounds the whole.
        tokio::time::timeout_at(deadline, stored).await.unwrap_or(Err(ProduceError::Timeout(self.timeout)))
    }

    /// Waits (bounded) for queued events to be delivered, at shutdown.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "events still queued at shutdown");
        }
    }
}
