//! Building ingest from its configuration and serving it with a bounded
//! graceful shutdown.

use cyclops_api::count::{IngestCount, SpoolCount};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::flood::FloodFilter;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use cyclops_common::config::Config;
use cyclops_common::record::project_of_topic;
use cyclops_common::shutdown::{CancellationToken, with_grace};
use cyclops_common::status::{self, CheckResult, StatusState};
use cyclops_common::supervise::{Lifetime, Supervisor};
use tokio::net::TcpListener;

use crate::IngestError;
use crate::durable::Store;
use crate::intake::{self, Intake};
use crate::keys::KeyStore;
use crate::producer::EventProducer;
use crate::spool::Spool;
use crate::spool::drain::Drainer;
use crate::stats::Stats;

/// Longest wait at shutdown for events queued in the producer.
const FINAL_FLUSH: Duration = Duration::from_secs(1);
/// Longest wait at exit for the background tasks to end.
const TASKS_AT_EXIT: Duration = Duration::from_secs(5);
/// Longest wait at start for the flood filter's first Redis connection.
const REDIS_START_WAIT: Duration = Duration::from_secs(2);

/// A bound, not yet running ingest service.
#[derive(Debug)]
pub struct Ingest {
    listener: TcpListener,
    router: Router,
    limits: crate::listener::Limits,
    intake: Arc<Intake>,
    supervisor: Supervisor,
    shutdown: CancellationToken,
    /// Stops the spool's drainer, once the final flush is done.
    drain_stop: CancellationToken,
    drain: Duration,
    delay: Duration,
}

impl Ingest {
    /// Binds `ingest.bind:ingest.port`, opens the spool and prepares the
    /// routes; starts the background tasks (spool writer and drainer, key
    /// reloads, the Redis connector) under supervision. Cancelling
    /// `shutdown` later stops the service.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, IngestError> {
        let addr = SocketAddr::new(config.ingest.bind, config.ingest.port);
        crate::listener::raise_file_limit(config.ingest.connections.max_connections);
        let listener = TcpListener::bind(addr).await.map_err(|source| IngestError::Bind { addr, source })?;
        let port = listener.local_addr().map_or(config.ingest.port, |a| a.port());
        // The recorder first: metrics recorded before it exists are lost.
        cyclops_common::telemetry::prometheus().map_err(cyclops_common::status::StatusError::from)?;
        cyclops_common::telemetry::record_build_info("ingest");
        crate::metrics::describe();
        let mut supervisor = Supervisor::new(shutdown.clone());

        let stats = Arc::new(Stats::default());
        let keys = Arc::new(KeyStore::new(&config.projects, config.ingest.restrict_api_access));
        let redis = crate::flood::redis_client::client(&config.redis)?;
        let flood = FloodFilter::new(&config.ingest.flood, &config.redis, redis.clone());
        if let Some(connector) = flood.take_connector() {
            let stop = shutdown.clone();
            supervisor.spawn("redis-connector", Lifetime::Once, async move {
                tokio::select! {
                    () = connector => {}
                    () = stop.cancelled() => {}
                }
                Ok::<(), std::convert::Infallible>(())
            });
        }
        supervisor.spawn("replication-check", Lifetime::Once, {
            let (kafka, prefix) = (config.kafka.clone(), config.kafka.topic_prefix.clone());
            async move {
                let wanted = move |topic: &str| project_of_topic(&prefix, topic).is_some();
                cyclops_common::kafka::warn_under_replicated(kafka, wanted).await;
                Ok::<(), std::convert::Infallible>(())
            }
        });
        if !flood.wait_connected(REDIS_START_WAIT).await {
            tracing::warn!(
                "redis not connected after {REDIS_START_WAIT:?}: starting with in-process flood counts until it is"
            );
        }
        let producer = Arc::new(EventProducer::new(&config)?);
        let spool = if config.ingest.spool.enabled {
            let append_timeout = Duration::from_millis(config.ingest.produce_timeout_ms);
            let (spool, parts) = Spool::open(&config.ingest.spool, port, append_timeout)?;
            let spool = Arc::new(spool);
            supervisor.spawn_blocking("spool-writer", Lifetime::UntilShutdown, move || parts.writer.run());
            Some((spool, parts.drain_conn))
        } else {
            None
        };
        let store =
            Store::new(producer.clone(), spool.as_ref().map(|(s, _)| s.clone()), stats.clone(), config.ingest.ack);
        // The drainer keeps going through the shutdown, until the final flush is done.
        let drain_stop = CancellationToken::new();
        if let Some((spool, conn)) = spool {
            let s = &config.ingest.spool;
            let drainer = Drainer {
                conn,
                shared: spool.shared().clone(),
                producer,
                kafka: store.kafka.clone(),
                batch: s.drain_batch_records,
                retry_max: Duration::from_millis(s.drain_retry_max_ms),
                max_age: Duration::from_secs(s.max_age_secs),
            };
            supervisor.spawn("spool-drainer", Lifetime::UntilShutdown, drainer.run(drain_stop.clone()));
        }
        let intake = Arc::new(Intake::new(keys.clone(), store, flood, stats, &config));

