//! The delivery engine: Kafka in, Sentry out.
//!
//! ```text
//!  kafka-poll thread ──records──▶ Shared { Scheduler, offsets per partition } ◀──answers── delivery tasks
//!   (BaseConsumer, rebalances,            │ next event                                 ▲
//!    pause/resume, commits)               ▼                                            │
//!                                    Dispatcher ── Pacer (adaptive | cyclops, breaker) ─┘
//! ```
//!
//! - [`kafka`]: the group's consumer (live lane) and the backfill reader;
//!   commits the lowest offset not done, with the done ranges above it as metadata.
//! - [`poll`]: the thread that drives both readers.
//! - [`lanes`]: per partition, the live lane and the gaps newest-first jumps leave.
//! - [`shared`]: buffered events and per-partition offsets, behind one lock.
//! - [`dispatch`]: paces requests, sends them, acts on Sentry's answers.
//! - [`schedule`]: fair turns across projects, newest first.
//! - [`offsets`]: per partition, what is done and what may be committed.

pub mod dispatch;
pub mod kafka;
pub mod lanes;
mod latency;
pub mod offsets;
mod poll;
pub mod schedule;
pub mod shared;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cyclops_api::count::{ForwarderCount, Hold, PartitionCount, ProjectBacklog, Service, Summary};
use cyclops_common::config::{Config, PacingMode};
use cyclops_common::shutdown::CancellationToken;
use rdkafka::consumer::BaseConsumer;
use tokio::time::Instant;

use self::dispatch::{Dispatcher, PacingView};
use self::latency::LatencyWindow;
use self::shared::Shared;
use crate::ForwarderError;
use crate::deadletter::DeadLetter;
use crate::metrics as m;
use crate::pacing::adaptive::{AdaptiveLimit, AdaptiveParams};
use crate::pacing::backoff::Backoff;
use crate::pacing::breaker::Breaker;
use crate::pacing::cyclops::CyclopsPacer;
use crate::pacing::pacer::Pacer;
use crate::upstream::Upstream;
use schedule::Scheduler;

/// Longest pause between two writes of one record to the dead-letter topic.
const DEAD_LETTER_RETRY_MAX: Duration = Duration::from_secs(30);

/// Handles for the status endpoints.
#[derive(Debug, Clone)]
pub struct EngineStatus {
    shared: Arc<Shared>,
    latency: Arc<Mutex<LatencyWindow>>,
    view: Arc<Mutex<PacingView>>,
}

