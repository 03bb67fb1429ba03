//! The Kafka clients: the group's consumer (the live lane) with its
//! rebalance, statistics and commit callbacks, and the backfill reader.
//! [`super::poll`] drives both from a thread of their own.
//!
//! Commits carry the done ranges above the committed offset in their
//! metadata ([`super::offsets`]); a partition's commit is read back with its
//! metadata when it is assigned, so that a new owner skips what was already
//! delivered. On revoke, what is done is committed synchronously before the
//! partition goes; a partition lost (the session expired) is not committed,
//! since it is someone else's already.

use std::sync::Arc;
use std::time::Duration;

use cyclops_common::config::Config;
use std::collections::BTreeSet;

use cyclops_common::ids::ProjectId;
use cyclops_common::kafka::{self, ClientBuilder};
use cyclops_common::record::project_of_topic;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::shared::{Shared, Tp};
use crate::metrics as m;

/// Longest wait for the group's committed offsets of newly assigned partitions.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Callbacks librdkafka makes on the poll thread.
#[derive(Debug)]
pub struct Context {
    shared: Arc<Shared>,
    prefix: String,
    /// Logs errors and notes refused credentials.
    errors: kafka::Context,
}

impl ClientContext for Context {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors.error(&error, reason);
    }

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
        // Fresh watermarks: time to see whether a backlog calls for a jump.
        inner.plan_jumps();
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
            let Some(project) = project_of_topic(&self.prefix, topic).map(ProjectId::get) else { continue };
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

pub(super) fn add_commit(tpl: &mut TopicPartitionList, tp: &Tp, offset: i64, meta: &str) {
    let mut elem = tpl.add_partition(&tp.0, tp.1);
    if elem.set_offset(Offset::Offset(offset)).is_ok() {
        elem.set_metadata(meta);
    }
}

/// Commits `tpl`; the outcome is counted and logged by the commit callback.
pub(super) fn commit(consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList, mode: CommitMode) {
    if let Err(e) = consumer.commit(tpl, mode) {
        tracing::warn!(error = %e, "offset commit failed; it is tried again");
        consumer.context().shared.lock().commit_failed();
    }
}

/// How long librdkafka waits to fetch a partition again once the read-ahead
/// (`queued.max.messages.kbytes`, kept small here: the scheduler's buffer is
/// the real one) is full. Its default, a second, is meant for large
/// read-aheads; with a small one a fast reader would wait on it.
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// The backfill reader: no group (it never commits, the group's consumer
/// does); partitions are assigned to it by hand while they have gaps.
pub fn backfill_consumer(config: &Config) -> KafkaResult<BaseConsumer<kafka::Context>> {
    ClientBuilder::new(&config.kafka, "cyclops-forwarder-backfill")
        .set("group.id", format!("{}-backfill", config.forwarder.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A gap whose start retention deleted begins where Kafka still has records.
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .create()
}

/// The group's consumer; [`super::poll`] subscribes it to the project
/// topics ([`project_topics`]).
pub fn consumer(config: &Config, shared: Arc<Shared>) -> KafkaResult<BaseConsumer<Context>> {
    let context = Context { shared, prefix: config.kafka.topic_prefix.clone(), errors: kafka::Context::default() };
    let consumer: BaseConsumer<Context> = ClientBuilder::new(&config.kafka, "cyclops-forwarder")
        .set("group.id", &config.forwarder.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.forwarder.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (config.forwarder.session_timeout_ms / 5).clamp(100, 3000).to_string())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("topic.metadata.refresh.interval.ms", (config.forwarder.topic_refresh_secs * 1000).to_string())
        // Read-ahead per partition: the scheduler's buffer is the real one;
        // this only keeps fetches flowing, and bounds memory with many partitions.
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set("statistics.interval.ms", "1000")
        .create_with_context(context)?;
    Ok(consumer)
}

/// How long a look for project topics may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The project topics Kafka has now (`{prefix}{project_id}`), or `None`
/// when the metadata request failed.
///
/// The forwarder subscribes to this list, looked up again every
/// `forwarder.topic_refresh_secs`, rather than to a pattern: librdkafka can
/// miss a topic that appears while its group is rebalancing (its issue 3008),
/// and would then not read it until some other topic changed — a project's
/// events left undelivered for as long. A changed list always makes the
/// group rebalance.
pub fn project_topics<C: ConsumerContext>(consumer: &BaseConsumer<C>, prefix: &str) -> Option<BTreeSet<String>> {
    match consumer.fetch_metadata(None, DISCOVERY_TIMEOUT) {
        Ok(metadata) => Some(
            metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.name())
                .filter(|name| project_of_topic(prefix, name).is_some())
                .map(str::to_owned)
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the project topics; trying again later");
            None
        }
    }
}
