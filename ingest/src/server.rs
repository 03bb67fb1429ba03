//! Building ingest from its configuration and serving it with a bounded
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use cyclops_common::config::Config;
use cyclops_common::flood::FloodFilter;
use cyclops_common::shutdown::{CancellationToken, with_grace};
use cyclops_common::status::{self, CheckResult, StatusState};
use tokio::net::TcpListener;

use crate::IngestError;
use crate::intake::{self, Intake};
use crate::keys::KeyStore;
use crate::producer::EventProducer;
use crate::stats::Stats;

/// Longest wait at shutdown for events queued in the producer.
const FINAL_FLUSH: Duration = Duration::from_secs(1);
/// Longest wait at start for the flood filter's first Redis connection.
const REDIS_START_WAIT: Duration = Duration::from_secs(2);

/// A bound, not yet running ingest service.
#[derive(Debug)]
pub struct Ingest {
    listener: TcpListener,
    router: Router,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
    drain: Duration,
    delay: Duration,
}

impl Ingest {
    /// Binds `ingest.bind:ingest.port` and prepares the routes; starts the
    /// key reloads from Sentry's database when configured. Cancelling
    /// `shutdown` later stops the service.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, IngestError> {
        let addr = SocketAddr::new(config.ingest.bind, config.ingest.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| IngestError::Bind { addr, source })?;
        // The recorder first: metrics recorded before it exists are lost.
        cyclops_common::telemetry::prometheus().map_err(cyclops_common::status::StatusError::from)?;
        cyclops_common::telemetry::record_build_info("ingest");
        crate::metrics::describe();

        let stats = Arc::new(Stats::default());
        let keys = Arc::new(KeyStore::new(&config.projects, config.ingest.restrict_api_access));
        let flood = FloodFilter::new(
            config.ingest.flood.max_uses,
            Duration::from_secs(config.ingest.flood.window_secs),
            config.redis.url.as_deref(),
            &config.redis.key_prefix,
            Duration::from_millis(config.redis.timeout_ms),
        )
        .map_err(IngestError::Redis)?;
        if !flood.wait_connected(REDIS_START_WAIT).await {
            tracing::warn!(
                "redis not connected after {REDIS_START_WAIT:?}: starting with in-process flood counts until it is"
            );
        }
        let producer = EventProducer::new(&config, stats.clone())?;
        let intake = Arc::new(Intake::new(keys.clone(), producer, flood, stats, &config));

        if let Some(url) = config.ingest.sentry_database_url.clone() {
            let period = Duration::from_secs(config.ingest.update_period_secs);
            tokio::spawn(crate::keys_refresh::run(url, keys, period, shutdown.clone()));
        }

        let flood_state = intake.clone();
        let mut status = StatusState::new("ingest", config.ingest.healthcheck_text.clone(), &config, shutdown.clone())?
            .with_extra_check(Box::new(move || flood_check(&flood_state)));
        if config.ingest.sentry_database_url.is_some() {
            let keys = intake.keys.clone();
            status = status.with_extra_check(Box::new(move || keys_check(&keys)));
        }
        let router = status::router(Arc::new(status))
            .merge(intake::router(intake.clone()))
            .merge(Router::new().route("/count", get(count)).route("/floods", get(floods)).with_state(intake.clone()));
        let drain = Duration::from_secs(config.ingest.drain_timeout_secs);
        let delay = Duration::from_millis(config.ingest.shutdown_delay_ms);
        Ok(Self { listener, router, intake, shutdown, drain, delay })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address; fall back to the
        // unspecified address rather than panic should the OS say otherwise.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until the shutdown token is cancelled, then lets in-flight
    /// requests finish for at most the drain time.
    pub async fn run(self) -> Result<(), IngestError> {
        let Self { listener, router, intake, shutdown, drain, delay } = self;
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        // Shutdown turns /ready to 503 at once; the listener closes `delay` later.
        let stop_accepting = CancellationToken::new();
        let closer = stop_accepting.clone();
        let signal = shutdown.clone();
        let closed_at = Arc::new(std::sync::OnceLock::new());
        let closing = closed_at.clone();
        tokio::spawn(async move {
            signal.cancelled().await;
            tokio::time::sleep(delay).await;
            closing.set(tokio::time::Instant::now()).ok();
            closer.cancel();
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
        let served = with_grace(&stop_accepting, drain, server.into_future()).await;
        let result = match served {
            Some(served) => served.map_err(IngestError::Serve),
            None => Ok(()),
        };
        tracing::info!("ingest stopped");
        // With ack = acknowledged every answered event is in Kafka already;
        // with enqueue, this is the last chance for the queued ones: what is
        // left of the drain time, and never less than a produce timeout.
        let left = closed_at.get().map_or(drain, |closed| drain.saturating_sub(closed.elapsed()));
        let flush_for = intake.producer.exit_flush_time(left, FINAL_FLUSH);
        tokio::task::spawn_blocking(move || intake.producer.flush(flush_for)).await.ok();
        result
    }
}

/// `/ready`'s view of the flood filter: degraded while it counts in process.
fn flood_check(intake: &Intake) -> CheckResult {
    let flood = &intake.flood;
    let (ok, detail) = if !flood.enabled() {
        (true, "disabled (window_secs = 0)")
    } else if flood.redis_connected() == Some(false) {
        (false, "connecting to redis: counting in process (per instance) meanwhile")
    } else if flood.fallback_active() {
        (false, "redis failing: counting in process (per instance) until it answers")
    } else if flood.redis_connected() == Some(true) {
        (true, "counting farm-wide in redis")
    } else {
        (true, "counting in process (no redis.url)")
    };
    CheckResult { name: "flood_filter", ok, critical: false, detail: detail.into() }
}

/// `/ready`'s view of the keys from Sentry's database: degraded until the
/// first load and while reloads fail (the last good keys still serve).
fn keys_check(keys: &KeyStore) -> CheckResult {
    let (ok, detail) = match (keys.loaded_once(), keys.last_error()) {
        (false, None) => (false, "not loaded yet".to_owned()),
        (false, Some(e)) => (false, format!("never loaded: {e}")),
        (true, Some(e)) => (false, format!("reload failed, serving the last {} keys: {e}", keys.loaded_len())),
        (true, None) => (true, format!("{} keys loaded", keys.loaded_len())),
    };
    CheckResult { name: "sentry_keys", ok, critical: false, detail }
}

async fn count(State(intake): State<Arc<Intake>>) -> axum::Json<serde_json::Value> {
    axum::Json(intake.stats.count(intake.flood.fallback_active()))
}

/// `/floods?limit=N`'s query: the top `limit` fingerprints per project (default 10, at most 1000).
#[derive(Debug, serde::Deserialize)]
struct FloodsQuery {
    limit: Option<usize>,
}

/// `/floods`: what the flood filter dropped lately, per project, most dropped first.
async fn floods(
    State(intake): State<Arc<Intake>>,
    axum::extract::Query(query): axum::extract::Query<FloodsQuery>,
) -> axum::Json<serde_json::Value> {
    let limit = query.limit.unwrap_or(10).min(1000);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let projects: serde_json::Map<String, serde_json::Value> = intake
        .floods
        .top(limit, now_ms)
        .into_iter()
        .map(|(project, entries)| (project.to_string(), serde_json::json!(entries)))
        .collect();
    axum::Json(serde_json::json!({
        "service": "ingest",
        "window_secs": intake.floods.window().as_secs(),
        "now_ms": now_ms,
        "projects": projects,
    }))
}
