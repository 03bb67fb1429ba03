//! The Kafka side: one consumer of the group, driven by a thread of its own
//! (librdkafka's calls block; rebalance callbacks run inside `poll`), that
//! reads records into the shared state, pauses partitions whose buffer is
//! full and resumes them when it drained, and commits what is done.
//!
//! Commits carry the done ranges above the committed offset in their
//! metadata ([`crate::offsets`]); a partition's commit is read back with its
//! metadata when it is assigned, so that a new owner skips what was already
//! delivered. On revoke, what is done is committed synchronously before the
//! partition goes; a partition lost (the session expired) is not committed,
//! since it is someone else's already.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cyclops_common::config::Config;
use cyclops_common::record::{RecordHeaders, project_of_topic, topic_pattern};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::shared::{Accepted, Job, Shared, Tp};
use crate::metrics as m;

/// Longest wait for the group's committed offsets of newly assigned partitions.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a poll blocks, so that pauses, resumes and commits are timely.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Callbacks librdkafka makes on the poll thread.
#[derive(Debug)]
pub struct Context {
    shared: Arc<Shared>,
    prefix: String,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut inner = self.shared.lock();
        for (topic, t) in &statistics.topics {
            let name: Arc<str> = Arc::from(topic.as_str());
            for (&partition, p) in &t.partitions {
                // The last stable offset is where a consumer can read up to.
                let high = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                if partition >= 0 && high >= 0 {
                    inner.set_high_watermark(&(name.clone(), partition), high);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => metrics::counter!(m::COMMITS, "result" => "ok").increment(1),
            Err(e) => {
                metrics::counter!(m::COMMITS, "result" => "error").increment(1);
                tracing::warn!(error = %e, "offset commit failed; it is tried again");
                self.shared.lock().commit_failed();
            }
        }
    }

    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                metrics::counter!(m::REBALANCES, "kind" => "assign").increment(1);
                self.assigned(consumer, tpl);
                let assigned = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "cannot take the assigned partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                metrics::counter!(m::REBALANCES, "kind" => if lost { "lost" } else { "revoke" }).increment(1);
                self.revoked(consumer, tpl, lost);
                let released = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = released {
                    tracing::error!(error = %e, "cannot release the revoked partitions");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                if !cooperative && consumer.unassign().is_err() {
                    tracing::error!("cannot release partitions after a failed rebalance");
                }
            }
        }
    }
}

impl Context {
    fn assigned(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let committed = match consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => Some(committed),
            Err(e) => {
                // Reading starts from the commit anyway; only the done ranges
                // above it are unknown, which can cause re-sends, no loss.
                tracing::warn!(error = %e, "cannot read committed offsets; delivered events may be sent again");
                None
            }
        };
        let mut inner = self.shared.lock();
        for elem in tpl.elements() {
            let (topic, partition) = (elem.topic(), elem.partition());
            let Some(project) = project_of_topic(&self.prefix, topic) else { continue };
            let commit =
                committed.as_ref().and_then(|c| c.find_partition(topic, partition)).and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some((offset, e.metadata().to_owned())),
                    _ => None,
                });
            tracing::info!(topic, partition, committed = ?commit.as_ref().map(|c| c.0), "partition assigned");
            inner.assign((Arc::from(topic), partition), project, commit.as_ref().map(|(o, m)| (*o, m.as_str())));
        }
    }

    fn revoked(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, lost: bool) {
        let mut commits = TopicPartitionList::new();
        {
            let mut inner = self.shared.lock();
            for elem in tpl.elements() {
                let tp: Tp = (Arc::from(elem.topic()), elem.partition());
                tracing::info!(topic = elem.topic(), partition = elem.partition(), lost, "partition revoked");
                if let Some((offset, meta)) = inner.revoke(&tp)
                    && !lost
                {
                    add_commit(&mut commits, &tp, offset, &meta);
                }
            }
        }
        if commits.count() > 0 {
            commit(consumer, &commits, CommitMode::Sync);
        }
    }
}

fn add_commit(tpl: &mut TopicPartitionList, tp: &Tp, offset: i64, meta: &str) {
    let mut elem = tpl.add_partition(&tp.0, tp.1);
    if elem.set_offset(Offset::Offset(offset)).is_ok() {
        elem.set_metadata(meta);
    }
}

/// Commits `tpl`; the outcome is counted and logged by the commit callback.
fn commit(consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList, mode: CommitMode) {
    if let Err(e) = consumer.commit(tpl, mode) {
        tracing::warn!(error = %e, "offset commit failed; it is tried again");
        consumer.context().shared.lock().commit_failed();
    }
}

