//! The one place a librdkafka client is made: every producer, consumer and
//! admin client of both services (and of the tools and benchmarks) starts
//! from [`ClientBuilder::new`], so a `[kafka]` setting added once — brokers,
//! TLS, SASL, the `kafka.librdkafka` pass-through — reaches all of them.
//!
//! Also here: how a topic Cyclops creates is configured ([`TopicSpec`]), the
//! start-time check that existing topics are replicated as configured
//! ([`check_replication`]), and a client context ([`Context`]) that says
//! loudly when the cluster refuses our credentials, and remembers it for
//! `/ready`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, FromClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

use crate::config::KafkaConfig;

/// The librdkafka keys Cyclops sets itself, each with where its value comes
/// from. `kafka.librdkafka` may not set them: they carry either a typed
/// `[kafka]` key or a promise (a 200 means `acks=all`; offsets are committed
/// only after delivery).
pub const RESERVED_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers"),
    ("metadata.broker.list", "set kafka.brokers"),
    ("client.id", "names the Cyclops client in the broker's logs"),
    ("security.protocol", "set kafka.security_protocol"),
    ("sasl.mechanism", "set kafka.sasl_mechanism"),
    ("sasl.mechanisms", "set kafka.sasl_mechanism"),
    ("sasl.username", "set kafka.sasl_username"),
    ("sasl.password", "set kafka.sasl_password"),
    ("ssl.ca.location", "set kafka.ssl_ca_location"),
    ("ssl.certificate.location", "set kafka.ssl_certificate_location"),
    ("ssl.key.location", "set kafka.ssl_key_location"),
    ("ssl.key.password", "set kafka.ssl_key_password"),
    ("acks", "a 200 means every in-sync replica has the event"),
    ("request.required.acks", "a 200 means every in-sync replica has the event"),
    ("enable.idempotence", "retries must not duplicate or reorder events"),
    ("message.timeout.ms", "set ingest.produce_timeout_ms"),
    ("delivery.timeout.ms", "set ingest.produce_timeout_ms"),
    ("message.max.bytes", "follows ingest.max_envelope_bytes"),
    ("queue.buffering.max.kbytes", "follows ingest.max_envelope_bytes"),
    ("topic.metadata.propagation.max.ms", "follows ingest.produce_timeout_ms"),
    ("linger.ms", "an SDK waits for its event's acknowledgement: at most 1 ms of batching"),
    ("socket.nagle.disable", "an SDK waits for its event's acknowledgement: no Nagle delay"),
    ("group.id", "set forwarder.group_id"),
    ("enable.auto.commit", "offsets are committed only after delivery"),
    ("enable.auto.offset.store", "offsets are committed only after delivery"),
    ("auto.offset.reset", "a new group starts at the oldest event"),
    ("session.timeout.ms", "set forwarder.session_timeout_ms"),
    ("heartbeat.interval.ms", "follows forwarder.session_timeout_ms"),
    ("partition.assignment.strategy", "the forwarder assigns incrementally (cooperative-sticky)"),
    ("topic.metadata.refresh.interval.ms", "set forwarder.topic_refresh_secs"),
    ("statistics.interval.ms", "the forwarder's lag comes from these statistics"),
    ("queued.max.messages.kbytes", "bounds the forwarder's memory"),
    ("fetch.queue.backoff.ms", "the forwarder's read-ahead is small: it fetches again soon after it fills"),
];

/// Why `kafka.librdkafka` may not set `key`, if it may not.
pub fn reserved(key: &str) -> Option<&'static str> {
    RESERVED_KEYS.iter().find(|(k, _)| *k == key).map(|(_, why)| *why)
}

/// Whether a producer's delivery report says where Kafka wrote the record.
///
/// librdkafka's idempotent producer also reports success, without an offset,
/// for records it *infers* were written because a later record to the same
/// partition was (an "implicit ack"). The inference is wrong when a fresh
/// partition refused the first record ("not leader for partition") and then,
/// holding no state for this producer yet, took the second: the first was
/// never written (confluent-kafka-go#921; bursts at new topics lost events
/// answered 200 before ingest checked this). A record not `written` is sent
/// again: at worst a second copy, which Sentry drops by its event id.
pub fn written(delivery: &rdkafka::producer::future_producer::Delivery) -> bool {
    delivery.offset >= 0
}

/// A librdkafka client's configuration: `[kafka]`'s connection and security
/// settings and `kafka.librdkafka`, plus what the caller sets for its role.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: ClientConfig,
}

