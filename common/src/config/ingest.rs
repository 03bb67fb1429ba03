//! `[ingest]`: the HTTP intake, its limits, the flood filter and sampling.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::load::key_error;
use crate::ids::ProjectId;

/// `[ingest]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address to listen on. Defaults to `0.0.0.0`.
    pub bind: IpAddr,
    /// Port SDKs send to; 0 picks a free one. Defaults to 3000.
    pub port: u16,
    /// Body of `/healthcheck` (Cyclops `HEALTHCHECK_TEXT`). Defaults to `WORKING`.
    pub healthcheck_text: String,
    /// How long a graceful shutdown may take before in-flight work is
    /// abandoned. Defaults to 10.
    pub drain_timeout_secs: u64,
    /// How long ingest waits for Kafka to acknowledge an event before it
    /// answers 503 (the SDK retries later). Defaults to 5000.
    pub produce_timeout_ms: u64,
    /// At shutdown, how long ingest keeps serving with `/ready` answering
    /// 503 before it stops accepting, so that a load balancer polling
    /// `/ready` takes it out of rotation first. Defaults to 2000.
    pub shutdown_delay_ms: u64,
    /// Take the client address from the leftmost `X-Forwarded-For` entry
    /// instead of the TCP peer. Only for ingest behind a proxy that sets the
    /// header (nginx, a load balancer); a client could forge it otherwise.
    /// Defaults to false.
    pub trust_forwarded_for: bool,
    /// Refuse keys and projects that are not known (Cyclops
    /// `RESTRICT_API_ACCESS`). Defaults to true.
    pub restrict_api_access: bool,
    /// Seconds between reloads of the keys from Sentry's database (Cyclops
    /// `UPDATE_PERIOD`). Defaults to 120.
    pub update_period_secs: u64,
    /// PostgreSQL URL of Sentry's own database, whose `sentry_projectkey`
    /// table supplies keys beside `[[projects]]`. Unset (the default): only
    /// `[[projects]]`.
    /// Never logged (it may hold a password).
    #[serde(deserialize_with = "crate::secret::empty_is_none")]
    pub sentry_database_url: Option<crate::secret::Secret>,
    /// Largest event (a store body, an envelope's event item) after
    /// decompression, as Sentry's 1 MiB. Defaults to 1048576.
    pub max_event_bytes: usize,
    /// Largest envelope after decompression; also the largest body as
    /// received. Defaults to 20971520 (20 MiB).
    pub max_envelope_bytes: usize,
    /// Memory budget of the requests being handled at once: each body is
    /// charged as its bytes arrive, and its decoded copy as decoding
    /// produces it. Defaults to 268435456 (256 MiB).
    pub max_in_flight_bytes: usize,
    /// Longest a request waits for room in `max_in_flight_bytes` before it
    /// is answered 503 with `Retry-After`. Defaults to 2000.
    pub in_flight_wait_ms: u64,
    /// Most of `max_in_flight_bytes` one client address may hold at once,
    /// in percent; past it, its requests are answered 503. Must leave room
    /// for one compressed envelope and its decoded copy (twice
    /// `max_envelope_bytes`). Defaults to 25.
    pub in_flight_client_percent: u8,
    /// When an SDK gets its 200: `acknowledged` (Kafka has the event,
    /// `acks=all`) or `enqueue` (queued in this process's producer — lower
    /// latency, but an event is lost if the process dies before Kafka has it).
    /// Defaults to `acknowledged`.
    pub ack: AckMode,
    /// `[ingest.connections]`
    pub connections: ConnectionsConfig,
    /// `[ingest.flood]`
    pub flood: FloodConfig,
    /// `[ingest.sampling]`
    pub sampling: SamplingConfig,
    /// `[ingest.spool]`
    pub spool: SpoolConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 3000,
            healthcheck_text: "WORKING".into(),
            drain_timeout_secs: 10,
            produce_timeout_ms: 5000,
            shutdown_delay_ms: 2000,
            trust_forwarded_for: false,
            restrict_api_access: true,
            update_period_secs: 120,
            sentry_database_url: None,
            max_event_bytes: 1 << 20,
            max_envelope_bytes: 20 << 20,
            max_in_flight_bytes: 256 << 20,
            in_flight_wait_ms: 2000,
            in_flight_client_percent: 25,
            ack: AckMode::Acknowledged,
            connections: ConnectionsConfig::default(),
            flood: FloodConfig::default(),
            sampling: SamplingConfig::default(),
            spool: SpoolConfig::default(),
        }
    }
}

/// When ingest answers 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After Kafka acknowledged the event (`acks=all`).
    Acknowledged,
    /// Once the event is queued in the producer.
    Enqueue,
}