/// The group's consumer, subscribed to every project topic.
pub fn consumer(config: &Config, shared: Arc<Shared>) -> KafkaResult<BaseConsumer<Context>> {
    let context = Context { shared, prefix: config.kafka.topic_prefix.clone() };
    let consumer: BaseConsumer<Context> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.forwarder.group_id)
        .set("client.id", "cyclops-forwarder")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.forwarder.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (config.forwarder.session_timeout_ms / 5).clamp(100, 3000).to_string())
        .set("partition.assignment.strategy", "cooperative-sticky")
        // How often the subscription pattern is matched again, so that a
        // new project's topic is picked up.
        .set("topic.metadata.refresh.interval.ms", (config.forwarder.topic_refresh_secs * 1000).to_string())
        // Read-ahead per partition: the scheduler's buffer is the real one;
        // this only keeps fetches flowing, and bounds memory with many partitions.
        .set("queued.max.messages.kbytes", "4096")
        .set("statistics.interval.ms", "1000")
        .create_with_context(context)?;
    consumer.subscribe(&[&topic_pattern(&config.kafka.topic_prefix)])?;
    Ok(consumer)
}

/// Runs the poll loop on a thread of its own until `stop` is set, then
/// commits what is done and leaves the group.
pub fn spawn(
    consumer: BaseConsumer<Context>,
    shared: Arc<Shared>,
    commit_interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("kafka-poll".into()).spawn(move || {
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let mut woke = false;
            // Wait a little for a first record, then take what is there
            // without waiting, up to a bound, before waking the dispatcher.
            let mut timeout = POLL_INTERVAL;
            for _ in 0..256 {
                match consumer.poll(timeout) {
                    Some(Ok(message)) => {
                        woke |= take(&consumer, &shared, &message);
                        timeout = Duration::ZERO;
                    }
                    // Until a first project topic exists, the pattern matches none.
                    Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition))) => {
                        tracing::debug!("no project topic yet");
                    }
                    Some(Err(e)) => {
                        metrics::counter!(m::CONSUMER_ERRORS).increment(1);
                        tracing::warn!(error = %e, "kafka consumer error");
                    }
                    None => break,
                }
            }
            if woke {
                shared.wake.notify_one();
            }
            resume(&consumer, &shared);
            if last_commit.elapsed() >= commit_interval {
                commit_done(&consumer, &shared, CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        commit_done(&consumer, &shared, CommitMode::Sync);
        // Leaving the group revokes every partition (committing again, which
        // is harmless) so that the others take them over at once.
        consumer.unsubscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        while consumer.assignment().is_ok_and(|a| a.count() > 0) && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(50)).map(|r| r.map(drop));
        }
    })
}

/// Hands one record to the shared state; true when something was buffered.
fn take(consumer: &BaseConsumer<Context>, shared: &Shared, message: &BorrowedMessage<'_>) -> bool {
    let job = Job {
        topic: Arc::from(message.topic()),
        partition: message.partition(),
        offset: message.offset(),
        project: 0,
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        headers: message.headers().map(rdkafka::message::BorrowedHeaders::detach),
        record: RecordHeaders::from_kafka(message.headers()).map_err(|e| e.to_string()),
        generation: 0,
        backoff: None,
    };
    let tp = job.tp();
    let accepted = shared.lock().accept(job);
    match accepted {
        Accepted::Buffered { pause } => {
            if pause {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&tp.0, tp.1);
                if let Err(e) = consumer.pause(&tpl) {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot pause a full partition");
                }
            }
            true
        }
        Accepted::AlreadyDone => {
            metrics::counter!(m::SKIPPED_DONE).increment(1);
            false
        }
        Accepted::NotOwned => false,
    }
}

fn resume(consumer: &BaseConsumer<Context>, shared: &Shared) {
    let resumes = shared.lock().take_resumes();
    if resumes.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for tp in &resumes {
        tpl.add_partition(&tp.0, tp.1);
    }
    if let Err(e) = consumer.resume(&tpl) {
        tracing::warn!(error = %e, "cannot resume partitions");
    }
}

fn commit_done(consumer: &BaseConsumer<Context>, shared: &Shared, mode: CommitMode) {
    let commits = shared.lock().commits();
    if commits.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (tp, offset, meta) in &commits {
        add_commit(&mut tpl, tp, *offset, meta);
    }
    commit(consumer, &tpl, mode);
}