impl ClientBuilder {
    /// The settings every client shares; `client_id` names it in the
    /// broker's logs (`cyclops-ingest`, `cyclops-forwarder`, …).
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> Self {
        let mut config = ClientConfig::new();
        for (key, value) in &kafka.librdkafka {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &kafka.brokers).set("client.id", client_id);
        config.set("security.protocol", kafka.security_protocol.librdkafka_name());
        if let Some(mechanism) = kafka.sasl_mechanism {
            config.set("sasl.mechanism", mechanism.librdkafka_name());
        }
        if let Some(user) = &kafka.sasl_username {
            config.set("sasl.username", user);
        }
        if let Some(password) = &kafka.sasl_password {
            config.set("sasl.password", password.expose());
        }
        if kafka.security_protocol.uses_tls() {
            let files = [
                ("ssl.ca.location", &kafka.ssl_ca_location),
                ("ssl.certificate.location", &kafka.ssl_certificate_location),
                ("ssl.key.location", &kafka.ssl_key_location),
            ];
            for (key, path) in files {
                if let Some(path) = path {
                    config.set(key, path);
                }
            }
            if let Some(password) = &kafka.ssl_key_password {
                config.set("ssl.key.password", password.expose());
            }
        }
        Self { config }
    }

    /// Sets a key this client's role owns. Such keys are listed in
    /// [`RESERVED_KEYS`] (debug builds check it), so that no pass-through
    /// setting is silently overwritten.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        debug_assert!(reserved(key).is_some(), "{key} is set by Cyclops but not listed in RESERVED_KEYS");
        self.config.set(key, value);
        self
    }

    /// Quieter librdkafka logging for this client (readiness probes).
    pub fn log_level(mut self, level: RDKafkaLogLevel) -> Self {
        self.config.set_log_level(level);
        self
    }

    /// The client, with a [`Context`] that reports credential failures.
    pub fn create<T: FromClientConfigAndContext<Context>>(&self) -> KafkaResult<T> {
        self.config.create_with_context(Context::default())
    }

    /// The client with a context of the caller's (which should pass its
    /// `error` calls to [`Context::error`]).
    pub fn create_with_context<C: ClientContext, T: FromClientConfigAndContext<C>>(
        &self,
        context: C,
    ) -> KafkaResult<T> {
        self.config.create_with_context(context)
    }

    /// A client with librdkafka's default context (tools, tests).
    pub fn create_plain<T: FromClientConfig>(&self) -> KafkaResult<T> {
        self.config.create()
    }

    /// The librdkafka configuration itself, for a tool or benchmark that
    /// tunes a client of its own (a bulk loader) beyond the reserved keys.
    pub fn into_client_config(self) -> ClientConfig {
        self.config
    }

    /// The configuration as librdkafka will see it.
    pub fn client_config(&self) -> &ClientConfig {
        &self.config
    }
}

/// Checks one `kafka.librdkafka` entry the way librdkafka will: an unknown
/// key or a bad value is refused with librdkafka's own words.
pub fn check_passthrough(key: &str, value: &str) -> Result<(), String> {
    if let Some(why) = reserved(key) {
        return Err(format!("Cyclops sets {key} itself ({why})"));
    }
    ClientConfig::new().set(key, value).create_native_config().map(|_| ()).map_err(|e| match e {
        KafkaError::ClientConfig(_, message, _, _) => message,
        other => other.to_string(),
    })
}

/// How long a credential failure keeps `/ready` saying so after the last
/// report of it: librdkafka reports each failed reconnect, at most
/// `reconnect.backoff.max.ms` (10 s) apart.
const CREDENTIAL_FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// A client context that logs librdkafka's errors and remembers the last
/// time the cluster refused our credentials or our TLS handshake failed:
/// librdkafka retries those forever, and a log line per retry is all an
/// operator would otherwise get.
#[derive(Debug, Clone, Default)]
pub struct Context {
    credentials: Arc<Mutex<Option<(Instant, String)>>>,
}

impl Context {
    /// What failed, if the cluster refused our credentials or TLS
    /// recently; cleared by [`Self::connected`].
    pub fn credential_failure(&self) -> Option<String> {
        let last = self.credentials.lock().ok()?;
        last.as_ref().filter(|(at, _)| at.elapsed() < CREDENTIAL_FAILURE_MEMORY).map(|(_, why)| why.clone())
    }

    /// A request went through: whatever failed before is fixed.
    pub fn connected(&self) {
        if let Ok(mut last) = self.credentials.lock() {
            *last = None;
        }
    }