/// A built, not yet running engine.
pub struct Engine {
    consumer: BaseConsumer<kafka::Context>,
    backfill: BaseConsumer<cyclops_common::kafka::Context>,
    dispatcher: Dispatcher,
    commit_interval: Duration,
    discovery: poll::Discovery,
    status: EngineStatus,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub fn build(
        config: &Config,
        upstream: Upstream,
        dead_letter: Arc<DeadLetter>,
        shutdown: CancellationToken,
    ) -> Result<Self, ForwarderError> {
        let f = &config.forwarder;
        let weights: HashMap<u64, u32> =
            f.project_weights.iter().filter_map(|(p, &w)| Some((p.parse().ok()?, w))).collect();
        let sched = Scheduler::new(
            f.process_newer_messages_first,
            f.backfill_share_percent,
            weights,
            f.buffer_events_per_partition,
        );
        let jump = f.process_newer_messages_first.then(|| i64::try_from(f.jump_threshold_events).unwrap_or(i64::MAX));
        let shared = Shared::new(sched, f.buffer_events_per_partition, jump);
        let breaker = Breaker::new(
            Duration::from_secs(f.breaker_grace_secs),
            Duration::from_secs(1).min(Duration::from_secs(f.breaker_max_probe_secs)),
            Duration::from_secs(f.breaker_max_probe_secs),
        )?;
        let pacer = match f.pacing {
            PacingMode::Adaptive => Pacer::adaptive(
                AdaptiveLimit::new(AdaptiveParams {
                    initial: f.concurrency_initial,
                    min: f.concurrency_min,
                    max: f.concurrency_max,
                    ..AdaptiveParams::default()
                })?,
                breaker,
            ),
            PacingMode::Cyclops => Pacer::cyclops(
                CyclopsPacer::new(f.max_requests_to_average, Duration::from_millis(f.max_dump_interval_ms))?,
                breaker,
            ),
        };
        let retry_initial = Duration::from_millis(f.retry_initial_ms);
        let latency = Arc::new(Mutex::new(LatencyWindow::new(f.max_requests_to_average)));
        let view = Arc::new(Mutex::new(PacingView::default()));
        let consumer = kafka::consumer(config, shared.clone())?;
        let backfill = kafka::backfill_consumer(config)?;
        let dispatcher = Dispatcher {
            shared: shared.clone(),
            pacer,
            upstream,
            dead_letter,
            retry: Backoff::new(retry_initial, Duration::from_millis(f.retry_max_ms))?,
            dead_letter_retry: Backoff::new(retry_initial, DEAD_LETTER_RETRY_MAX.max(retry_initial))?,
            latency: latency.clone(),
            view: view.clone(),
            shutdown,
            // The other half commits what was delivered and leaves the
            // group, within the service's whole drain_timeout_secs.
            drain: Duration::from_secs(f.drain_timeout_secs) / 2,
            openings_seen: 0,
        };
        Ok(Self {
            consumer,
            backfill,
            dispatcher,
            commit_interval: Duration::from_millis(f.commit_interval_ms),
            discovery: poll::Discovery {
                prefix: config.kafka.topic_prefix.clone(),
                every: Duration::from_secs(f.topic_refresh_secs),
            },
            status: EngineStatus { shared, latency, view },
        })
    }

    pub fn status(&self) -> EngineStatus {
        self.status.clone()
    }

