//! The status endpoints both services serve: `/healthcheck` (Cyclops's
//! load-balancer check), `/live`, `/ready` and `/metrics`.
//!
//! `/ready` answers 200 only when a Kafka metadata request succeeds (for
//! an ingest with its spool on, a failing Kafka only degrades it); it
//! answers 503 as soon as shutdown begins, so that a load balancer stops
//! sending before the listener closes. A service adds its own checks: probes
//! of other dependencies (ingest pings Redis), which only degrade `/ready`
//! (`"degraded": true`, not 503), and cheap computed ones. Its JSON body
//! names each check and why it failed.
//!
//! A cluster that refuses our credentials or TLS handshake makes `/ready`
//! 503 in every service, spool or not: that is a setting to fix, which no
//! amount of spooling waits out. The check's detail says which keys to check.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{BaseProducer, Producer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka;
use crate::telemetry::names;

/// Why the status endpoints could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot create the Kafka client used for readiness checks: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::MetricsError),
}

/// Probes Kafka with a metadata request.
#[derive(Clone)]
pub struct KafkaProbe {
    // A producer, never used to produce: its poll serves librdkafka's error
    // events to the context (a consumer's poll returns them instead), which
    // is how a refused login reaches the check.
    client: Arc<BaseProducer<kafka::Context>>,
    timeout: Duration,
}

/// Why the Kafka probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaProbeFailure {
    pub detail: String,
    /// The cluster refused our credentials or TLS: a setting to fix, not an
    /// outage to wait out, so the service is unready even where a Kafka
    /// outage only degrades it.
    pub misconfigured: bool,
}

impl std::fmt::Debug for KafkaProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProbe").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl KafkaProbe {
    /// A probe against `config.kafka.brokers`. Connects lazily.
    pub fn new(config: &Config) -> Result<Self, StatusError> {
        // Quiet: readiness must not fill the log with reconnect noise when
        // the broker is down (credential failures still reach the context).
        let client: BaseProducer<kafka::Context> = kafka::ClientBuilder::new(&config.kafka, "cyclops-readiness")
            .log_level(RDKafkaLogLevel::Critical)
            .create()?;
        Ok(Self { client: Arc::new(client), timeout: Duration::from_millis(config.kafka.metadata_timeout_ms) })
    }

    /// Number of brokers in the cluster, or why none answered.
    pub async fn check(&self) -> Result<String, KafkaProbeFailure> {
        let client = self.client.clone();
        let timeout = self.timeout;
        // librdkafka's metadata call blocks its caller.
        let meta = tokio::task::spawn_blocking(move || {
            let meta = client.client().fetch_metadata(None, timeout).map(|m| (m.brokers().len(), m.topics().len()));
            client.poll(Duration::ZERO);
            meta
        })
        .await
        .map_err(|e| KafkaProbeFailure { detail: format!("metadata task failed: {e}"), misconfigured: false })?;
        let context = self.client.context();
        match meta {
            Ok((brokers, topics)) => {
                context.connected();
                Ok(format!("{brokers} broker(s), {topics} topic(s)"))
            }
            Err(e) => Err(match context.credential_failure() {
                Some(why) => KafkaProbeFailure { detail: why, misconfigured: true },
                None => KafkaProbeFailure { detail: format!("metadata request failed: {e}"), misconfigured: false },
            }),
        }
    }
}

/// What the status endpoints need.
pub struct StatusState {
    service: &'static str,
    healthcheck_text: String,
    kafka: KafkaProbe,
    probes: Vec<(&'static str, Probe)>,
    shutdown: CancellationToken,
    prometheus: PrometheusHandle,
    /// The last checks and when they ran. Callers within [`CHECK_TTL`] share
    /// them, and the lock makes concurrent callers wait for one probe rather
    /// than each starting its own: readiness costs the dependencies at most
    /// one probe per second however often a load balancer asks.
    last: tokio::sync::Mutex<Option<(Instant, Vec<CheckResult>)>>,
    extra: Vec<ExtraCheck>,
    /// Whether Kafka failing makes the service unready (else degraded).
    kafka_critical: bool,
}

impl std::fmt::Debug for StatusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusState").field("service", &self.service).finish_non_exhaustive()
    }
}

/// How long one round of readiness checks is reused.
pub const CHECK_TTL: Duration = Duration::from_secs(1);

