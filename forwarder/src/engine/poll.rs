//! The poll thread: librdkafka's calls block and its rebalance callbacks run
//! inside `poll`, so both readers live on a thread of their own. Each turn
//! it reads what the live and backfill readers have into the shared state,
//! carries out what the shared state asks ([`Action`]: pause, resume, seek,
//! start or stop backfilling), wakes the dispatcher, and commits what is
//! done every `commit_interval`.
#![expect(
    clippy::disallowed_types,
    reason = "a thread of its own, outside the runtime: tokio's clock is not its clock"
)]

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cyclops_common::record::RecordHeaders;
use cyclops_common::shutdown::CancellationToken;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::kafka::{Context, add_commit, commit};
use super::lanes::Action;
use super::schedule::Lane;
use super::shared::{Accepted, Job, Shared, Tp};
use crate::metrics as m;

/// Longest a poll blocks, so that pauses, resumes and commits are timely.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Records taken from one reader per turn before the dispatcher is woken.
const BATCH: usize = 256;
const SEEK_TIMEOUT: Duration = Duration::from_secs(2);

/// The two readers and what the thread knows of the backfill's assignment.
struct Readers {
    live: BaseConsumer<Context>,
    backfill: BaseConsumer<cyclops_common::kafka::Context>,
    backfilling: HashSet<Tp>,
    /// The project topics the group's consumer is subscribed to.
    subscribed: BTreeSet<String>,
}

/// Where and how often to look for project topics.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub prefix: String,
    pub every: Duration,
}

/// Runs the poll loop until `stop` is cancelled, then commits what is done and
/// leaves the group.
pub fn spawn(
    live: BaseConsumer<Context>,
    backfill: BaseConsumer<cyclops_common::kafka::Context>,
    shared: Arc<Shared>,
    commit_interval: Duration,
    discovery: Discovery,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("kafka-poll".into()).spawn(move || {
        let mut readers = Readers { live, backfill, backfilling: HashSet::new(), subscribed: BTreeSet::new() };
        let mut last_commit = Instant::now();
        let mut next_discovery = Instant::now();
        let mut backfill_flowing = false;
        while !stop.is_cancelled() {
            if Instant::now() >= next_discovery {
                readers.discover(&discovery.prefix);
                next_discovery = Instant::now() + discovery.every;
            }
            // While the backfill reader has records the live reader does not
            // wait for new ones: that wait, once per turn of at most BATCH
            // backfilled records, bounded a backlog's drain to BATCH per
            // POLL_INTERVAL (12,800 events/s) however fast Sentry was.
            let wait = if backfill_flowing { Duration::ZERO } else { POLL_INTERVAL };
            let mut woke = read(&readers.live, &shared, Lane::Live, wait);
            // What the live read and its callbacks asked for goes first: a
            // revoked partition leaves the backfill reader before it is read.
            readers.apply(&shared);
            backfill_flowing = false;
            if !readers.backfilling.is_empty() {
                backfill_flowing = read(&readers.backfill, &shared, Lane::Backfill, Duration::ZERO);
                woke |= backfill_flowing;
                readers.apply(&shared);
            }
            if woke {
                shared.wake.notify_one();
            }
            if last_commit.elapsed() >= commit_interval {
                commit_done(&readers.live, &shared, CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        commit_done(&readers.live, &shared, CommitMode::Sync);
        // Leaving the group revokes every partition (committing again, which
        // is harmless) so that the others take them over at once.
        readers.live.unsubscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        while readers.live.assignment().is_ok_and(|a| a.count() > 0) && Instant::now() < deadline {
            if let Some(Err(e)) = readers.live.poll(Duration::from_millis(50)) {
                tracing::debug!(error = %e, "while leaving the group");
            }
        }
    })
}

/// Takes up to [`BATCH`] records from `reader` (waiting at most `wait` for
/// the first); true when something was buffered.
fn read<C: rdkafka::consumer::ConsumerContext>(
    reader: &BaseConsumer<C>,
    shared: &Shared,
    lane: Lane,
    wait: Duration,
) -> bool {
    let mut woke = false;
    let mut timeout = wait;
    for _ in 0..BATCH {
        match reader.poll(timeout) {
            Some(Ok(message)) => {
                woke |= take(shared, &message, lane);
                timeout = Duration::ZERO;
            }
            // Until a first project topic exists, the pattern matches none.
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition))) => {
                tracing::debug!("no project topic yet");
            }
            Some(Err(e)) => {
                metrics::counter!(m::CONSUMER_ERRORS).increment(1);
                tracing::warn!(error = %e, ?lane, "kafka consumer error");
            }
            None => break,
        }
    }
    woke
}

