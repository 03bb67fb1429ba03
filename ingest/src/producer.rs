//! Producing to Kafka: one topic per project, created on first use through
//! the admin API (never by the broker's auto-create); records sent with
//! `acks=all` by an idempotent producer, and sent again when the producer
//! reports one written that Kafka never confirmed ([`kafka::written`]). What to do
//! when Kafka does not take a record is [`crate::durable`]'s business.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use cyclops_common::config::{AckMode, Config};
use cyclops_common::kafka::{self, ClientBuilder, TopicSpec};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

/// Most topics remembered as existing.
const MAX_KNOWN_TOPICS: usize = 100_000;
/// Least bound on the producer's queue; it is raised to hold two of the
/// largest records. A full queue makes ingest answer 503.
const QUEUE_MIN_KBYTES: usize = 64 * 1024;

/// Most sends of one record whose acknowledgements Kafka did not confirm (see [`kafka::written`]).
const SENDS_PER_RECORD: u32 = 3;

/// Why an event could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create topic {topic}: {message}")]
    CreateTopic {
        topic: String,
        message: String,
        /// The request itself failed (no answer), rather than the broker refusing this topic.
        unanswered: bool,
    },
    #[error("kafka did not take the event: {0}")]
    Send(KafkaError),
    #[error("kafka did not acknowledge the event within {0:?}")]
    Timeout(Duration),
    #[error("kafka did not confirm the event in {0} sends (acknowledged without an offset each time)")]
    Unconfirmed(u32),
}

impl ProduceError {
    /// Whether this says Kafka as a whole is not taking records (down,
    /// hung, no leader, too few replicas, a full queue), rather than that
    /// this one record or topic is refused: only the former sends the next
    /// events straight to the spool.
    pub fn kafka_unavailable(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Unconfirmed(_) => false,
            Self::CreateTopic { unanswered, .. } => *unanswered,
            Self::Send(e) => says_kafka_unavailable(e),
        }
    }
}

/// Counts and logs a delivery [`kafka::written`] does not confirm.
pub fn unconfirmed(topic: &str, delivery: &Delivery, then: &str) {
    metrics::counter!(crate::metrics::UNCONFIRMED).increment(1);
    tracing::debug!(topic, partition = delivery.partition, then, "kafka acknowledged an event without an offset");
}

/// Whether a failed delivery says Kafka as a whole is not taking records
/// (see [`ProduceError::kafka_unavailable`]).
pub fn says_kafka_unavailable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::MessageTimedOut
                | C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::QueueFull
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::RequestTimedOut
                | C::NetworkException
                | C::KafkaStorageError
        )
    )
}

/// Produces events to their project's topic.
pub struct EventProducer {
    producer: FutureProducer<kafka::Context>,
    admin: AdminClient<kafka::Context>,
    /// Topics known to exist; a topic whose delivery failed as unknown is
    /// forgotten ([`Self::delivery_failed`]).
    known_topics: Mutex<HashSet<String>>,
    topics: TopicSpec,
    timeout: Duration,
    ack: AckMode,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").field("timeout", &self.timeout).field("ack", &self.ack).finish_non_exhaustive()
    }
}