        if let Some(url) = config.ingest.sentry_database_url.clone() {
            let period = Duration::from_secs(config.ingest.update_period_secs);
            let reload = crate::keys_refresh::run(url, keys, period, shutdown.clone());
            supervisor.spawn("key-reload", Lifetime::UntilShutdown, async move {
                reload.await;
                Ok::<(), std::convert::Infallible>(())
            });
        }

        let flood_state = intake.clone();
        let mut status = StatusState::new("ingest", config.ingest.healthcheck_text.clone(), &config, shutdown.clone())?
            .with_extra_check(Box::new(supervisor.check()))
            .with_extra_check(Box::new(move || flood_check(&flood_state)));
        if let Some(redis) = redis {
            status = status.with_probe("redis", crate::flood::redis_client::probe(redis));
        }
        if intake.store.spool.is_some() {
            // Kafka away is what the spool is for: degraded, not unready.
            let spool_state = intake.clone();
            status = status.with_kafka_not_critical().with_extra_check(Box::new(move || spool_check(&spool_state)));
        }
        if config.ingest.sentry_database_url.is_some() {
            let keys = intake.keys.clone();
            status = status.with_extra_check(Box::new(move || keys_check(&keys)));
        }
        let router = status::router(Arc::new(status))
            .merge(intake::router(intake.clone()))
            .merge(Router::new().route("/count", get(count)).route("/floods", get(floods)).with_state(intake.clone()));
        let drain = Duration::from_secs(config.ingest.drain_timeout_secs);
        let delay = Duration::from_millis(config.ingest.shutdown_delay_ms);
        let limits = crate::listener::Limits::new(&config.ingest.connections);
        Ok(Self { listener, router, limits, intake, supervisor, shutdown, drain_stop, drain, delay })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address; fall back to the
        // unspecified address rather than panic should the OS say otherwise.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until the shutdown token is cancelled, then lets in-flight
    /// requests finish for at most the drain time. A background task that
    /// fails starts the same shutdown, and makes this return its failure.
    pub async fn run(self) -> Result<(), IngestError> {
        let Self { listener, router, limits, intake, mut supervisor, shutdown, drain_stop, drain, delay } = self;
        // Shutdown turns /ready to 503 at once; the listener closes `delay` later.
        let stop_accepting = CancellationToken::new();
        let closed_at = Arc::new(std::sync::OnceLock::new());
        supervisor.spawn("listener-closer", Lifetime::Once, {
            let (signal, closer, closing) = (shutdown.clone(), stop_accepting.clone(), closed_at.clone());
            async move {
                signal.cancelled().await;
                tokio::time::sleep(delay).await;
                closing.set(tokio::time::Instant::now()).ok();
                closer.cancel();
                Ok::<(), std::convert::Infallible>(())
            }
        });
        let server = crate::listener::serve(listener, router, limits, stop_accepting.clone());
        let served = async {
            let mut server = std::pin::pin!(with_grace(&stop_accepting, drain, server));
            tokio::select! {
                served = &mut server => (served, None),
                failed = supervisor.watch() => {
                    shutdown.cancel();
                    (server.await, Some(failed))
                }
            }
        };
        let (_served, mut failed) = served.await;
        tracing::info!("ingest stopped");
        // With ack = acknowledged every answered event is in Kafka or the
        // spool already; with enqueue, this is the last chance for the queued
        // ones: what is left of the drain time, and never less than a produce
        // timeout; the spool takes what Kafka still has not.
        let left = closed_at.get().map_or(drain, |closed| drain.saturating_sub(closed.elapsed()));
        intake.store.finish(intake.store.producer.exit_flush_time(left, FINAL_FLUSH)).await;
        shutdown.cancel();
        drain_stop.cancel();
        drop(intake);
        if let Some(late) = supervisor.finish(TASKS_AT_EXIT).await {
            failed.get_or_insert(late);
        }
        match failed {
            Some(failed) => Err(IngestError::Task(failed)),
            None => Ok(()),
        }
    }
}

/// `/ready`'s view of the spool (see [`Spool::check`]).
fn spool_check(intake: &Intake) -> CheckResult {
    match &intake.store.spool {
        Some(spool) => spool.check(intake.store.kafka.down_for()),
        None => CheckResult { name: "spool", ok: true, critical: false, detail: "off".into() },
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

async fn count(State(intake): State<Arc<Intake>>) -> axum::Json<IngestCount> {
    let mut count = intake.stats.count(intake.flood.fallback_active());
    if let Some(spool) = &intake.store.spool {
        let state = spool.count(intake.store.kafka.down_for().is_some());
        count.spool = SpoolCount { enabled: true, state: Some(state) };
    }
    axum::Json(count)
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
    let now_ms = crate::now_ms();
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
