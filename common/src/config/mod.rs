//! The one configuration both services read.
//!
//! A TOML file (`--conf PATH`), overridden by `CYCLOPS__SECTION__KEY`
//! environment variables, overridden by command-line flags. Every key has a
//! default, documented on its field and in `default-config.toml` (which
//! `cyclops-ingest init` writes); unknown keys and bad values fail at start
//! with the key's name. Key names are a public contract: rename nothing.

mod forwarder;
mod ingest;
mod kafka;
mod load;

use serde::{Deserialize, Serialize};

use self::load::key_error;
use crate::secret::Secret;

pub use forwarder::{ForwarderConfig, PacingMode};
pub use ingest::{AckMode, ConnectionsConfig, FloodConfig, IngestConfig, SamplingConfig, SpoolConfig};
pub use kafka::{KafkaConfig, SaslMechanism, SecurityProtocol};
pub use load::{ConfigError, Overrides, Service, load, load_from_str};

/// The commented default configuration, as written by `cyclops-ingest init`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default-config.toml");

/// The whole configuration. Sections mirror the TOML tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where events are stored between ingest and forwarder.
    pub kafka: KafkaConfig,
    /// Shared state for the flood filter.
    pub redis: RedisConfig,
    /// The Sentry that the forwarder delivers to.
    pub sentry: SentryConfig,
    /// Static project keys (Cyclops `PROJECT_KEYS`).
    pub projects: Vec<ProjectKey>,
    /// The HTTP service that SDKs talk to.
    pub ingest: IngestConfig,
    /// The Kafka consumer that delivers to Sentry.
    pub forwarder: ForwarderConfig,
}

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` of the Redis that holds the flood-filter
    /// counters shared by every ingest instance. Unset (the default): each
    /// instance counts in process. An empty value (say, from
    /// `CYCLOPS__REDIS__URL=`) also means unset.
    /// A password in it (`redis://:PASSWORD@host:6379/0`) is never logged;
    /// `rediss://` connects over TLS.
    #[serde(deserialize_with = "crate::secret::empty_is_none")]
    pub url: Option<Secret>,
    /// PEM file of the CA that signed a `rediss://` server's certificate.
    /// Unset (the default): the system's CAs.
    #[serde(deserialize_with = "empty_is_none")]
    pub tls_ca_location: Option<String>,
    /// Prefix of the flood-filter keys, so that several farms can share one
    /// Redis. Defaults to `cyclops:flood:`.
    pub key_prefix: String,
    /// Longest wait for Redis on the request path; past it the event is
    /// counted in process instead. Defaults to 50.
    pub timeout_ms: u64,
}

impl RedisConfig {
    /// Checks what types alone cannot; an error names the key.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            // The schemes the redis crate connects to; the URL may hold a
            // password: the error shows it redacted.
            url::Url::parse(url.expose())
                .ok()
                .filter(|u| {
                    matches!(
                        u.scheme(),
                        "redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys" | "valkey+unix"
                    )
                })
                .ok_or_else(|| {
                    key_error("redis.url", format!("not a redis:// or rediss:// URL: {}", url.redacted_url()))
                })?;
        }
        if let Some(path) = &self.tls_ca_location {
            if !self.url.as_ref().is_some_and(|u| u.expose().starts_with("rediss://")) {
                return Err(key_error("redis.tls_ca_location", "is only used with a rediss:// redis.url"));
            }
            std::fs::File::open(path)
                .map_err(|e| key_error("redis.tls_ca_location", format!("cannot read {path:?}: {e}")))?;
        }
        if self.key_prefix.is_empty() {
            return Err(key_error("redis.key_prefix", "must not be empty"));
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return Err(key_error("redis.timeout_ms", "must be between 1 and 10000 milliseconds"));
        }
        Ok(())
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, tls_ca_location: None, key_prefix: "cyclops:flood:".into(), timeout_ms: 50 }
    }
}

/// An optional string where `""` means absent, so that an environment
/// variable can unset a key the file sets.
pub(crate) fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// `[sentry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentryConfig {
    /// Base URL of the Sentry the forwarder delivers to (Cyclops
    /// `SENTRY_BASE_URL`). Defaults to `http://127.0.0.1:9000`.
    pub base_url: String,
}

impl SentryConfig {
    /// Checks what types alone cannot; an error names the key.
    fn validate(&self) -> Result<(), ConfigError> {
        let base = &self.base_url;
        let parsed = url::Url::parse(base).map_err(|e| key_error("sentry.base_url", format!("{e}: {base:?}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(key_error("sentry.base_url", format!("must be an http(s) URL with a host, got {base:?}")));
        }
        Ok(())
    }
}

impl Default for SentryConfig {
    fn default() -> Self {
        Self { base_url: "http://127.0.0.1:9000".into() }
    }
}

/// One `[[projects]]` entry: a DSN key that ingest accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectKey {
    /// Sentry's numeric project id.
    pub id: u64,
    /// The DSN's public key (`sentry_key`).
    pub public_key: String,
    /// The DSN's secret key (`sentry_secret`), for SDKs that still send one.
    /// Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
}

/// Checks `[[projects]]`: ids from 1 to `i64::MAX`, alphanumeric keys, each key once.
fn validate_projects(projects: &[ProjectKey]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, p) in projects.iter().enumerate() {
        if p.id == 0 || p.id > i64::MAX as u64 {
            return Err(key_error(
                &format!("projects[{i}].id"),
                "project ids start at 1 and are at most 9223372036854775807 (Sentry's are signed 64-bit)",
            ));
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
    Ok(())
}

/// Writes [`DEFAULT_CONFIG_TOML`] to `path`; refuses to overwrite a file.
pub fn write_default(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
    file.write_all(DEFAULT_CONFIG_TOML.as_bytes())
}

/// Room for a record's headers and framing beyond its body.
const RECORD_OVERHEAD_BYTES: usize = 1 << 20;

impl Config {
    /// The largest Kafka record either service writes: the largest body
    /// ingest accepts plus room for headers and framing. Project topics and
    /// the dead-letter topic are created with it as `max.message.bytes`, so
    /// that a record accepted once can always be dead-lettered.
    pub fn max_record_bytes(&self) -> usize {
        self.ingest.max_envelope_bytes + RECORD_OVERHEAD_BYTES
    }

    /// The dead-letter topic: `forwarder.deadletter_topic`, or
    /// `{kafka.topic_prefix}deadletter` when that is empty.
    pub fn deadletter_topic(&self) -> String {
        if self.forwarder.deadletter_topic.is_empty() {
            format!("{}deadletter", self.kafka.topic_prefix)
        } else {
            self.forwarder.deadletter_topic.clone()
        }
    }
}

#[cfg(test)]
mod tests;
