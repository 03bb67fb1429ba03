//! The state the Kafka poll thread and the dispatcher share: the scheduler's
//! buffered events and, per owned partition, which offsets are done.
//!
//! Every partition assignment gets a new generation; an event carries the
//! generation it was read under, so that the answer to a delivery that was
//! in flight when its partition was revoked (and perhaps assigned again)
//! changes nothing: the partition's new owner sends it again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::lanes::{Action, Read, Reading};
use super::offsets::PartitionOffsets;
use super::schedule::{Lane, Scheduler};
pub use crate::job::{Job, Tp};
use crate::rate_limits::Limit;
use crate::rate_limits::holds::CategoryHolds;

#[derive(Debug)]
struct Partition {
    project: u64,
    generation: u64,
    /// Unknown until the first record when the group had no commit.
    offsets: Option<PartitionOffsets>,
    reading: Reading,
    /// Read and not done yet: offset → Kafka timestamp.
    outstanding: BTreeMap<i64, Option<i64>>,
    /// Offset of the next record to be written (from librdkafka's statistics).
    high_watermark: Option<i64>,
    /// What was last committed, so that an unchanged partition is not committed again.
    committed: Option<(i64, String)>,
}

/// What became of a record a reader delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Buffered,
    /// Done before (by this or a previous owner): nothing to send.
    AlreadyDone,
    /// Not this reader's to deliver (read before a seek), or the partition
    /// is not ours any more.
    Ignored,
}

/// Counters since start, for `/count`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub delivered: u64,
    pub dead_lettered: u64,
}

/// What one owned partition looks like, for `/count` and metrics.
#[derive(Debug, Clone)]
pub struct PartitionView {
    pub topic: Arc<str>,
    pub partition: i32,
    pub project: u64,
    /// Events not delivered yet, known exactly once the high watermark is.
    pub backlog: u64,
    pub committed: Option<i64>,
    pub high_watermark: Option<i64>,
    pub buffered: usize,
    /// Kafka timestamp of the oldest event read and not done yet.
    pub oldest_pending_ms: Option<i64>,
    pub paused: bool,
    /// Gaps left by newest-first jumps that the backfill lane still drains,
    /// and the events in them not read yet.
    pub gaps: usize,
    pub gap_events: i64,
}

/// One hold on a project: on all its categories (`category` is `None`) or on one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    pub project: u64,
    pub category: Option<String>,
    pub until: Instant,
}

/// The engine's state. Its fields are private: the poll thread and the
/// dispatcher say what happened (a partition assigned, a record read, an
/// event delivered, a limit announced) and it keeps itself consistent.
#[derive(Debug)]
pub struct Inner {
    sched: Scheduler<Tp, Job>,
    parts: HashMap<Tp, Partition>,
    next_generation: u64,
    buffer_cap: usize,
    /// Unread backlog past which a partition jumps (newest first only).
    jump_threshold: Option<i64>,
    actions: Vec<(Tp, Action)>,
    totals: Totals,
    /// Holds on some categories of a project (a hold on all of them is the
    /// scheduler's).
    category_holds: CategoryHolds,
}

/// The shared state and the dispatcher's wake-up call.
#[derive(Debug)]
pub struct Shared {
    inner: Mutex<Inner>,
    /// Rung when there may be something new to send.
    pub wake: Notify,
}

