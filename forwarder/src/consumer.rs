//! The delivery loop: consume the project topics as one consumer group,
//! replay each record to Sentry, and mark it done only after Sentry answered
//! for good.
//!
//! Offsets are stored only after an event was delivered (or refused for good,
//! or found unreplayable; each counted and logged), and librdkafka commits
//! stored offsets periodically and at shutdown: at-least-once, so a crash
//! re-sends at most what was not yet committed.
//!
//! This is the plain loop, one event at a time, oldest first. The fair,
//! newest-first, latency-paced scheduler, rate-limit holds, the dead-letter
//! topic and out-of-order commits arrive with issue 4.

use std::time::Duration;

use cyclops_common::config::Config;
use cyclops_common::record::{RecordHeaders, topic_pattern};
use cyclops_common::shutdown::CancellationToken;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};

use crate::metrics as m;
use crate::pacing::backoff::Backoff;
use crate::upstream::{Outcome, Upstream};

/// How often the subscription pattern is re-evaluated, so that a new
/// project's topic is picked up.
const TOPIC_REFRESH: Duration = Duration::from_secs(10);
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A consumer subscribed to every project topic of `config`.
pub fn subscribe(config: &Config) -> Result<StreamConsumer, KafkaError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.forwarder.group_id)
        .set("client.id", "cyclops-forwarder")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand, after delivery; auto-commit only ships them.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("topic.metadata.refresh.interval.ms", TOPIC_REFRESH.as_millis().to_string())
        .create()?;
    consumer.subscribe(&[&topic_pattern(&config.kafka.topic_prefix)])?;
    Ok(consumer)
}

/// Consumes and delivers until `shutdown` is cancelled, then commits what
/// was delivered.
pub async fn run(consumer: StreamConsumer, upstream: Upstream, shutdown: CancellationToken) {
    let consumer = std::sync::Arc::new(consumer);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        match message {
            Ok(message) => {
                if !deliver(&consumer, &upstream, &message, &shutdown).await {
                    break;
                }
            }
            Err(e) => {
                metrics::counter!(m::CONSUMER_ERRORS).increment(1);
                tracing::warn!(error = %e, "kafka consumer error");
            }
        }
    }
    // Ship the stored offsets now rather than at the next auto-commit tick,
    // and leave the group; both block, so not on a runtime thread.
    let closing = tokio::task::spawn_blocking(move || {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final commit failed; delivered events may be sent again"),
        }
        drop(consumer);
    });
    if let Err(e) = closing.await {
        tracing::error!(error = %e, "closing the consumer failed");
    }
}

/// Delivers one record, retrying while Sentry cannot take it. Returns false
/// when shutdown interrupted it (its offset is then not stored: the event
/// will be delivered again).
async fn deliver(
    consumer: &StreamConsumer,
    upstream: &Upstream,
    message: &BorrowedMessage<'_>,
    shutdown: &CancellationToken,
) -> bool {
    let topic = message.topic();
    let (partition, offset) = (message.partition(), message.offset());
    let body = message.payload().unwrap_or_default();
    // Valid by construction: RETRY_INITIAL is positive and below RETRY_MAX.
    let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX).ok();
    let outcome = match RecordHeaders::from_kafka(message.headers()) {
        Err(e) => Outcome::Malformed(e.to_string()),
        Ok(record) => loop {
            // An attempt in flight at shutdown is abandoned: its offset is not
            // stored, so the event is delivered again later (at-least-once).
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return false,
                outcome = upstream.deliver(&record, body) => outcome,
            };
            match attempt {
                Outcome::Retry(reason) => {
                    metrics::counter!(m::RETRIED, "reason" => reason).increment(1);
                    let delay = backoff.as_mut().map_or(RETRY_MAX, |b| b.next_delay(fastrand::f64()));
                    tracing::warn!(
                        topic,
                        partition,
                        offset,
                        reason,
                        delay_ms = delay.as_millis() as u64,
                        "sentry cannot take the event now; retrying"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                done => break done,
            }
        },
    };
    match &outcome {
        Outcome::Delivered => metrics::counter!(m::DELIVERED).increment(1),
        Outcome::Rejected(status) => {
            metrics::counter!(m::REJECTED, "status" => status.to_string()).increment(1);
            tracing::error!(
                topic,
                partition,
                offset,
                status,
                "sentry refused the event for good; it is not sent again"
            );
        }
        Outcome::Malformed(reason) => {
            metrics::counter!(m::MALFORMED).increment(1);
            tracing::error!(topic, partition, offset, reason, "record cannot be replayed to sentry; skipped");
        }
        Outcome::Retry(_) => {}
    }
    if let Err(e) = consumer.store_offset_from_message(message) {
        tracing::warn!(topic, partition, offset, error = %e, "cannot store offset; the event may be sent again");
    }
    true
}
