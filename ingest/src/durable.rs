//! Where an accepted event is kept before the SDK gets its 200: in Kafka
//! when Kafka takes it, else in the local spool; a 503 only when neither can
//! take it (the spool is off, full, or its disk fails).
//!
//! [`KafkaState`] remembers that Kafka failed as a whole (timeouts, no
//! broker, no leader, too few replicas — not one refused record): while it is down and the
//! spool holds records, new events go straight to the spool instead of each
//! waiting out `ingest.produce_timeout_ms`; the drainer's first delivery (or
//! any event that reaches Kafka) marks it up again. With an empty spool
//! every event tries Kafka first, so a spool that cannot be written never
//! keeps events from a Kafka that is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cyclops_common::config::AckMode;
use cyclops_common::record::RecordHeaders;
use rdkafka::message::{Message, OwnedMessage};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::producer::{EventProducer, ProduceError};
use crate::spool::{Spool, SpoolError, SpoolRecord, header_pairs, now_ms};
use crate::stats::Stats;

/// Longest wait at exit for records handed back by the producer to be spooled.
const SPOOL_AT_EXIT: Duration = Duration::from_secs(5);

/// Where a stored event is, as `X-CYCLOPS-DURABILITY` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Kafka acknowledged it.
    Kafka,
    /// Queued in this process's producer (`ingest.ack = "enqueue"`).
    Queued,
    /// Fsynced in this instance's spool.
    Spool,
}

impl Durability {
    pub fn header(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Queued => "queued",
            Self::Spool => "spool",
        }
    }
}

/// Why an event could not be stored anywhere.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error("kafka did not take the event and the spool is off: {0}")]
    Kafka(#[source] ProduceError),
    #[error("kafka did not take the event: {kafka}; and the spool could not: {spool}")]
    Spool { kafka: String, spool: SpoolError },
}

/// Whether Kafka is taking records, as the last attempts found.
#[derive(Debug, Default)]
pub struct KafkaState {
    /// Since when Kafka is failing (Unix ms); 0 while it takes records.
    down_since_ms: AtomicU64,
}

impl KafkaState {
    /// Kafka failed; logs the change (once per outage, not per event).
    pub fn down(&self, why: &dyn std::fmt::Display) {
        if self.down_since_ms.compare_exchange(0, now_ms().max(1), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            metrics::gauge!(crate::metrics::KAFKA_DOWN).set(1.0);
            tracing::error!(error = %why, "kafka is not taking events: spooling them until it does");
        }
    }

    /// Kafka took a record.
    pub fn up(&self) {
        // A load first: the common case (up already) writes nothing.
        if self.down_since_ms.load(Ordering::Acquire) != 0 && self.down_since_ms.swap(0, Ordering::AcqRel) != 0 {
            metrics::gauge!(crate::metrics::KAFKA_DOWN).set(0.0);
            tracing::warn!("kafka takes events again");
        }
    }

    /// How long Kafka has been failing, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        match self.down_since_ms.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
}

/// One record to store, borrowed from the request.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub value: &'a [u8],
    pub headers: &'a RecordHeaders,
}

impl Outgoing<'_> {
    /// The record for the spool; its headers are built again, exactly as
    /// they went to Kafka (cheaper than a copy of them on every event).
    fn to_spool(&self) -> SpoolRecord {
        SpoolRecord {
            topic: self.topic.to_owned(),
            key: self.key.as_bytes().to_vec(),
            headers: header_pairs(&self.headers.to_kafka()),
            value: self.value.to_vec(),
        }
    }
}

/// Kafka, the spool, and the choice between them.
#[derive(Debug)]
pub struct Store {
    pub producer: Arc<EventProducer>,
    pub spool: Option<Arc<Spool>>,
    pub kafka: Arc<KafkaState>,
    stats: Arc<Stats>,
    ack: AckMode,
    /// The tasks that wait for `enqueue` deliveries (and spool the failed ones).
    deliveries: TaskTracker,
}

impl Store {
    pub fn new(producer: Arc<EventProducer>, spool: Option<Arc<Spool>>, stats: Arc<Stats>, ack: AckMode) -> Self {
        Self { producer, spool, kafka: Arc::new(KafkaState::default()), stats, ack, deliveries: TaskTracker::new() }
    }