impl EventProducer {
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let timeout = Duration::from_millis(config.ingest.produce_timeout_ms);
        let max_message_bytes = config.max_record_bytes();
        let producer = ClientBuilder::new(&config.kafka, "cyclops-ingest")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // Past this, the delivery fails: the event goes to the spool (or the SDK gets a 503).
            .set("message.timeout.ms", config.ingest.produce_timeout_ms.to_string())
            .set("message.max.bytes", max_message_bytes.to_string())
            // A topic missing from the metadata fails its records after this
            // (30 s by default), which is how a topic deleted under a running
            // ingest is noticed and created again: well within a produce
            // timeout, so that one record waiting for it sees it happen.
            .set("topic.metadata.propagation.max.ms", (config.ingest.produce_timeout_ms / 2).max(100).to_string())
            .set("queue.buffering.max.kbytes", QUEUE_MIN_KBYTES.max(2 * max_message_bytes / 1024).to_string())
            .set("linger.ms", "1")
            // Every SDK waits on this socket: Nagle's algorithm would hold a
            // small produce request back until the broker acknowledges the previous one.
            .set("socket.nagle.disable", "true")
            .create()?;
        let admin = ClientBuilder::new(&config.kafka, "cyclops-ingest-admin").create()?;
        Ok(Self {
            producer,
            admin,
            known_topics: Mutex::new(HashSet::new()),
            topics: TopicSpec::new(&config.kafka, max_message_bytes),
            timeout,
            ack: config.ingest.ack,
        })
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
        let new = self.topics.new_topic(topic);
        let options = AdminOptions::new().operation_timeout(Some(budget)).request_timeout(Some(budget));
        let error = |message: String, unanswered: bool| ProduceError::CreateTopic {
            topic: topic.to_owned(),
            message,
            unanswered,
        };
        let results = self.admin.create_topics(&[new], &options).await.map_err(|e| error(e.to_string(), true))?;
        for result in results {
            match result {
                Ok(_) => {
                    metrics::counter!(crate::metrics::TOPICS_CREATED).increment(1);
                    tracing::info!(topic, partitions = self.topics.partitions, "created project topic");
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(error(code.to_string(), code == RDKafkaErrorCode::RequestTimedOut)),
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

    /// Sends one record and returns once Kafka acknowledged it (`acks=all`)
    /// and said where it wrote it, or fails within `ingest.produce_timeout_ms`
    /// all told (topic creation included). `headers` builds the record's
    /// headers for each send: a send again is rare, a copy of every record's
    /// headers for it would not be.
    pub async fn send_acknowledged(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: impl Fn() -> OwnedHeaders,
    ) -> Result<(), ProduceError> {
        let deadline = Instant::now() + self.timeout;
        self.ensure_topic(topic, self.timeout).await?;
        for send in 1..=SENDS_PER_RECORD {
            let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers());
            let left = deadline.saturating_duration_since(Instant::now());
            let delivered = self.producer.send(record, left);
            // librdkafka also enforces message.timeout.ms; this bounds the whole.
            match tokio::time::timeout_at(deadline, delivered).await {
                Ok(Ok(delivery)) if kafka::written(&delivery) => return Ok(()),
                Ok(Ok(delivery)) => {
                    let then = if send < SENDS_PER_RECORD { "sending it again" } else { "giving up on kafka for it" };
                    unconfirmed(topic, &delivery, then);
                }
                Ok(Err((e, _))) => {
                    self.delivery_failed(topic, &e);
                    return Err(ProduceError::Send(e));
                }
                Err(_) => return Err(ProduceError::Timeout(self.timeout)),
            }
        }
        Err(ProduceError::Unconfirmed(SENDS_PER_RECORD))
    }

    /// Queues one record (`ack = "enqueue"`); the returned future says
    /// whether Kafka took it, and gives the record back when it did not.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<rdkafka::producer::DeliveryFuture, ProduceError> {
        self.ensure_topic(topic, self.timeout).await?;
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        self.producer.send_result(record).map_err(|(e, _)| ProduceError::Send(e))
    }

    /// Learns from a failed delivery to `topic`: when Kafka does not know
    /// the topic (an operator deleted it, and the broker does not create
    /// topics), the next event creates it again. Other failures (timeouts,
    /// an outage) keep it known, so that a struggling cluster is not sent a
    /// CreateTopics per request.
    pub fn delivery_failed(&self, topic: &str, error: &KafkaError) {
        use rdkafka::types::RDKafkaErrorCode::{UnknownTopic, UnknownTopicOrPartition};
        if matches!(error.rdkafka_error_code(), Some(UnknownTopic | UnknownTopicOrPartition))
            && let Ok(mut known) = self.known_topics.lock()
        {
            known.remove(topic);
        }
    }

    /// Fails every record still queued or in flight, so that its delivery
    /// future hands it back (to be spooled) instead of it dying with the
    /// process. Blocking.
    pub fn purge(&self) {
        use rdkafka::producer::{Producer, PurgeConfig};
        self.producer.purge(PurgeConfig::default().queue().inflight());
    }

    /// Waits (bounded) for queued events to be delivered, at shutdown. Blocking.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "events still queued at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cluster_wide_failures_say_kafka_is_unavailable() {
        let send = |code| ProduceError::Send(KafkaError::MessageProduction(code));
        assert!(ProduceError::Timeout(Duration::from_secs(1)).kafka_unavailable());
        assert!(send(RDKafkaErrorCode::MessageTimedOut).kafka_unavailable());
        assert!(send(RDKafkaErrorCode::NotEnoughReplicas).kafka_unavailable());
        assert!(send(RDKafkaErrorCode::QueueFull).kafka_unavailable());
        assert!(!send(RDKafkaErrorCode::MessageSizeTooLarge).kafka_unavailable(), "one record refused");
        assert!(!send(RDKafkaErrorCode::UnknownTopicOrPartition).kafka_unavailable(), "one topic gone");
        let create = |unanswered| ProduceError::CreateTopic { topic: "t".into(), message: "m".into(), unanswered };
        assert!(create(true).kafka_unavailable());
        assert!(!create(false).kafka_unavailable(), "the broker refused this topic");
    }
}