/// Hands one record to the shared state; true when it was buffered.
fn take(shared: &Shared, message: &BorrowedMessage<'_>, lane: Lane) -> bool {
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
    match shared.lock().accept(job, lane) {
        Accepted::Buffered => true,
        Accepted::AlreadyDone => {
            metrics::counter!(m::SKIPPED_DONE).increment(1);
            false
        }
        Accepted::Ignored => false,
    }
}

fn one(tp: &Tp, offset: Option<i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    let mut elem = tpl.add_partition(&tp.0, tp.1);
    if let Some(offset) = offset
        && elem.set_offset(Offset::Offset(offset)).is_err()
    {
        tracing::warn!(offset, "invalid offset");
    }
    tpl
}

impl Readers {
    /// Subscribes the group's consumer to the project topics Kafka has now,
    /// when they changed (a rebalance follows).
    fn discover(&mut self, prefix: &str) {
        let Some(topics) = super::kafka::project_topics(&self.live, prefix) else { return };
        if topics == self.subscribed {
            return;
        }
        tracing::info!(topics = topics.len(), "project topics changed; subscribing");
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let result = if names.is_empty() {
            self.live.unsubscribe();
            Ok(())
        } else {
            self.live.subscribe(&names)
        };
        match result {
            Ok(()) => self.subscribed = topics,
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to the project topics; trying again later"),
        }
    }

    /// Carries out what the shared state asks; the lock is not held meanwhile
    /// (a seek can block).
    fn apply(&mut self, shared: &Shared) {
        let actions = shared.lock().take_actions();
        let (mut resumed_live, mut resumed_backfill) = (Vec::new(), Vec::new());
        for (tp, action) in actions {
            let result = match action {
                Action::PauseLive => self.live.pause(&one(&tp, None)),
                Action::ResumeLive => self.live.resume(&one(&tp, None)).map(|()| resumed_live.push(tp.clone())),
                Action::SeekLive(offset) => self.live.seek(&tp.0, tp.1, Offset::Offset(offset), SEEK_TIMEOUT),
                Action::BackfillFrom(offset) if self.backfilling.contains(&tp) => {
                    self.backfill.seek(&tp.0, tp.1, Offset::Offset(offset), SEEK_TIMEOUT)
                }
                Action::BackfillFrom(offset) => {
                    self.backfilling.insert(tp.clone());
                    // Resumed too: it may have been paused under an earlier gap.
                    self.backfill
                        .incremental_assign(&one(&tp, Some(offset)))
                        .and_then(|()| self.backfill.resume(&one(&tp, None)))
                }
                Action::BackfillStop if self.backfilling.remove(&tp) => {
                    self.backfill.incremental_unassign(&one(&tp, None))
                }
                Action::BackfillStop => Ok(()),
                Action::PauseBackfill if self.backfilling.contains(&tp) => self.backfill.pause(&one(&tp, None)),
                Action::ResumeBackfill if self.backfilling.contains(&tp) => {
                    self.backfill.resume(&one(&tp, None)).map(|()| resumed_backfill.push(tp.clone()))
                }
                Action::PauseBackfill | Action::ResumeBackfill => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(topic = %tp.0, partition = tp.1, ?action, error = %e, "kafka reader action failed");
            }
        }
        kick(&self.live, &resumed_live);
        kick(&self.backfill, &resumed_backfill);
    }
}

/// Seeks just-resumed partitions to where they stand. librdkafka's resume
/// does not wake the broker thread that fetches a partition: when that
/// thread idles (every partition it serves paused or with a full
/// read-ahead) the partition is not fetched again for up to a second, its
/// buffer runs dry meanwhile, and a fast Sentry waited on Kafka. A seek
/// restarts the fetch at once (its new fetch state wakes the thread). A
/// partition seeked since it was read (a jump, a new gap) has no position
/// and needs none: that seek restarted it.
fn kick<C: rdkafka::consumer::ConsumerContext>(reader: &BaseConsumer<C>, resumed: &[Tp]) {
    if resumed.is_empty() {
        return;
    }
    let positions = match reader.position() {
        Ok(positions) => positions,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the readers' positions; resumed partitions are fetched within a second");
            return;
        }
    };
    for tp in resumed {
        if let Some(Offset::Offset(offset)) = positions.find_partition(&tp.0, tp.1).map(|p| p.offset())
            && let Err(e) = reader.seek(&tp.0, tp.1, Offset::Offset(offset), SEEK_TIMEOUT)
        {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot restart a resumed partition; it is fetched within a second");
        }
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