    /// Logs a client error; a refused login or failed TLS handshake is
    /// remembered and logged with what to check.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        match credential_problem(error, reason) {
            Some(fix) => {
                tracing::error!(error = %error, reason, fix, "Kafka refused this client's credentials or TLS");
                if let Ok(mut last) = self.credentials.lock() {
                    *last = Some((Instant::now(), format!("{reason} ({fix})")));
                }
            }
            None => tracing::error!(error = %error, reason, "librdkafka error"),
        }
    }
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        Context::error(self, &error, reason);
    }
}

impl ConsumerContext for Context {}

/// Delivery reports are not looked at: the producers that care use
/// `FutureProducer`, which wraps this context in its own.
impl rdkafka::producer::ProducerContext for Context {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// What to check, when `error` says our credentials or TLS setup is wrong.
fn credential_problem(error: &KafkaError, reason: &str) -> Option<&'static str> {
    let code = error.rdkafka_error_code();
    if code == Some(RDKafkaErrorCode::Authentication) || reason.contains("SASL authentication error") {
        return Some(
            "authentication failed: check kafka.sasl_username, kafka.sasl_password and kafka.sasl_mechanism \
             against the user the cluster has",
        );
    }
    if reason.contains("SSL handshake failed") || reason.contains("certificate verify failed") {
        return Some(
            "TLS handshake failed: check kafka.ssl_ca_location (the CA that signed the brokers' certificates) \
             and, for mTLS, kafka.ssl_certificate_location and kafka.ssl_key_location",
        );
    }
    if reason.contains("Unsupported SASL mechanism") {
        return Some("the broker does not offer this mechanism: check kafka.sasl_mechanism");
    }
    None
}

/// How every topic Cyclops creates is configured: `kafka.topic_partitions`,
/// `kafka.topic_replication_factor`, `kafka.topic_min_insync_replicas`, and
/// a `max.message.bytes` large enough for the largest record.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication: i32,
    settings: Vec<(&'static str, String)>,
}

impl TopicSpec {
    pub fn new(kafka: &KafkaConfig, max_message_bytes: usize) -> Self {
        let mut settings = vec![("max.message.bytes", max_message_bytes.to_string())];
        if let Some(min_isr) = kafka.topic_min_insync_replicas {
            settings.push(("min.insync.replicas", min_isr.to_string()));
        }
        Self { partitions: kafka.topic_partitions, replication: kafka.topic_replication_factor, settings }
    }

    /// The admin request that creates `name` as specified.
    pub fn new_topic<'a>(&'a self, name: &'a str) -> NewTopic<'a> {
        let mut topic = NewTopic::new(name, self.partitions, TopicReplication::Fixed(self.replication));
        for (key, value) in &self.settings {
            topic = topic.set(key, value);
        }
        topic
    }
}

/// A topic with fewer replicas than `kafka.topic_replication_factor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderReplicated {
    pub topic: String,
    pub replicas: usize,
}

/// Topics that `wanted` selects and that have fewer replicas than
/// `replication` (in their least-replicated partition).
pub fn under_replicated<C: ClientContext>(
    client: &Client<C>,
    replication: i32,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> KafkaResult<Vec<UnderReplicated>> {
    let metadata = client.fetch_metadata(None, timeout)?;
    let wanted_replicas = usize::try_from(replication).unwrap_or(0);
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && wanted(t.name()))
        .filter_map(|t| {
            let replicas = t.partitions().iter().map(|p| p.replicas().len()).min()?;
            (replicas < wanted_replicas).then(|| UnderReplicated { topic: t.name().to_owned(), replicas })
        })
        .collect())
}

/// The start-time check: warns, naming each topic, when an existing topic
/// has fewer replicas than configured (topics created before the setting
/// was raised keep their old factor; Kafka does not change it by itself).
/// Blocking; returns how many topics are under-replicated.
pub fn check_replication<C: ClientContext>(
    client: &Client<C>,
    kafka: &KafkaConfig,
    wanted: impl Fn(&str) -> bool,
) -> KafkaResult<usize> {
    let timeout = Duration::from_millis(kafka.metadata_timeout_ms).max(Duration::from_secs(5));
    let found = under_replicated(client, kafka.topic_replication_factor, timeout, wanted)?;
    for t in &found {
        tracing::warn!(
            topic = %t.topic,
            replicas = t.replicas,
            configured = kafka.topic_replication_factor,
            "topic has fewer replicas than kafka.topic_replication_factor: a broker failure can lose or stop its \
             events; raise it with kafka-reassign-partitions"
        );
    }
    Ok(found.len())
}