impl Shared {
    /// `jump_threshold`: see [`super::lanes`]; `None` never jumps.
    pub fn new(sched: Scheduler<Tp, Job>, buffer_cap: usize, jump_threshold: Option<i64>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                sched,
                parts: HashMap::new(),
                next_generation: 0,
                buffer_cap,
                jump_threshold,
                actions: Vec::new(),
                totals: Totals::default(),
                category_holds: CategoryHolds::default(),
            }),
            wake: Notify::new(),
        })
    }

    /// The state, locked. A panic while it was held leaves it usable: every
    /// change below keeps it consistent step by step.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// A partition was assigned; `committed` is the group's commit with its
    /// metadata, when it has one.
    pub fn assign(&mut self, tp: Tp, project: u64, committed: Option<(i64, &str)>) {
        self.next_generation += 1;
        let offsets = committed.map(|(offset, meta)| PartitionOffsets::from_commit(offset, meta));
        self.sched.remove_partition(&tp);
        self.parts.insert(
            tp.clone(),
            Partition {
                project,
                generation: self.next_generation,
                offsets,
                reading: Reading::new(committed.map(|(offset, _)| offset)),
                outstanding: BTreeMap::new(),
                high_watermark: None,
                committed: committed.map(|(o, m)| (o, m.to_owned())),
            },
        );
        // A partition paused under an earlier assignment may still be.
        self.actions.retain(|(t, _)| t != &tp);
        self.actions.push((tp, Action::ResumeLive));
    }

    /// A partition was revoked: forgets it and what it buffered, and
    /// returns what to commit for it (offset and metadata).
    pub fn revoke(&mut self, tp: &Tp) -> Option<(i64, String)> {
        self.sched.remove_partition(tp);
        self.actions.retain(|(t, _)| t != tp);
        let part = self.parts.remove(tp)?;
        if part.reading.gaps() > 0 {
            self.actions.push((tp.clone(), Action::BackfillStop));
        }
        let offsets = part.offsets?;
        Some((offsets.commit_offset(), offsets.metadata().0))
    }

    /// A record was read by the reader of `lane`.
    pub fn accept(&mut self, mut job: Job, lane: Lane) -> Accepted {
        let tp = job.tp();
        let Some(part) = self.parts.get_mut(&tp) else { return Accepted::Ignored };
        let mut actions = Vec::new();
        let read = match lane {
            Lane::Live => part.reading.live(job.offset),
            Lane::Backfill => part.reading.backfill(job.offset, &mut actions),
        };
        self.actions.extend(actions.into_iter().map(|a| (tp.clone(), a)));
        let holes = match read {
            Read::Take { holes } => holes,
            Read::Rewound => {
                // The log restarted below the commit (topic recreated,
                // truncated): what was done there says nothing about this.
                tracing::warn!(topic = %tp.0, partition = tp.1, offset = job.offset, "partition rewound; reading it from there");
                part.offsets = Some(PartitionOffsets::new(job.offset));
                None
            }
            Read::Skip { holes } => {
                if let (Some(offsets), Some((start, end))) = (part.offsets.as_mut(), holes) {
                    offsets.mark_range_done(start, end);
                }
                return Accepted::Ignored;
            }
            Read::Stale => return Accepted::Ignored,
        };
        let offsets = part.offsets.get_or_insert_with(|| PartitionOffsets::new(job.offset));
        if let Some((start, end)) = holes {
            offsets.mark_range_done(start, end);
        }
        if offsets.is_done(job.offset) {
            return Accepted::AlreadyDone;
        }
        // Read again after a seek while it is still on its way: once is enough.
        if part.outstanding.contains_key(&job.offset) {
            return Accepted::Ignored;
        }
        job.generation = part.generation;
        job.project = part.project;
        part.outstanding.insert(job.offset, job.timestamp_ms);
        let project = part.project;
        self.sched.push(&tp, project, lane, job);
        self.flow(&tp);
        Accepted::Buffered
    }

    /// Pauses or resumes `tp`'s readers for how full its lanes are. The
    /// live reader counts every event read and not done that is not in the
    /// backfill lane — in flight, waiting to be retried or dead-lettered —
    /// so that a failing Sentry cannot draw the backlog into memory.
    fn flow(&mut self, tp: &Tp) {
        let backfill = self.sched.lane_len(tp, Lane::Backfill);
        let cap = self.buffer_cap;
        if let Some(part) = self.parts.get_mut(tp) {
            let total = part.outstanding.len();
            let live = total.saturating_sub(backfill);
            // Past twice the buffer in all, the backfill reader waits too.
            let backfill = if total >= 2 * cap { cap } else { backfill };
            let mut actions = Vec::new();
            part.reading.flow(live, backfill, cap, &mut actions);
            self.actions.extend(actions.into_iter().map(|a| (tp.clone(), a)));
        }
    }

    /// The next event to send, if any is ready.
    ///
    /// An event of a category Sentry holds is parked (put back, to go when
    /// the hold ends) rather than sent; a partition parks at most the
    /// scheduler's retry cap, then sends nothing new (the rest waits in
    /// Kafka) until they are gone.
    pub fn next(&mut self, now: Instant) -> Option<Job> {
        loop {
            let (tp, job) = self.sched.next(now)?;
            let categories = job.record.as_ref().map(|r| r.categories.as_slice()).unwrap_or_default();
            match self.category_holds.parked_until(job.project, categories, now) {
                // A malformed record is never sent: it goes to the dead letters now.
                Some(until) if job.record.is_ok() => {
                    metrics::counter!(crate::metrics::PARKED, "project" => job.project.to_string()).increment(1);
                    self.sched.retry_at(&tp, job.project, job, until);
                }
                _ => {
                    self.flow(&tp);
                    return Some(job);
                }
            }
        }
    }

    /// Jumps every partition whose unread backlog is past the threshold
    /// (newest first only); the poll thread calls it when watermarks are fresh.
    pub fn plan_jumps(&mut self) {
        let Some(threshold) = self.jump_threshold else { return };
        let window = i64::try_from(self.buffer_cap).unwrap_or(i64::MAX);
        let mut jumped = Vec::new();
        for (tp, part) in &mut self.parts {
            let Some(high) = part.high_watermark else { continue };
            let mut actions = Vec::new();
            if part.reading.maybe_jump(high, threshold, window, &mut actions) {
                tracing::info!(topic = %tp.0, partition = tp.1, high, "backlog: newest events first, the rest backfilled");
                self.actions.extend(actions.into_iter().map(|a| (tp.clone(), a)));
                jumped.push(tp.clone());
            }
        }
        for tp in jumped {
            self.sched.demote_live(&tp);
            self.flow(&tp);
        }
    }

    /// What the poll thread must do, in order.
    pub fn take_actions(&mut self) -> Vec<(Tp, Action)> {
        std::mem::take(&mut self.actions)
    }

    /// Whether `job` still belongs to a partition this forwarder owns under
    /// the same assignment.
    pub fn is_current(&self, job: &Job) -> bool {
        self.parts.get(&job.tp()).is_some_and(|p| p.generation == job.generation)
    }

    /// Sentry took `job`.
    pub fn delivered(&mut self, job: &Job) {
        self.done(job);
        self.totals.delivered += 1;
    }

    /// The dead-letter topic has `job`.
    pub fn dead_lettered(&mut self, job: &Job) {
        self.done(job);
        self.totals.dead_lettered += 1;
    }

    /// `job` is done for good (delivered or dead-lettered).
    fn done(&mut self, job: &Job) {
        let tp = job.tp();
        if let Some(part) = self.parts.get_mut(&tp)
            && part.generation == job.generation
        {
            part.outstanding.remove(&job.offset);
            if let Some(offsets) = part.offsets.as_mut() {
                offsets.mark_done(job.offset);
            }
            self.flow(&tp);
        }
    }

    /// Puts `job` back to be sent at `at` (dropped if its partition is gone).
    pub fn retry_at(&mut self, job: Job, at: Instant) {
        if self.is_current(&job) {
            let (tp, project) = (job.tp(), job.project);
            self.sched.retry_at(&tp, project, job, at);
        }
    }

    /// When the dispatcher must look again if nothing wakes it before.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.sched.next_wakeup(now)
    }

    /// Holds what Sentry's limits name ([`crate::rate_limits`]): the whole
    /// project for a limit on every category, else only the categories named.
    pub fn apply_limits(&mut self, project: u64, limits: &[Limit], now: Instant) {
        for limit in limits {
            let until = now + limit.hold;
            tracing::info!(project, hold_secs = limit.hold.as_secs(), categories = ?limit.categories, "sentry rate-limits the project; holding it");
            if limit.is_on_all() {
                self.sched.hold(project, until, now);
            }
            for category in &limit.categories {
                self.category_holds.hold(project, category, until, now);
            }
        }
    }

    /// Holds every category of `project` until `until` (a bare `Retry-After`).
    pub fn hold_project(&mut self, project: u64, until: Instant, now: Instant) {
        self.sched.hold(project, until, now);
    }

    /// The holds active at `now`, the project-wide ones first.
    pub fn holds(&self, now: Instant) -> Vec<HoldView> {
        let whole =
            self.sched.holds(now).into_iter().map(|(project, until)| HoldView { project, category: None, until });
        let some = self.category_holds.active(now).into_iter().map(|(project, category, until)| HoldView {
            project,
            category: Some(category),
            until,
        });
        whole.chain(some).collect()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Events buffered in the scheduler, all partitions.
    pub fn total_buffered(&self) -> usize {
        self.sched.total_buffered()
    }

    pub fn set_high_watermark(&mut self, tp: &Tp, high: i64) {
        if let Some(part) = self.parts.get_mut(tp) {
            part.high_watermark = Some(high);
        }
    }

    /// What to commit now: partitions whose commit point or metadata changed.
    pub fn commits(&mut self) -> Vec<(Tp, i64, String)> {
        let mut out = Vec::new();
        for (tp, part) in &mut self.parts {
            let Some(offsets) = &part.offsets else { continue };
            let (meta, complete) = offsets.metadata();
            if !complete {
                tracing::warn!(topic = %tp.0, partition = tp.1, "commit metadata full: some delivered events may be sent again after a restart");
            }
            let point = (offsets.commit_offset(), meta);
            if part.committed.as_ref() != Some(&point) {
                out.push((tp.clone(), point.0, point.1.clone()));
                part.committed = Some(point);
            }
        }
        out
    }

    /// Forgets what was committed, so that the next [`commits`](Self::commits)
    /// sends every partition again (after a failed commit).
    pub fn commit_failed(&mut self) {
        for part in self.parts.values_mut() {
            part.committed = None;
        }
    }

    /// Every owned partition.
    pub fn partitions(&self) -> Vec<PartitionView> {
        let mut out: Vec<_> = self
            .parts
            .iter()
            .map(|(tp, p)| {
                let backlog = match (&p.offsets, p.high_watermark) {
                    (Some(o), Some(high)) => o.pending_below(high),
                    (None, Some(high)) => u64::try_from(high - p.reading.live_next.unwrap_or(high)).unwrap_or(0),
                    (_, None) => p.outstanding.len() as u64,
                };
                PartitionView {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    project: p.project,
                    backlog,
                    committed: p.offsets.as_ref().map(PartitionOffsets::commit_offset),
                    high_watermark: p.high_watermark,
                    buffered: self.sched.buffered(tp),
                    oldest_pending_ms: p.outstanding.values().flatten().min().copied(),
                    paused: p.reading.live_paused,
                    gaps: p.reading.gaps(),
                    gap_events: p.reading.gap_events(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }
}