    /// Runs until the dispatcher's shutdown token is cancelled (or until
    /// this future is dropped: the poll thread stops either way); then lets
    /// requests in flight finish (bounded), commits and leaves the group.
    pub async fn run(self) -> Result<(), ForwarderError> {
        let Self { consumer, backfill, dispatcher, commit_interval, discovery, status } = self;
        // One token stops the poll thread and the gauges: cancelled once the
        // dispatcher has drained (the poll thread commits what it delivered),
        // and by the guard when a runtime shutting down drops this future
        // mid-await — else the thread would poll forever and the runtime's
        // drop, waiting on the blocking task that joins it, never return.
        let stop = CancellationToken::new();
        let _stop_when_dropped = stop.clone().drop_guard();
        let poller = poll::spawn(consumer, backfill, status.shared.clone(), commit_interval, discovery, stop.clone())
            .map_err(ForwarderError::Thread)?;
        let gauges = tokio::spawn(publish_gauges(status.clone(), stop.clone()));
        // The poll thread is watched too: without it the dispatcher would
        // idle forever behind a healthy-looking /ready.
        let mut polling = tokio::task::spawn_blocking(move || poller.join());
        let early = tokio::select! {
            () = dispatcher.run() => None,
            joined = &mut polling => Some(joined),
        };
        stop.cancel();
        // The gauges end at once; a panic there is only logged.
        if let Err(e) = gauges.await {
            tracing::error!(error = %e, "the gauge task failed");
        }
        if let Some(joined) = early {
            let why = match joined {
                Ok(Ok(())) => "ended".to_owned(),
                Ok(Err(_)) => "panicked".to_owned(),
                Err(e) => e.to_string(),
            };
            return Err(ForwarderError::PollStopped(why));
        }
        if !matches!(polling.await, Ok(Ok(()))) {
            tracing::error!("the kafka poll thread failed");
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Every second: lag per partition, buffered events, holds.
async fn publish_gauges(status: EngineStatus, stop: CancellationToken) {
    let mut reported: HashSet<(Arc<str>, i32)> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (parts, buffered, holds) = {
            let inner = status.shared.lock();
            let now = Instant::now();
            (inner.partitions(), inner.total_buffered(), inner.holds(now).len())
        };
        let now = now_ms();
        let mut current = HashSet::new();
        for p in &parts {
            let labels = [("topic", p.topic.to_string()), ("partition", p.partition.to_string())];
            metrics::gauge!(m::LAG_EVENTS, &labels).set(p.backlog as f64);
            let age = p.oldest_pending_ms.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            metrics::gauge!(m::LAG_SECONDS, &labels).set(age);
            current.insert((p.topic.clone(), p.partition));
        }
        for (topic, partition) in reported.difference(&current) {
            let labels = [("topic", topic.to_string()), ("partition", partition.to_string())];
            metrics::gauge!(m::LAG_EVENTS, &labels).set(0.0);
            metrics::gauge!(m::LAG_SECONDS, &labels).set(0.0);
        }
        reported = current;
        metrics::gauge!(m::BUFFERED).set(buffered as f64);
        metrics::gauge!(m::ASSIGNED_PARTITIONS).set(parts.len() as f64);
        metrics::gauge!(m::HOLDS_ACTIVE).set(holds as f64);
    }
}

impl EngineStatus {
    /// `/count`: Cyclops's fields (`count` = events not yet delivered in the
    /// partitions this instance owns; `average`, `percentile` = Sentry's
    /// recent response times, ms; `processed` = delivered; `ignored` =
    /// dead-lettered), then the forwarder's own.
    pub fn count(&self) -> ForwarderCount {
        let now = Instant::now();
        let (parts, holds, totals, buffered) = {
            let inner = self.shared.lock();
            (inner.partitions(), inner.holds(now), inner.totals(), inner.total_buffered())
        };
        let (average, percentile) = self.latency.lock().map(|l| l.summary()).unwrap_or_default();
        let view = self.view.lock().map(|v| *v).unwrap_or_default();
        let now_ms = now_ms();
        let mut projects: HashMap<u64, (u64, Option<i64>)> = HashMap::new();
        for p in &parts {
            let entry = projects.entry(p.project).or_default();
            entry.0 += p.backlog;
            entry.1 = match (entry.1, p.oldest_pending_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let age = |ms: Option<i64>| ms.map(|t| (now_ms - t).max(0) as f64 / 1000.0);
        let per_project = projects
            .iter()
            .map(|(id, (backlog, oldest))| {
                (*id, ProjectBacklog { backlog: *backlog, oldest_pending_age_secs: age(*oldest) })
            })
            .collect();
        let partitions = parts
            .iter()
            .map(|p| PartitionCount {
                topic: p.topic.to_string(),
                partition: p.partition,
                project: p.project,
                backlog: p.backlog,
                committed: p.committed,
                high_watermark: p.high_watermark,
                buffered: p.buffered,
                paused: p.paused,
                oldest_pending_age_secs: age(p.oldest_pending_ms),
                backfill_gaps: p.gaps,
                backfill_unread: p.gap_events,
            })
            .collect();
        let holds = holds
            .into_iter()
            .map(|h| Hold {
                project: h.project,
                category: h.category,
                remaining_secs: h.until.duration_since(now).as_secs_f64(),
            })
            .collect();
        // A forwarder beyond the partition count gets none: say so, rather
        // than look like one with nothing to deliver.
        let idle = parts.is_empty();
        ForwarderCount {
            summary: Summary {
                service: Service::Forwarder,
                count: parts.iter().map(|p| p.backlog).sum(),
                average,
                percentile,
                processed: totals.delivered,
                ignored: totals.dead_lettered,
            },
            buffered: buffered as u64,
            oldest_pending_age_secs: age(parts.iter().filter_map(|p| p.oldest_pending_ms).min()),
            concurrency_limit: view.limit,
            in_flight: view.in_flight,
            breaker: view.breaker,
            holds,
            projects: per_project,
            assigned_partitions: parts.len(),
            idle,
            idle_reason: idle.then(|| {
                "no partition assigned: the group has at least as many forwarders as the project topics have \
                 partitions (raise kafka.topic_partitions), or it is rebalancing"
                    .to_owned()
            }),
            partitions,
        }
    }
}
