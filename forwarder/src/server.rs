//! The forwarder's process: status endpoints and, around them, the bounded
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use cyclops_common::config::Config;
use cyclops_common::record::project_of_topic;
use cyclops_common::shutdown::{CancellationToken, with_grace};
use cyclops_common::status::{self, StatusState};
use cyclops_common::supervise::{Lifetime, Supervisor};
use tokio::net::TcpListener;

use crate::ForwarderError;
use crate::deadletter::DeadLetter;
use crate::engine::{Engine, EngineStatus};
use crate::upstream::Upstream;

/// A bound, not yet running forwarder.
pub struct Forwarder {
    listener: TcpListener,
    router: Router,
    engine: Engine,
    supervisor: Supervisor,
    shutdown: CancellationToken,
    drain: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("addr", &self.local_addr()).finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Binds `forwarder.bind:forwarder.port` for the status endpoints.
    /// Cancelling `shutdown` later stops the forwarder.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, ForwarderError> {
        let addr = SocketAddr::new(config.forwarder.bind, config.forwarder.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| ForwarderError::Bind { addr, source })?;
        // The recorder first: metrics recorded before it exists are lost.
        cyclops_common::telemetry::prometheus().map_err(cyclops_common::status::StatusError::from)?;
        let mut supervisor = Supervisor::new(shutdown.clone());
        let status =
            StatusState::new("forwarder", config.forwarder.healthcheck_text.clone(), &config, shutdown.clone())?
                .with_extra_check(Box::new(supervisor.check()));
        cyclops_common::telemetry::record_build_info("forwarder");
        crate::metrics::describe();
        let upstream = Upstream::new(&config)?;
        let dead_letter = Arc::new(DeadLetter::new(&config)?);
        // In the background: a start must not wait on Kafka.
        supervisor.spawn("dead-letter-topic", Lifetime::Once, {
            let dead_letter = dead_letter.clone();
            async move {
                dead_letter.prepare().await;
                Ok::<(), std::convert::Infallible>(())
            }
        });
        supervisor.spawn("replication-check", Lifetime::Once, {
            let (kafka, dead_letter_topic) = (config.kafka.clone(), config.deadletter_topic());
            let prefix = config.kafka.topic_prefix.clone();
            let wanted = move |topic: &str| topic == dead_letter_topic || project_of_topic(&prefix, topic).is_some();
            async move {
                cyclops_common::kafka::warn_under_replicated(kafka, wanted).await;
                Ok::<(), std::convert::Infallible>(())
            }
        });
        let engine = Engine::build(&config, upstream, dead_letter, shutdown.clone())?;
        let count = engine.status();
        let router =
            status::router(Arc::new(status)).merge(Router::new().route("/count", get(count_handler)).with_state(count));
        let drain = Duration::from_secs(config.forwarder.drain_timeout_secs);
        Ok(Self { listener, router, engine, supervisor, shutdown, drain })
    }

    /// The address of the status endpoints (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Runs until the shutdown token is cancelled, then stops within the
    /// drain time. A delivery loop (or other background task) that ends
    /// early turns `/ready` to 503, starts the same shutdown and makes this
    /// return its failure, so that the process exits non-zero.
    pub async fn run(self) -> Result<(), ForwarderError> {
        let Self { listener, router, engine, mut supervisor, shutdown, drain } = self;
        supervisor.spawn("delivery", Lifetime::UntilShutdown, engine.run());
        let server = axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut server = std::pin::pin!(with_grace(&shutdown, drain, server.into_future()));
        let (served, mut failed) = tokio::select! {
            served = &mut server => (served, None),
            failed = supervisor.watch() => {
                shutdown.cancel();
                (server.await, Some(failed))
            }
        };
        // The delivery loop stops at the same signal; wait for its final commit.
        if let Some(late) = supervisor.finish(drain).await {
            failed.get_or_insert(late);
        }
        tracing::info!("forwarder stopped");
        if let Some(failed) = failed {
            return Err(ForwarderError::Task(failed));
        }
        match served {
            Some(served) => served.map_err(ForwarderError::Serve),
            None => Ok(()),
        }
    }
}

/// `/count`: see [`EngineStatus::count`].
async fn count_handler(State(status): State<EngineStatus>) -> axum::Json<cyclops_api::count::ForwarderCount> {
    axum::Json(status.count())
}
