//! What `/count` reports: Cyclops's `{"count", "average", "percentile",
//! "processed", "ignored"}` for this instance since it started, plus drops
//! and rejections by reason and counts per project.
//!
//! For ingest, `count` is the events handed to the producer and not yet
//! acknowledged by Kafka, and `average`/`percentile` (p90) are Kafka's
//! acknowledgement times in milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyclops_api::count::{IngestCount, ProjectEvents, Service, SpoolCount, Summary};
use cyclops_common::ids::ProjectId;
use hdrhistogram::Histogram;

/// Most projects tracked one by one; past it, new projects count only in the totals.
const MAX_PROJECTS: usize = 10_000;

/// This instance's counters.
#[derive(Debug)]
pub struct Stats {
    processed: AtomicU64,
    ignored: AtomicU64,
    in_flight: Arc<AtomicI64>,
    ignored_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    rejected_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    projects: Mutex<HashMap<u64, ProjectEvents>>,
    /// Kafka acknowledgement times, in microseconds.
    ack_latency: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            processed: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            in_flight: Arc::new(AtomicI64::new(0)),
            ignored_by_reason: Mutex::default(),
            rejected_by_reason: Mutex::default(),
            projects: Mutex::default(),
            // 1 µs to 1 hour at 3 significant figures: fixed size, about 100 KiB.
            ack_latency: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
            })),
        }
    }
}

/// Decrements the in-flight count when dropped, whatever happened to the send.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(crate::metrics::IN_FLIGHT).set(now as f64);
    }
}

impl Stats {
    fn project(&self, project: u64, update: impl FnOnce(&mut ProjectEvents)) {
        if let Ok(mut projects) = self.projects.lock()
            && (projects.len() < MAX_PROJECTS || projects.contains_key(&project))
        {
            update(projects.entry(project).or_default());
        }
    }

    /// An event went to Kafka.
    pub fn processed(&self, project: ProjectId) {
        let project = project.get();
        self.processed.fetch_add(1, Ordering::Relaxed);
        self.project(project, |p| p.processed += 1);
    }

    /// An event was dropped on purpose (`flood`, `sampled`, `empty`).
    pub fn ignored(&self, project: ProjectId, reason: &'static str) {
        let project = project.get();
        self.ignored.fetch_add(1, Ordering::Relaxed);
        self.project(project, |p| p.ignored += 1);
        if let Ok(mut by) = self.ignored_by_reason.lock() {
            *by.entry(reason).or_default() += 1;
        }
    }

    /// A submission was refused.
    pub fn rejected(&self, reason: &'static str) {
        if let Ok(mut by) = self.rejected_by_reason.lock() {
            *by.entry(reason).or_default() += 1;
        }
    }

    /// Marks one event as handed to the producer until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(crate::metrics::IN_FLIGHT).set(now as f64);
        InFlight(self.in_flight.clone())
    }

    /// Records how long Kafka took to acknowledge one event.
    pub fn acknowledged_after(&self, elapsed: Duration) {
        metrics::histogram!(crate::metrics::PRODUCE_SECONDS).record(elapsed.as_secs_f64());
        if let Ok(mut h) = self.ack_latency.lock() {
            h.saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1));
        }
    }

    /// The `/count` document; its spool part says "off" (the `/count` handler fills it in from the spool).
    pub fn count(&self, flood_fallback_active: bool) -> IngestCount {
        let (average, percentile) =
            self.ack_latency
                .lock()
                .map(|h| {
                    if h.is_empty() {
                        (0.0, 0.0)
                    } else {
                        (h.mean() / 1000.0, h.value_at_quantile(0.9) as f64 / 1000.0)
                    }
                })
                .unwrap_or_default();
        let by_reason = |m: &Mutex<BTreeMap<&'static str, u64>>| {
            m.lock().map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()).unwrap_or_default()
        };
        IngestCount {
            summary: Summary {
                service: Service::Ingest,
                count: u64::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(0),
                average,
                percentile,
                processed: self.processed.load(Ordering::Relaxed),
                ignored: self.ignored.load(Ordering::Relaxed),
            },
            ignored_by_reason: by_reason(&self.ignored_by_reason),
            rejected_by_reason: by_reason(&self.rejected_by_reason),
            projects: self.projects.lock().map(|p| p.iter().map(|(id, c)| (*id, *c)).collect()).unwrap_or_default(),
            flood_fallback_active,
            spool: SpoolCount { enabled: false, state: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let stats = Stats::default();
        stats.processed(ProjectId::new(1));
        stats.processed(ProjectId::new(1));
        stats.ignored(ProjectId::new(1), "flood");
        stats.ignored(ProjectId::new(2), "sampled");
        stats.rejected("missing_auth");
        stats.acknowledged_after(Duration::from_millis(2));
        stats.acknowledged_after(Duration::from_millis(4));
        let guard = stats.in_flight();
        let count = stats.count(false);
        drop(guard);
        assert_eq!(count.summary.count, 1);
        assert_eq!((count.summary.processed, count.summary.ignored), (2, 2));
        assert_eq!(count.ignored_by_reason["flood"], 1);
        assert_eq!(count.rejected_by_reason["missing_auth"], 1);
        assert_eq!(count.projects[&1].processed, 2);
        assert_eq!(count.projects[&2].ignored, 1);
        assert!((count.summary.average - 3.0).abs() < 0.01, "{}", count.summary.average);
        assert!(count.summary.percentile >= 3.99);
        assert_eq!(stats.count(false).summary.count, 0, "the guard gave it back");
    }
}
