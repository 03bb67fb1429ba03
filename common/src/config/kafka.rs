//! `[kafka]`: where events are stored, how to reach and log in to the
//! cluster, and how the topics Cyclops creates are replicated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::load::key_error;
use super::{ConfigError, empty_is_none};
use crate::secret::{self, Secret};

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`. Defaults to `127.0.0.1:9092`.
    pub brokers: String,
    /// Each project's events go to the topic `{topic_prefix}{project_id}`.
    /// Defaults to `cyclops-events-`.
    pub topic_prefix: String,
    /// How long a metadata request (readiness, startup checks) may take.
    /// Defaults to 2000.
    pub metadata_timeout_ms: u64,
    /// Partitions of the topics Cyclops creates; the forwarders of one group
    /// share a topic's events by partition. Defaults to 4.
    pub topic_partitions: i32,
    /// Replication factor of the topics Cyclops creates (project topics, the
    /// dead-letter topic). Defaults to 1 (one broker); use 3 on a production
    /// cluster. At start each service warns, naming the topic, about an
    /// existing topic with fewer replicas.
    pub topic_replication_factor: i32,
    /// `min.insync.replicas` of the topics Cyclops creates: how many replicas
    /// must have an event before Kafka acknowledges it (`acks=all`). Unset
    /// (the default): the broker's own default. Use 2 with a replication
    /// factor of 3.
    pub topic_min_insync_replicas: Option<i32>,
    /// `plaintext` (the default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with a `sasl_*`
    /// protocol. Unset by default.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// The SASL user; required with a `sasl_*` protocol.
    #[serde(deserialize_with = "empty_is_none")]
    pub sasl_username: Option<String>,
    /// The SASL password; required with a `sasl_*` protocol. Never logged.
    #[serde(deserialize_with = "secret::empty_is_none")]
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA that signed the brokers' certificates. Unset: the
    /// system's CAs (right for managed clusters with public certificates).
    #[serde(deserialize_with = "empty_is_none")]
    pub ssl_ca_location: Option<String>,
    /// PEM client certificate, for clusters that authenticate clients by
    /// TLS certificate (mTLS); needs `ssl_key_location`.
    #[serde(deserialize_with = "empty_is_none")]
    pub ssl_certificate_location: Option<String>,
    /// PEM private key of `ssl_certificate_location`.
    #[serde(deserialize_with = "empty_is_none")]
    pub ssl_key_location: Option<String>,
    /// Password of an encrypted `ssl_key_location`. Never logged.
    #[serde(deserialize_with = "secret::empty_is_none")]
    pub ssl_key_password: Option<Secret>,
    /// Any other librdkafka setting, passed to every client as written
    /// (`CYCLOPS__KAFKA__LIBRDKAFKA__SOCKET.KEEPALIVE.ENABLE` does not work:
    /// set these in the file). The keys Cyclops sets itself
    /// ([`crate::kafka::RESERVED_KEYS`]) are refused. Empty by default.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "cyclops-events-".into(),
            metadata_timeout_ms: 2000,
            topic_partitions: 4,
            topic_replication_factor: 1,
            topic_min_insync_replicas: None,
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// `kafka.security_protocol`, as librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `kafka.sasl_mechanism`, as librdkafka's `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Checks `[kafka]` beyond its types.
pub(super) fn validate(kafka: &KafkaConfig) -> Result<(), ConfigError> {
    let brokers = &kafka.brokers;
    if brokers.split(',').any(|b| {
        let b = b.trim();
        b.is_empty() || b.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    }) {
        return Err(key_error("kafka.brokers", format!("expected host:port[,host:port…], got {brokers:?}")));
    }
    let prefix = &kafka.topic_prefix;
    // Kafka topic names: [a-zA-Z0-9._-], at most 249 characters; leave room for a project id.
    if prefix.is_empty()
        || prefix.len() > 200
        || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(key_error(
            "kafka.topic_prefix",
            format!("must be 1 to 200 characters of [a-zA-Z0-9._-], got {prefix:?}"),
        ));
    }
    if kafka.metadata_timeout_ms == 0 {
        return Err(key_error("kafka.metadata_timeout_ms", "must be greater than 0"));
    }
    if !(1..=10_000).contains(&kafka.topic_partitions) {
        return Err(key_error("kafka.topic_partitions", "must be between 1 and 10000"));
    }
    if !(1..=32).contains(&kafka.topic_replication_factor) {
        return Err(key_error("kafka.topic_replication_factor", "must be between 1 and 32"));
    }
    if let Some(min_isr) = kafka.topic_min_insync_replicas
        && !(1..=kafka.topic_replication_factor).contains(&min_isr)
    {
        return Err(key_error(
            "kafka.topic_min_insync_replicas",
            format!(
                "must be between 1 and kafka.topic_replication_factor ({}): with more, no write would ever be \
                 acknowledged",
                kafka.topic_replication_factor
            ),
        ));
    }
    validate_security(kafka)?;
    for (key, value) in &kafka.librdkafka {
        crate::kafka::check_passthrough(key, value)
            .map_err(|why| key_error(&format!("kafka.librdkafka.{key}"), why))?;
    }
    Ok(())
}

fn validate_security(kafka: &KafkaConfig) -> Result<(), ConfigError> {
    let protocol = kafka.security_protocol;
    if protocol.uses_sasl() {
        if kafka.sasl_mechanism.is_none() {
            return Err(key_error("kafka.sasl_mechanism", "required with a sasl_* security_protocol"));
        }
        if kafka.sasl_username.is_none() {
            return Err(key_error("kafka.sasl_username", "required with a sasl_* security_protocol"));
        }
        if kafka.sasl_password.is_none() {
            return Err(key_error("kafka.sasl_password", "required with a sasl_* security_protocol"));
        }
    } else {
        let set = [
            ("kafka.sasl_mechanism", kafka.sasl_mechanism.is_some()),
            ("kafka.sasl_username", kafka.sasl_username.is_some()),
            ("kafka.sasl_password", kafka.sasl_password.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
            return Err(key_error(
                key,
                format!(
                    "is only used with security_protocol sasl_plaintext or sasl_ssl, not {}",
                    protocol.librdkafka_name()
                ),
            ));
        }
    }
    let files = [
        ("kafka.ssl_ca_location", &kafka.ssl_ca_location),
        ("kafka.ssl_certificate_location", &kafka.ssl_certificate_location),
        ("kafka.ssl_key_location", &kafka.ssl_key_location),
    ];
    for (key, path) in files {
        let Some(path) = path else { continue };
        if !protocol.uses_tls() {
            return Err(key_error(
                key,
                format!("is only used with security_protocol ssl or sasl_ssl, not {}", protocol.librdkafka_name()),
            ));
        }
        std::fs::File::open(path).map_err(|e| key_error(key, format!("cannot read {path:?}: {e}")))?;
    }
    if kafka.ssl_certificate_location.is_some() != kafka.ssl_key_location.is_some() {
        return Err(key_error(
            "kafka.ssl_key_location",
            "kafka.ssl_certificate_location and kafka.ssl_key_location go together (mTLS needs both)",
        ));
    }
    if kafka.ssl_key_password.is_some() && kafka.ssl_key_location.is_none() {
        return Err(key_error("kafka.ssl_key_password", "is only used with kafka.ssl_key_location"));
    }
    Ok(())
}
