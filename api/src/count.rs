//! `/count`: [`Summary`] holds Cyclops's fields, which every instance
//! serves; [`IngestCount`] and [`ForwarderCount`] add each service's own.
//!
//! The summary's numbers mean different things per service: for ingest
//! `processed`/`ignored` are events stored in Kafka and events the flood
//! filter, sampling or an empty envelope dropped, `average`/`percentile`
//! Kafka's acknowledgement times; for a forwarder they are events delivered
//! to Sentry and events dead-lettered, and Sentry's response times. `count`
//! is what is still to send: in flight to Kafka on ingest, not yet delivered
//! on a forwarder.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};

/// What an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Ingest,
    Forwarder,
    /// An instance that does not say, or says something else (the Python
    /// Cyclops says nothing).
    #[serde(other)]
    Unknown,
}

fn unknown() -> Service {
    Service::Unknown
}

/// Cyclops's `/count` fields. Read leniently, so that `cyclops-count` also
/// sums the Python Cyclops and whatever else answers like it: a field that
/// is missing, `null` or not a number reads as 0 (a count may be written as
/// a float), a `service` that is not one of ours as [`Service::Unknown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default = "unknown", deserialize_with = "lenient_service")]
    pub service: Service,
    /// Events still to send.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub count: u64,
    /// Mean response time, ms.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub average: f64,
    /// 90th percentile response time, ms.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub percentile: f64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub processed: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub ignored: u64,
}

/// Any JSON value, read as a number when it is one.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Other(IgnoredAny),
}

/// A count written as an integer, or as a float (floored at 0); anything
/// else is 0.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(match Lenient::deserialize(deserializer)? {
        Lenient::Unsigned(n) => n,
        Lenient::Signed(n) => u64::try_from(n).unwrap_or(0),
        // Saturating: a float beyond u64 reads as u64::MAX, NaN as 0.
        Lenient::Float(f) => f.max(0.0) as u64,
        Lenient::Other(_) => 0,
    })
}

/// A number; anything else is 0.
fn lenient_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(match Lenient::deserialize(deserializer)? {
        Lenient::Unsigned(n) => n as f64,
        Lenient::Signed(n) => n as f64,
        Lenient::Float(f) => f,
        Lenient::Other(_) => 0.0,
    })
}

/// One of our services' names; anything else is [`Service::Unknown`].
fn lenient_service<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Service, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Named {
        Known(Service),
        Other(IgnoredAny),
    }
    Ok(match Named::deserialize(deserializer)? {
        Named::Known(service) => service,
        Named::Other(_) => Service::Unknown,
    })
}

/// An ingest instance's `/count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestCount {
    #[serde(flatten)]
    pub summary: Summary,
    /// Dropped on purpose, by reason (`flood`, `sampled`, `empty`).
    pub ignored_by_reason: BTreeMap<String, u64>,
    /// Refused, by reason (the `reason` label of `cyclops_ingest_rejected_total`).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// By project id.
    pub projects: BTreeMap<u64, ProjectEvents>,
    /// The flood filter counts in process because Redis is not answering.
    pub flood_fallback_active: bool,
    pub spool: SpoolCount,
}

/// An ingest instance's spool (`ingest.spool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolCount {
    pub enabled: bool,
    /// `None` when the spool is off.
    #[serde(flatten)]
    pub state: Option<SpoolState>,
}

/// What an enabled spool holds and has done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolState {
    /// Kafka is failing as a whole: new events go to the spool.
    pub kafka_down: bool,
    pub dir: String,
    pub records: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub oldest_age_secs: Option<u64>,
    pub appended: u64,
    pub drained: u64,
    /// Records found unreadable, set aside.
    pub corrupt: u64,
    pub last_error: Option<String>,
}

/// One project's events at one ingest instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectEvents {
    pub processed: u64,
    pub ignored: u64,
}