/// `[ingest.connections]`: what a client may hold of the listener. Every
/// limit is counted when hit (`cyclops_ingest_limit_hits_total`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Most connections open at once; one more is answered 503 and closed.
    /// The process's file-descriptor limit is raised to its hard limit at
    /// start; keep this well under it. Defaults to 4096.
    pub max_connections: usize,
    /// Longest a client may take to send a request's head (request line and
    /// headers), from its connection or from its first byte on a kept-alive
    /// connection. Defaults to 10000.
    pub request_head_timeout_ms: u64,
    /// Longest a client may take to send a whole body (not per chunk);
    /// past it the request is answered 408. Defaults to 60000.
    pub body_timeout_ms: u64,
    /// Longest a kept-alive connection may wait for its next request.
    /// Longer than a load balancer's own idle timeout (60 s on AWS), so that
    /// the balancer, not ingest, closes idle connections. Defaults to 75000.
    pub keepalive_idle_timeout_ms: u64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            request_head_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            keepalive_idle_timeout_ms: 75_000,
        }
    }
}

/// `[ingest.flood]`: the flood filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Events of one fingerprint passed per window (Cyclops
    /// `MAX_CACHE_USES`). Defaults to 10.
    pub max_uses: u64,
    /// The window in seconds (Cyclops `URL_CACHE_EXPIRATION`); 0 turns the
    /// filter off. Defaults to 1.
    pub window_secs: u64,
    /// Flooding fingerprints `/floods` keeps, over all projects; when full,
    /// the one with the fewest drops gives way. 0 turns the report off.
    /// Defaults to 1000.
    pub report_max_fingerprints: usize,
    /// `/floods` forgets a fingerprint not dropped for this long, in
    /// seconds. Defaults to 3600.
    pub report_window_secs: u64,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self { max_uses: 10, window_secs: 1, report_max_fingerprints: 1000, report_window_secs: 3600 }
    }
}

/// `[ingest.sampling]`: dropping a share of a project's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Project id → percentage of its events to drop, 0 to 100 (Cyclops
    /// `IGNORE_PERCENTAGE`). Defaults to none.
    pub ignore_percentage: BTreeMap<String, f64>,
}

impl SamplingConfig {
    /// The percentage to drop for `project`, 0 when none is set.
    pub fn percent_for(&self, project: u64) -> f64 {
        self.ignore_percentage.get(&project.to_string()).copied().unwrap_or(0.0)
    }
}

/// `[ingest.spool]`: the local, fsynced store of events Kafka could not
/// take, drained back into Kafka as soon as it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Spool events when Kafka refuses them or does not acknowledge them
    /// within `ingest.produce_timeout_ms`, instead of answering 503.
    /// Defaults to true.
    pub enabled: bool,
    /// Directory of this instance's spool (a SQLite database and a lock
    /// file); `{port}` stands for the port ingest listens on, so that
    /// several instances on one host each get their own. Relative paths are
    /// under the working directory. Created at start; a second process on
    /// the same directory is refused. Defaults to `cyclops-spool/{port}`.
    pub dir: String,
    /// Most bytes of records (topic, key, headers and value) the spool
    /// holds; past it, events Kafka cannot take are refused with 503.
    /// Defaults to 1073741824 (1 GiB).
    pub max_bytes: u64,
    /// Age in seconds past which a spooled record is reported (log,
    /// `/ready`); it is still drained, never deleted. Defaults to 604800
    /// (7 days).
    pub max_age_secs: u64,
    /// Most records made durable by one fsync (group commit: concurrent
    /// requests share one). Defaults to 1024.
    pub batch_max_records: usize,
    /// Microseconds a commit waits for more records before its fsync, so
    /// that a busy spool makes fewer, larger commits (as the producer's
    /// `linger.ms`); 0 commits at once. Defaults to 1000.
    pub commit_delay_us: u64,
    /// Records the drainer re-produces at once. Defaults to 256.
    pub drain_batch_records: usize,
    /// Longest wait between two drain attempts while Kafka does not take
    /// records (the wait doubles from 100 ms up to this). Defaults to 5000.
    pub drain_retry_max_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: "cyclops-spool/{port}".into(),
            max_bytes: 1 << 30,
            max_age_secs: 7 * 86_400,
            batch_max_records: 1024,
            commit_delay_us: 1000,
            drain_batch_records: 256,
            drain_retry_max_ms: 5000,
        }
    }
}

impl SpoolConfig {
    /// The spool directory for an instance listening on `port`.
    pub fn dir_for(&self, port: u16) -> std::path::PathBuf {
        std::path::PathBuf::from(self.dir.replace("{port}", &port.to_string()))
    }
}

