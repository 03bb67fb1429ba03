//! Loading and validating [`Config`]: file, then environment, then flags.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};

use super::Config;

/// Prefix of the environment variables that override keys:
/// `CYCLOPS__SECTION__KEY`.
pub const ENV_PREFIX: &str = "CYCLOPS";

/// Why a configuration was refused. Each variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable or not valid TOML.
    #[error("cannot read configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    /// A key is unknown, has the wrong type, or fails validation.
    #[error("invalid configuration key `{key}`: {message}")]
    Key { key: String, message: String },
    /// The layers could not be merged (for example an environment variable
    /// that is not valid for its key).
    #[error("invalid configuration: {0}")]
    Merge(String),
}

/// Which service is reading the configuration; flags apply to its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingest,
    Forwarder,
}

/// Command-line flags, the highest layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind`: `{service}.bind`.
    pub bind: Option<IpAddr>,
    /// `--port`: `{service}.port`.
    pub port: Option<u16>,
}

/// Loads the configuration for `service`: defaults, then the TOML file at
/// `path` (when given), then the `CYCLOPS__…` entries of `env`, then `flags`.
///
/// `env` is passed in rather than read here so that tests never touch the
/// process environment; `main` passes `std::env::vars()`.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    service: Service,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let file = match path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?,
        ),
        None => None,
    };
    let mut config = merge(file.as_deref(), path, env)?;
    apply_flags(&mut config, service, flags);
    validate(&config)?;
    Ok(config)
}

/// Loads a configuration from TOML text alone (no environment, no flags).
pub fn load_from_str(toml: &str) -> Result<Config, ConfigError> {
    let config = merge(Some(toml), None, std::iter::empty())?;
    validate(&config)?;
    Ok(config)
}

fn merge(
    file: Option<&str>,
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.map_or_else(|| PathBuf::from("<text>"), Path::to_owned),
        message,
    };
    // Parse the file ourselves first: the `config` crate's TOML errors lose
    // the line number.
    if let Some(text) = file {
        toml::from_str::<toml::Table>(text).map_err(|e| file_error(e.to_string()))?;
    }
    let env: HashMap<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__"))).collect();
    let mut builder = config::Config::builder();
    if let Some(text) = file {
        builder = builder.add_source(File::from_str(text, FileFormat::Toml));
    }
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX).prefix_separator("__").separator("__").try_parsing(true).source(Some(env)),
    );
    let merged = builder.build().map_err(|e| ConfigError::Merge(e.to_string()))?;
    // serde_path_to_error names the exact key of a bad or unknown field; the
    // config crate's own deserializer turns the environment's strings into
    // numbers where a key wants one, and numbers back into strings.
    serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Key { key, message: e.inner().to_string() }
    })
}

fn apply_flags(config: &mut Config, service: Service, flags: &Overrides) {
    let (bind, port) = match service {
        Service::Ingest => (&mut config.ingest.bind, &mut config.ingest.port),
        Service::Forwarder => (&mut config.forwarder.bind, &mut config.forwarder.port),
    };
    if let Some(b) = flags.bind {
        *bind = b;
    }
    if let Some(p) = flags.port {
        *port = p;
    }
}

pub(super) fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.into(), message: message.into() }
}

