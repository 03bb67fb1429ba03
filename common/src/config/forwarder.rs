//! `[forwarder]`: the Kafka consumer that delivers to Sentry.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::load::key_error;
use crate::ids::ProjectId;

/// `[forwarder]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwarderConfig {
    /// Address of the status endpoints. Defaults to `0.0.0.0`.
    pub bind: IpAddr,
    /// Port of the status endpoints; 0 picks a free one. Defaults to 3001.
    pub port: u16,
    /// Body of `/healthcheck` (Cyclops `HEALTHCHECK_TEXT`). Defaults to `WORKING`.
    pub healthcheck_text: String,
    /// How long a graceful shutdown may take before in-flight work is
    /// abandoned. Deliveries in flight get the first half of it to be
    /// answered; the second half is for committing what they delivered and
    /// leaving the consumer group. Defaults to 10.
    pub drain_timeout_secs: u64,
    /// Kafka consumer group shared by every forwarder of one farm.
    /// Defaults to `cyclops-forwarder`.
    pub group_id: String,
    /// Longest wait for one answer from Sentry; a timeout is retried.
    /// Defaults to 10000.
    pub request_timeout_ms: u64,
    /// Seconds between checks for new project topics. Defaults to 10.
    pub topic_refresh_secs: u64,
    /// How long a forwarder that stopped answering (killed, frozen) keeps
    /// its partitions before the group gives them to the others. Defaults
    /// to 45000 (Kafka's default); the broker allows 6000 to 300000.
    pub session_timeout_ms: u64,
    /// Sentry's answers that mean "never send this again": such events go to
    /// the dead-letter topic. Defaults to `[400, 401, 403, 413]`.
    pub dead_letter_statuses: Vec<u16>,
    /// The dead-letter topic; empty means `{kafka.topic_prefix}deadletter`.
    /// Defaults to empty.
    pub deadletter_topic: String,
    /// How the pace of requests to Sentry is set. Defaults to `adaptive`.
    pub pacing: PacingMode,
    /// Adaptive pacing: requests in flight at start, at least, at most.
    /// Default to 2, 1 and 64.
    pub concurrency_initial: u32,
    pub concurrency_min: u32,
    pub concurrency_max: u32,
    /// Cyclops pacing: response times the spacing is computed from (Cyclops
    /// `MAX_REQUESTS_TO_AVERAGE`). Defaults to 5000.
    pub max_requests_to_average: usize,
    /// Cyclops pacing: the longest spacing between two requests (Cyclops
    /// `MAX_DUMP_INTERVAL`). Defaults to 1000.
    pub max_dump_interval_ms: u64,
    /// Fresh events before the backlog (Cyclops
    /// `PROCESS_NEWER_MESSAGES_FIRST`). Defaults to true.
    pub process_newer_messages_first: bool,
    /// With newest first: a partition with more unread events than this
    /// jumps to its newest events and drains the rest as a backfill lane.
    /// Defaults to 5000.
    pub jump_threshold_events: u64,
    /// With newest first: the share of sends, in percent, that take the
    /// oldest buffered event, so that the backlog keeps draining.
    /// Defaults to 20.
    pub backfill_share_percent: u32,
    /// Project id → weight in the turns projects take (a project of weight
    /// 3 sends 3 events per turn). Defaults to none (every project 1).
    pub project_weights: BTreeMap<String, u32>,
    /// Events read and not yet done per partition and reader (buffered, in
    /// flight, waiting for a retry); past it, the reader pauses and the rest
    /// waits in Kafka. Defaults to 1000.
    pub buffer_events_per_partition: usize,
    /// Milliseconds between offset commits. Defaults to 1000.
    pub commit_interval_ms: u64,
    /// First delay before a failed delivery is tried again; the delay
    /// doubles (with jitter) up to `retry_max_ms`. Defaults to 100 and 30000.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Longest hold a rate limit from Sentry can impose. Defaults to 3600.
    pub max_hold_secs: u64,
    /// Seconds of nothing but failures (5xx, timeouts, connection errors)
    /// before the outage breaker stops sending and probes. Defaults to 10.
    pub breaker_grace_secs: u64,
    /// Longest spacing between two probes of an open breaker. Defaults to 60.
    pub breaker_max_probe_secs: u64,
}