impl IngestConfig {
    /// Checks what types alone cannot; an error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.flood.max_uses == 0 {
            return Err(key_error(
                "ingest.flood.max_uses",
                "must be at least 1 (use window_secs = 0 to turn the filter off)",
            ));
        }
        if self.flood.window_secs > 86_400 {
            return Err(key_error("ingest.flood.window_secs", "must be at most 86400 seconds"));
        }
        for (project, percent) in &self.sampling.ignore_percentage {
            if ProjectId::parse_canonical(project).is_none() {
                return Err(key_error("ingest.sampling.ignore_percentage", format!("{project:?} is not a project id")));
            }
            if !(0.0..=100.0).contains(percent) {
                return Err(key_error(
                    "ingest.sampling.ignore_percentage",
                    format!("project {project}: {percent} is not a percentage from 0 to 100"),
                ));
            }
        }
        // Kafka must take the largest body in one record; 100 MiB is far past any sane broker limit.
        if !(1024..=100 << 20).contains(&self.max_envelope_bytes) {
            return Err(key_error("ingest.max_envelope_bytes", "must be between 1024 and 104857600 bytes"));
        }
        if self.max_event_bytes < 1024 || self.max_event_bytes > self.max_envelope_bytes {
            return Err(key_error(
                "ingest.max_event_bytes",
                "must be between 1024 bytes and ingest.max_envelope_bytes",
            ));
        }
        if self.max_in_flight_bytes < self.max_envelope_bytes {
            return Err(key_error("ingest.max_in_flight_bytes", "must be at least ingest.max_envelope_bytes"));
        }
        if !(1..=100).contains(&self.in_flight_client_percent) {
            return Err(key_error("ingest.in_flight_client_percent", "must be between 1 and 100"));
        }
        if self.max_in_flight_bytes / 100 * usize::from(self.in_flight_client_percent) < 2 * self.max_envelope_bytes {
            return Err(key_error(
                "ingest.in_flight_client_percent",
                "must leave one client room for a compressed envelope and its decoded copy (twice \
                 ingest.max_envelope_bytes of ingest.max_in_flight_bytes)",
            ));
        }
        if !(1..=600_000).contains(&self.in_flight_wait_ms) {
            return Err(key_error("ingest.in_flight_wait_ms", "must be between 1 and 600000 milliseconds"));
        }
        let c = &self.connections;
        if !(1..=1_000_000).contains(&c.max_connections) {
            return Err(key_error("ingest.connections.max_connections", "must be between 1 and 1000000"));
        }
        for (key, ms) in [
            ("ingest.connections.request_head_timeout_ms", c.request_head_timeout_ms),
            ("ingest.connections.body_timeout_ms", c.body_timeout_ms),
            ("ingest.connections.keepalive_idle_timeout_ms", c.keepalive_idle_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return Err(key_error(key, "must be between 100 and 3600000 milliseconds"));
            }
        }
        if self.update_period_secs == 0 || self.update_period_secs > 86_400 {
            return Err(key_error("ingest.update_period_secs", "must be between 1 and 86400 seconds"));
        }
        if let Some(url) = &self.sentry_database_url
            && !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://"))
        {
            return Err(key_error("ingest.sentry_database_url", "must be a postgres:// or postgresql:// URL"));
        }
        let spool = &self.spool;
        if spool.enabled && spool.dir.trim().is_empty() {
            return Err(key_error("ingest.spool.dir", "must not be empty"));
        }
        // One record must fit, or every spooled event would be refused.
        if spool.max_bytes < 2 * self.max_envelope_bytes as u64 {
            return Err(key_error("ingest.spool.max_bytes", "must be at least twice ingest.max_envelope_bytes"));
        }
        if spool.max_age_secs == 0 {
            return Err(key_error("ingest.spool.max_age_secs", "must be greater than 0"));
        }
        if !(1..=100_000).contains(&spool.batch_max_records) {
            return Err(key_error("ingest.spool.batch_max_records", "must be between 1 and 100000"));
        }
        if spool.commit_delay_us > 100_000 {
            return Err(key_error("ingest.spool.commit_delay_us", "must be at most 100000 microseconds"));
        }
        if !(1..=10_000).contains(&spool.drain_batch_records) {
            return Err(key_error("ingest.spool.drain_batch_records", "must be between 1 and 10000"));
        }
        if !(100..=600_000).contains(&spool.drain_retry_max_ms) {
            return Err(key_error("ingest.spool.drain_retry_max_ms", "must be between 100 and 600000 milliseconds"));
        }
        if self.produce_timeout_ms == 0 || self.produce_timeout_ms > 600_000 {
            return Err(key_error(
                "ingest.produce_timeout_ms",
                format!("must be between 1 and 600000 milliseconds, got {}", self.produce_timeout_ms),
            ));
        }
        if self.shutdown_delay_ms > 600_000 {
            return Err(key_error("ingest.shutdown_delay_ms", "must be at most 600000 milliseconds"));
        }
        if self.drain_timeout_secs == 0 || self.drain_timeout_secs > 3600 {
            return Err(key_error(
                "ingest.drain_timeout_secs",
                format!("must be between 1 and 3600 seconds, got {}", self.drain_timeout_secs),
            ));
        }
        Ok(())
    }
}