    /// Stores one event: see the module docs for where.
    pub async fn store(&self, out: Outgoing<'_>) -> Result<Durability, StoreFailure> {
        if let Some(spool) = &self.spool
            && self.kafka.down_for().is_some()
            && spool.records() > 0
        {
            return self.spool(spool, out.to_spool(), "kafka is down").await;
        }
        let started = Instant::now();
        let in_flight = self.stats.in_flight();
        let sent = match self.ack {
            AckMode::Acknowledged => {
                let headers = || out.headers.to_kafka();
                self.producer.send_acknowledged(out.topic, out.key.as_bytes(), out.value, headers).await.map(|()| {
                    self.kafka.up();
                    self.stats.acknowledged_after(started.elapsed());
                    Durability::Kafka
                })
            }
            AckMode::Enqueue => {
                let headers = out.headers.to_kafka();
                self.producer.enqueue(out.topic, out.key.as_bytes(), out.value, headers).await.map(|delivery| {
                    self.watch(delivery, in_flight, started);
                    Durability::Queued
                })
            }
        };
        match (sent, &self.spool) {
            (Ok(durability), _) => Ok(durability),
            (Err(e), None) => Err(StoreFailure::Kafka(e)),
            (Err(e), Some(spool)) => {
                if e.kafka_unavailable() {
                    self.kafka.down(&e);
                }
                self.spool(spool, out.to_spool(), &e.to_string()).await
            }
        }
    }

    async fn spool(&self, spool: &Spool, record: SpoolRecord, kafka: &str) -> Result<Durability, StoreFailure> {
        match spool.append(record).await {
            Ok(()) => Ok(Durability::Spool),
            Err(spool) => Err(StoreFailure::Spool { kafka: kafka.to_owned(), spool }),
        }
    }

    /// Waits for an enqueued record's delivery; spools it when Kafka does
    /// not take it (it was answered 200 already).
    fn watch(&self, delivery: rdkafka::producer::DeliveryFuture, in_flight: crate::stats::InFlight, started: Instant) {
        let (stats, producer, spool, kafka) =
            (self.stats.clone(), self.producer.clone(), self.spool.clone(), self.kafka.clone());
        self.deliveries.spawn(async move {
            let _in_flight = in_flight;
            let (error, message) = match delivery.await {
                Ok(Ok(delivery)) if cyclops_common::kafka::written(&delivery) => {
                    kafka.up();
                    stats.acknowledged_after(started.elapsed());
                    return;
                }
                Ok(Ok(delivery)) => {
                    // The record is not kept once queued: it cannot be sent again.
                    metrics::counter!(crate::metrics::UNCONFIRMED).increment(1);
                    metrics::counter!(crate::metrics::LOST_AFTER_ENQUEUE).increment(1);
                    tracing::error!(
                        partition = delivery.partition,
                        "kafka did not confirm an event answered 200 (ack = enqueue); it may be lost"
                    );
                    return;
                }
                Ok(Err((e, message))) => (e, message),
                Err(_) => {
                    metrics::counter!(crate::metrics::LOST_AFTER_ENQUEUE).increment(1);
                    tracing::error!("producer dropped an event answered 200 (ack = enqueue)");
                    return;
                }
            };
            producer.delivery_failed(message.topic(), &error);
            let Some(spool) = spool else {
                metrics::counter!(crate::metrics::LOST_AFTER_ENQUEUE).increment(1);
                tracing::error!(topic = message.topic(), error = %error, "an event answered 200 (ack = enqueue) was not stored");
                return;
            };
            if crate::producer::says_kafka_unavailable(&error) {
                kafka.down(&error);
            }
            if let Err(e) = spool.append(record_of(&message)).await {
                metrics::counter!(crate::metrics::LOST_AFTER_ENQUEUE).increment(1);
                tracing::error!(topic = message.topic(), kafka = %error, spool = %e, "an event answered 200 (ack = enqueue) was neither in kafka nor spooled");
            }
        });
    }

    /// At exit: gives queued records `flush_for` to reach Kafka; with the
    /// spool on, hands the rest back and spools them (bounded).
    pub async fn finish(&self, flush_for: Duration) {
        let producer = self.producer.clone();
        let spooling = self.spool.is_some();
        tokio::task::spawn_blocking(move || {
            producer.flush(flush_for);
            if spooling {
                producer.purge();
            }
        })
        .await
        .ok();
        self.deliveries.close();
        if tokio::time::timeout(SPOOL_AT_EXIT, self.deliveries.wait()).await.is_err() {
            tracing::error!("records handed back by the producer were still being spooled at exit");
        }
    }
}

fn record_of(message: &OwnedMessage) -> SpoolRecord {
    SpoolRecord {
        topic: message.topic().to_owned(),
        key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
        headers: message.headers().map(header_pairs).unwrap_or_default(),
        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}