/// `forwarder.pacing`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PacingMode {
    /// Requests in flight follow Sentry's measured latency.
    Adaptive,
    /// Cyclops's original: one request at a time, spaced by the p90 latency.
    Cyclops,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 3001,
            healthcheck_text: "WORKING".into(),
            drain_timeout_secs: 10,
            group_id: "cyclops-forwarder".into(),
            request_timeout_ms: 10_000,
            topic_refresh_secs: 10,
            session_timeout_ms: 45_000,
            dead_letter_statuses: vec![400, 401, 403, 413],
            deadletter_topic: String::new(),
            pacing: PacingMode::Adaptive,
            concurrency_initial: 2,
            concurrency_min: 1,
            concurrency_max: 64,
            max_requests_to_average: 5000,
            max_dump_interval_ms: 1000,
            process_newer_messages_first: true,
            jump_threshold_events: 5000,
            backfill_share_percent: 20,
            project_weights: BTreeMap::new(),
            buffer_events_per_partition: 1000,
            commit_interval_ms: 1000,
            retry_initial_ms: 100,
            retry_max_ms: 30_000,
            max_hold_secs: 3600,
            breaker_grace_secs: 10,
            breaker_max_probe_secs: 60,
        }
    }
}

impl ForwarderConfig {
    /// Checks what types alone cannot; an error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3600).contains(&self.topic_refresh_secs) {
            return Err(key_error("forwarder.topic_refresh_secs", "must be between 1 and 3600 seconds"));
        }
        if let Some(bad) = self.dead_letter_statuses.iter().find(|s| !(400..=499).contains(*s) || **s == 429) {
            return Err(key_error(
                "forwarder.dead_letter_statuses",
                format!("{bad} is not a 4xx status that means \"never again\" (429 is a rate limit)"),
            ));
        }
        let dlq = &self.deadletter_topic;
        if !dlq.is_empty() && !dlq.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(key_error("forwarder.deadletter_topic", format!("not a valid Kafka topic name: {dlq:?}")));
        }
        if !(1000..=3_600_000).contains(&self.session_timeout_ms) {
            return Err(key_error("forwarder.session_timeout_ms", "must be between 1000 and 3600000"));
        }
        if self.concurrency_min == 0 {
            return Err(key_error("forwarder.concurrency_min", "must be at least 1"));
        }
        if self.concurrency_max < self.concurrency_min || self.concurrency_max > 10_000 {
            return Err(key_error("forwarder.concurrency_max", "must be between concurrency_min and 10000"));
        }
        if !(self.concurrency_min..=self.concurrency_max).contains(&self.concurrency_initial) {
            return Err(key_error(
                "forwarder.concurrency_initial",
                "must be between concurrency_min and concurrency_max",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_requests_to_average) {
            return Err(key_error("forwarder.max_requests_to_average", "must be between 1 and 1000000"));
        }
        if self.jump_threshold_events == 0 {
            return Err(key_error("forwarder.jump_threshold_events", "must be at least 1"));
        }
        if !(1..=100).contains(&self.backfill_share_percent) {
            return Err(key_error("forwarder.backfill_share_percent", "must be between 1 and 100"));
        }
        for (project, weight) in &self.project_weights {
            if ProjectId::parse_canonical(project).is_none() {
                return Err(key_error("forwarder.project_weights", format!("{project:?} is not a project id")));
            }
            if !(1..=1000).contains(weight) {
                return Err(key_error(
                    "forwarder.project_weights",
                    format!("project {project}: weight must be 1 to 1000"),
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.buffer_events_per_partition) {
            return Err(key_error("forwarder.buffer_events_per_partition", "must be between 1 and 1000000"));
        }
        if !(10..=60_000).contains(&self.commit_interval_ms) {
            return Err(key_error("forwarder.commit_interval_ms", "must be between 10 and 60000"));
        }
        if self.retry_initial_ms == 0 {
            return Err(key_error("forwarder.retry_initial_ms", "must be at least 1"));
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(key_error("forwarder.retry_max_ms", "must be at least retry_initial_ms"));
        }
        if self.max_hold_secs == 0 {
            return Err(key_error("forwarder.max_hold_secs", "must be at least 1"));
        }
        if self.breaker_max_probe_secs == 0 {
            return Err(key_error("forwarder.breaker_max_probe_secs", "must be at least 1"));
        }
        if self.group_id.is_empty() || self.group_id.len() > 200 {
            return Err(key_error("forwarder.group_id", "must be 1 to 200 characters"));
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > 600_000 {
            return Err(key_error(
                "forwarder.request_timeout_ms",
                format!("must be between 1 and 600000 milliseconds, got {}", self.request_timeout_ms),
            ));
        }
        if self.drain_timeout_secs == 0 || self.drain_timeout_secs > 3600 {
            return Err(key_error(
                "forwarder.drain_timeout_secs",
                format!("must be between 1 and 3600 seconds, got {}", self.drain_timeout_secs),
            ));
        }
        Ok(())
    }
}