/// A forwarder instance's `/count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwarderCount {
    #[serde(flatten)]
    pub summary: Summary,
    /// Events read and held in memory, not delivered yet.
    pub buffered: u64,
    /// Age of the oldest event read and not delivered yet.
    pub oldest_pending_age_secs: Option<f64>,
    /// The pacer's concurrency limit.
    pub concurrency_limit: u32,
    /// Requests to Sentry in flight.
    pub in_flight: u32,
    pub breaker: Breaker,
    /// Projects (or some of their categories) Sentry asked to wait.
    pub holds: Vec<Hold>,
    /// By project id.
    pub projects: BTreeMap<u64, ProjectBacklog>,
    pub assigned_partitions: usize,
    /// No partition is assigned to this instance.
    pub idle: bool,
    /// Why it is idle, when it is.
    pub idle_reason: Option<String>,
    pub partitions: Vec<PartitionCount>,
}

/// The forwarder's circuit breaker towards Sentry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Breaker {
    #[default]
    Closed,
    Probing,
    Open,
}

/// A hold Sentry asked for (`Retry-After`, `X-Sentry-Rate-Limits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub project: u64,
    /// `None`: every category of the project is held.
    pub category: Option<String>,
    pub remaining_secs: f64,
}

/// One project's backlog at one forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProjectBacklog {
    pub backlog: u64,
    pub oldest_pending_age_secs: Option<f64>,
}

/// One partition a forwarder owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionCount {
    pub topic: String,
    pub partition: i32,
    pub project: u64,
    /// Events not delivered yet.
    pub backlog: u64,
    pub committed: Option<i64>,
    pub high_watermark: Option<i64>,
    pub buffered: usize,
    pub paused: bool,
    pub oldest_pending_age_secs: Option<f64>,
    /// Gaps left by newest-first jumps that the backfill lane still drains,
    /// and the events in them not read yet.
    pub backfill_gaps: usize,
    pub backfill_unread: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_the_python_cyclops_and_both_services() {
        let python: Summary =
            serde_json::from_str(r#"{"count": 3.0, "average": 1.5, "processed": 10}"#).expect("reads");
        assert_eq!((python.service, python.count, python.processed, python.ignored), (Service::Unknown, 3, 10, 0));
        let other: Summary = serde_json::from_str(r#"{"service": "relay", "count": -1}"#).expect("reads");
        assert_eq!((other.service, other.count), (Service::Unknown, 0));
        let odd: Summary =
            serde_json::from_str(r#"{"service": 7, "count": "many", "average": null, "processed": [1]}"#)
                .expect("reads");
        assert_eq!((odd.service, odd.count, odd.average, odd.processed), (Service::Unknown, 0, 0.0, 0), "as 0");
        assert!(serde_json::from_str::<Summary>(r#""WORKING""#).is_err(), "not a /count at all");
    }

    #[test]
    fn each_service_count_round_trips_and_reads_as_a_summary() {
        let summary =
            Summary { service: Service::Ingest, count: 1, average: 2.0, percentile: 3.0, processed: 4, ignored: 5 };
        let ingest = IngestCount {
            summary: summary.clone(),
            ignored_by_reason: BTreeMap::from([("flood".into(), 5)]),
            rejected_by_reason: BTreeMap::new(),
            projects: BTreeMap::from([(42, ProjectEvents { processed: 4, ignored: 5 })]),
            flood_fallback_active: false,
            spool: SpoolCount { enabled: false, state: None },
        };
        let json = serde_json::to_value(&ingest).expect("writes");
        assert_eq!(json["projects"]["42"]["processed"], 4, "project ids are object keys");
        assert_eq!(json["spool"], serde_json::json!({"enabled": false}), "an off spool is only that");
        assert_eq!(serde_json::from_value::<IngestCount>(json.clone()).expect("reads"), ingest);
        assert_eq!(serde_json::from_value::<Summary>(json).expect("reads"), summary);
    }
}