impl StatusState {
    /// Builds the state for `service` from its configuration. `shutdown`
    /// turns `/ready` to 503 once cancelled.
    pub fn new(
        service: &'static str,
        healthcheck_text: String,
        config: &Config,
        shutdown: CancellationToken,
    ) -> Result<Self, StatusError> {
        Ok(Self {
            service,
            healthcheck_text,
            kafka: KafkaProbe::new(config)?,
            probes: Vec::new(),
            shutdown,
            prometheus: crate::telemetry::prometheus()?,
            last: tokio::sync::Mutex::new(None),
            extra: Vec::new(),
            kafka_critical: true,
        })
    }
}

/// The `/ready` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// A non-critical check failed.
    pub degraded: bool,
    pub shutting_down: bool,
    pub checks: Vec<CheckResult>,
}

/// One dependency's state in `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    /// Whether a failure makes the service unready (else only degraded).
    pub critical: bool,
    pub detail: String,
}

/// A check a service adds to `/ready` (computed, not probed; it must be cheap).
pub type ExtraCheck = Box<dyn Fn() -> CheckResult + Send + Sync>;

/// A dependency a service probes for `/ready` (a round trip, bounded by the
/// probe itself): `Ok` or `Err` with what it found. Run with the Kafka probe,
/// at most once per [`CHECK_TTL`]; a failure degrades `/ready`.
pub type Probe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

impl StatusState {
    /// The state of every dependency (probed at most once per [`CHECK_TTL`]) and of shutdown.
    pub async fn readiness(&self) -> Readiness {
        let checks = {
            let mut last = self.last.lock().await;
            match &*last {
                Some((at, checks)) if at.elapsed() < CHECK_TTL => checks.clone(),
                _ => {
                    let checks = self.probe().await;
                    *last = Some((Instant::now(), checks.clone()));
                    checks
                }
            }
        };
        let mut checks = checks;
        checks.extend(self.extra.iter().map(|check| check()));
        let shutting_down = self.shutdown.is_cancelled();
        let ready = !shutting_down && checks.iter().all(|c| c.ok || !c.critical);
        let degraded = checks.iter().any(|c| !c.ok && !c.critical);
        Readiness { ready, degraded, shutting_down, checks }
    }

    /// Runs the Kafka probe and the service's probes concurrently (the
    /// latter one after another: ingest has one).
    async fn probe(&self) -> Vec<CheckResult> {
        let others = async {
            let mut outcomes = Vec::with_capacity(self.probes.len());
            for (name, probe) in &self.probes {
                outcomes.push((*name, probe().await));
            }
            outcomes
        };
        let (kafka, others) = tokio::join!(self.kafka.check(), others);
        let kafka_critical = self.kafka_critical || kafka.as_ref().is_err_and(|e| e.misconfigured);
        let mut checks = vec![self.record("kafka", kafka_critical, kafka.map_err(|e| e.detail))];
        checks.extend(others.into_iter().map(|(name, outcome)| self.record(name, false, outcome)));
        checks
    }

    fn record(&self, name: &'static str, critical: bool, outcome: Result<String, String>) -> CheckResult {
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => {
                metrics::counter!(names::READINESS_FAILURES, "service" => self.service, "check" => name).increment(1);
                tracing::warn!(check = name, detail = %d, "readiness check failed");
                (false, d)
            }
        };
        CheckResult { name, ok, critical, detail }
    }

    /// Makes a Kafka outage degrade `/ready` instead of failing it: for an
    /// ingest that spools while Kafka is away and must keep receiving.
    pub fn with_kafka_not_critical(mut self) -> Self {
        self.kafka_critical = false;
        self
    }

    /// Adds a dependency probed for `/ready` (see [`Probe`]).
    pub fn with_probe(mut self, name: &'static str, probe: Probe) -> Self {
        self.probes.push((name, probe));
        self
    }

    /// Adds a check computed on every `/ready` (for example the flood
    /// filter's fallback state).
    pub fn with_extra_check(mut self, check: ExtraCheck) -> Self {
        self.extra.push(check);
        self
    }
}

/// The router serving the status endpoints.
pub fn router(state: Arc<StatusState>) -> Router {
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn healthcheck(State(state): State<Arc<StatusState>>) -> String {
    state.healthcheck_text.clone()
}

async fn live() -> &'static str {
    "OK"
}

async fn ready(State(state): State<Arc<StatusState>>) -> Response {
    let readiness = state.readiness().await;
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(readiness)).into_response()
}

async fn metrics_text(State(state): State<Arc<StatusState>>) -> Response {
    state.prometheus.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render()).into_response()
}