/// [`check_replication`] of the topics `wanted` selects, on a client of its
/// own, off the async runtime: for a service's start, in the background (a
/// cluster that is down at start is not a reason to wait). A failure to ask
/// is logged, not returned: the check is advice.
pub async fn warn_under_replicated(kafka: KafkaConfig, wanted: impl Fn(&str) -> bool + Send + 'static) {
    let checked = tokio::task::spawn_blocking(move || {
        let client: rdkafka::consumer::BaseConsumer<Context> =
            ClientBuilder::new(&kafka, "cyclops-replication-check").create()?;
        check_replication(client.client(), &kafka, wanted)
    })
    .await;
    match checked {
        Ok(Ok(0)) => tracing::debug!("every topic has at least kafka.topic_replication_factor replicas"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot check the topics' replication factor"),
        Err(e) => tracing::warn!(error = %e, "the replication check failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SaslMechanism, SecurityProtocol};
    use crate::secret::Secret;

    #[test]
    fn a_delivery_without_an_offset_is_not_written() {
        use rdkafka::Timestamp;
        use rdkafka::producer::future_producer::Delivery;
        let delivery = |offset| Delivery { partition: 3, offset, timestamp: Timestamp::NotAvailable };
        assert!(written(&delivery(0)));
        assert!(written(&delivery(41)));
        // What librdkafka reports for an implicit ack: RD_KAFKA_OFFSET_INVALID.
        assert!(!written(&delivery(-1001)));
        assert!(!written(&delivery(-1)));
    }

    #[test]
    fn every_client_gets_the_security_settings_and_the_pass_through() {
        let mut kafka = KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some("cyclops".into()),
            sasl_password: Some(Secret::new("pw")),
            ssl_ca_location: Some("/etc/ca.pem".into()),
            ..KafkaConfig::default()
        };
        kafka.librdkafka.insert("socket.keepalive.enable".into(), "true".into());
        let built = ClientBuilder::new(&kafka, "cyclops-test").set("acks", "all");
        let config = built.client_config();
        for (key, value) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "cyclops"),
            ("sasl.password", "pw"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("socket.keepalive.enable", "true"),
            ("client.id", "cyclops-test"),
            ("acks", "all"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
        assert!(!format!("{built:?}").contains("\"pw\""), "a password in Debug: {built:?}");
    }

    #[test]
    fn tls_files_are_left_out_without_tls() {
        let kafka = KafkaConfig {
            security_protocol: SecurityProtocol::Plaintext,
            ssl_ca_location: Some("/etc/ca.pem".into()),
            ..KafkaConfig::default()
        };
        assert_eq!(ClientBuilder::new(&kafka, "c").client_config().get("ssl.ca.location"), None);
    }

    #[test]
    fn pass_through_refuses_reserved_unknown_and_bad_values() {
        assert!(check_passthrough("acks", "1").is_err_and(|e| e.contains("Cyclops sets acks")));
        assert!(check_passthrough("enable.auto.commit", "true").is_err());
        assert!(check_passthrough("no.such.property", "1").is_err_and(|e| e.contains("no.such.property")));
        assert!(check_passthrough("socket.keepalive.enable", "perhaps").is_err());
        assert!(check_passthrough("socket.keepalive.enable", "true").is_ok());
        assert!(check_passthrough("fetch.max.bytes", "1048576").is_ok());
    }

    #[test]
    fn a_refused_login_is_remembered_with_what_to_fix() {
        let context = Context::default();
        context.error(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "Connection refused");
        assert_eq!(context.credential_failure(), None);
        context.error(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to invalid credentials",
        );
        let why = context.credential_failure().unwrap_or_default();
        assert!(why.contains("invalid credentials") && why.contains("kafka.sasl_password"), "{why}");
        context.connected();
        assert_eq!(context.credential_failure(), None);
    }

    #[test]
    fn topics_get_min_insync_replicas_only_when_configured() {
        let mut kafka = KafkaConfig { topic_replication_factor: 3, ..KafkaConfig::default() };
        assert!(!TopicSpec::new(&kafka, 1024).settings.iter().any(|(k, _)| *k == "min.insync.replicas"));
        kafka.topic_min_insync_replicas = Some(2);
        let spec = TopicSpec::new(&kafka, 1024);
        assert!(spec.settings.contains(&("min.insync.replicas", "2".to_owned())));
        assert_eq!(spec.replication, 3);
    }
}