fn validate_ingest(ingest: &super::IngestConfig) -> Result<(), ConfigError> {
    if ingest.flood.max_uses == 0 {
        return Err(key_error(
            "ingest.flood.max_uses",
            "must be at least 1 (use window_secs = 0 to turn the filter off)",
        ));
    }
    if ingest.flood.window_secs > 86_400 {
        return Err(key_error("ingest.flood.window_secs", "must be at most 86400 seconds"));
    }
    for (project, percent) in &ingest.sampling.ignore_percentage {
        let canonical = !project.is_empty() && project.bytes().all(|b| b.is_ascii_digit()) && !project.starts_with('0');
        if !canonical || project.parse::<u64>().is_err() {
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
    if !(1024..=100 << 20).contains(&ingest.max_envelope_bytes) {
        return Err(key_error("ingest.max_envelope_bytes", "must be between 1024 and 104857600 bytes"));
    }
    if ingest.max_event_bytes < 1024 || ingest.max_event_bytes > ingest.max_envelope_bytes {
        return Err(key_error("ingest.max_event_bytes", "must be between 1024 bytes and ingest.max_envelope_bytes"));
    }
    if ingest.max_in_flight_bytes < ingest.max_envelope_bytes {
        return Err(key_error("ingest.max_in_flight_bytes", "must be at least ingest.max_envelope_bytes"));
    }
    if !(1..=100).contains(&ingest.in_flight_client_percent) {
        return Err(key_error("ingest.in_flight_client_percent", "must be between 1 and 100"));
    }
    if ingest.max_in_flight_bytes / 100 * usize::from(ingest.in_flight_client_percent) < 2 * ingest.max_envelope_bytes {
        return Err(key_error(
            "ingest.in_flight_client_percent",
            "must leave one client room for a compressed envelope and its decoded copy (twice \
             ingest.max_envelope_bytes of ingest.max_in_flight_bytes)",
        ));
    }
    if !(1..=600_000).contains(&ingest.in_flight_wait_ms) {
        return Err(key_error("ingest.in_flight_wait_ms", "must be between 1 and 600000 milliseconds"));
    }
    let c = &ingest.connections;
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
    if ingest.update_period_secs == 0 || ingest.update_period_secs > 86_400 {
        return Err(key_error("ingest.update_period_secs", "must be between 1 and 86400 seconds"));
    }
    if let Some(url) = &ingest.sentry_database_url
        && !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://"))
    {
        return Err(key_error("ingest.sentry_database_url", "must be a postgres:// or postgresql:// URL"));
    }
    let spool = &ingest.spool;
    if spool.enabled && spool.dir.trim().is_empty() {
        return Err(key_error("ingest.spool.dir", "must not be empty"));
    }
    // One record must fit, or every spooled event would be refused.
    if spool.max_bytes < 2 * ingest.max_envelope_bytes as u64 {
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
    Ok(())
}

/// Checks what types alone cannot.
fn validate(config: &Config) -> Result<(), ConfigError> {
    super::kafka::validate(&config.kafka)?;
    if let Some(url) = &config.redis.url {
        // The schemes the redis crate connects to; the URL may hold a
        // password: the error shows it redacted.
        url::Url::parse(url.expose())
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys" | "valkey+unix")
            })
            .ok_or_else(|| {
                key_error("redis.url", format!("not a redis:// or rediss:// URL: {}", url.redacted_url()))
            })?;
    }
    if let Some(path) = &config.redis.tls_ca_location {
        if !config.redis.url.as_ref().is_some_and(|u| u.expose().starts_with("rediss://")) {
            return Err(key_error("redis.tls_ca_location", "is only used with a rediss:// redis.url"));
        }
        std::fs::File::open(path)
            .map_err(|e| key_error("redis.tls_ca_location", format!("cannot read {path:?}: {e}")))?;
    }
    if config.redis.key_prefix.is_empty() {
        return Err(key_error("redis.key_prefix", "must not be empty"));
    }
    if !(1..=10_000).contains(&config.redis.timeout_ms) {
        return Err(key_error("redis.timeout_ms", "must be between 1 and 10000 milliseconds"));
    }
    validate_ingest(&config.ingest)?;
    let base = &config.sentry.base_url;
    let parsed = url::Url::parse(base).map_err(|e| key_error("sentry.base_url", format!("{e}: {base:?}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(key_error("sentry.base_url", format!("must be an http(s) URL with a host, got {base:?}")));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in config.projects.iter().enumerate() {
        if p.id == 0 {
            return Err(key_error(&format!("projects[{i}].id"), "project ids start at 1"));
        }
        if p.public_key.is_empty() || !p.public_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(key_error(
                &format!("projects[{i}].public_key"),
                format!("must be non-empty and alphanumeric, got {:?}", p.public_key),
            ));
        }
        if !seen.insert(p.public_key.as_str()) {
            return Err(key_error(
                &format!("projects[{i}].public_key"),
                format!("key {:?} is listed twice; a key belongs to one project", p.public_key),
            ));
        }
    }
    if !(1..=3600).contains(&config.forwarder.topic_refresh_secs) {
        return Err(key_error("forwarder.topic_refresh_secs", "must be between 1 and 3600 seconds"));
    }
    if let Some(bad) = config.forwarder.dead_letter_statuses.iter().find(|s| !(400..=499).contains(*s) || **s == 429) {
        return Err(key_error(
            "forwarder.dead_letter_statuses",
            format!("{bad} is not a 4xx status that means \"never again\" (429 is a rate limit)"),
        ));
    }
    let dlq = &config.forwarder.deadletter_topic;
    if !dlq.is_empty() && !dlq.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(key_error("forwarder.deadletter_topic", format!("not a valid Kafka topic name: {dlq:?}")));
    }
    validate_forwarder(&config.forwarder)?;
    let group = &config.forwarder.group_id;
    if group.is_empty() || group.len() > 200 {
        return Err(key_error("forwarder.group_id", "must be 1 to 200 characters"));
    }
    for (key, ms) in [
        ("ingest.produce_timeout_ms", config.ingest.produce_timeout_ms),
        ("forwarder.request_timeout_ms", config.forwarder.request_timeout_ms),
    ] {
        if ms == 0 || ms > 600_000 {
            return Err(key_error(key, format!("must be between 1 and 600000 milliseconds, got {ms}")));
        }
    }
    if config.ingest.shutdown_delay_ms > 600_000 {
        return Err(key_error("ingest.shutdown_delay_ms", "must be at most 600000 milliseconds"));
    }
    for (key, secs) in [
        ("ingest.drain_timeout_secs", config.ingest.drain_timeout_secs),
        ("forwarder.drain_timeout_secs", config.forwarder.drain_timeout_secs),
    ] {
        if secs == 0 || secs > 3600 {
            return Err(key_error(key, format!("must be between 1 and 3600 seconds, got {secs}")));
        }
    }
    Ok(())
}

fn validate_forwarder(f: &super::ForwarderConfig) -> Result<(), ConfigError> {
    if !(1000..=3_600_000).contains(&f.session_timeout_ms) {
        return Err(key_error("forwarder.session_timeout_ms", "must be between 1000 and 3600000"));
    }
    if f.concurrency_min == 0 {
        return Err(key_error("forwarder.concurrency_min", "must be at least 1"));
    }
    if f.concurrency_max < f.concurrency_min || f.concurrency_max > 10_000 {
        return Err(key_error("forwarder.concurrency_max", "must be between concurrency_min and 10000"));
    }
    if !(f.concurrency_min..=f.concurrency_max).contains(&f.concurrency_initial) {
        return Err(key_error("forwarder.concurrency_initial", "must be between concurrency_min and concurrency_max"));
    }
    if !(1..=1_000_000).contains(&f.max_requests_to_average) {
        return Err(key_error("forwarder.max_requests_to_average", "must be between 1 and 1000000"));
    }
    if f.jump_threshold_events == 0 {
        return Err(key_error("forwarder.jump_threshold_events", "must be at least 1"));
    }
    if !(1..=100).contains(&f.backfill_share_percent) {
        return Err(key_error("forwarder.backfill_share_percent", "must be between 1 and 100"));
    }
    for (project, weight) in &f.project_weights {
        let canonical = !project.is_empty() && project.bytes().all(|b| b.is_ascii_digit()) && !project.starts_with('0');
        if !canonical || project.parse::<u64>().is_err() {
            return Err(key_error("forwarder.project_weights", format!("{project:?} is not a project id")));
        }
        if !(1..=1000).contains(weight) {
            return Err(key_error("forwarder.project_weights", format!("project {project}: weight must be 1 to 1000")));
        }
    }
    if !(1..=1_000_000).contains(&f.buffer_events_per_partition) {
        return Err(key_error("forwarder.buffer_events_per_partition", "must be between 1 and 1000000"));
    }
    if !(10..=60_000).contains(&f.commit_interval_ms) {
        return Err(key_error("forwarder.commit_interval_ms", "must be between 10 and 60000"));
    }
    if f.retry_initial_ms == 0 {
        return Err(key_error("forwarder.retry_initial_ms", "must be at least 1"));
    }
    if f.retry_max_ms < f.retry_initial_ms {
        return Err(key_error("forwarder.retry_max_ms", "must be at least retry_initial_ms"));
    }
    if f.max_hold_secs == 0 {
        return Err(key_error("forwarder.max_hold_secs", "must be at least 1"));
    }
    if f.breaker_max_probe_secs == 0 {
        return Err(key_error("forwarder.breaker_max_probe_secs", "must be at least 1"));
    }
    Ok(())
}
