//! The forwarder's process: status endpoints and, around them, the bounded
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use cyclops_common::config::Config;
use cyclops_common::shutdown::{CancellationToken, with_grace};
use cyclops_common::status::{self, StatusState};
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
        let status =
            StatusState::new("forwarder", config.forwarder.healthcheck_text.clone(), &config, shutdown.clone())?;
        cyclops_common::telemetry::record_build_info("forwarder");
        crate::metrics::describe();
        let upstream = Upstream::new(&config)?;
        let dead_letter = Arc::new(DeadLetter::new(&config)?);
        // In the background: a start must not wait on Kafka.
        tokio::spawn({
            let dead_letter = dead_letter.clone();
            async move { dead_letter.prepare().await }
        });
        let engine = Engine::build(&config, upstream, dead_letter, shutdown.clone())?;
        let count = engine.status();
        let router =
            status::router(Arc::new(status)).merge(Router::new().route("/count", get(count_handler)).with_state(count));
        let drain = Duration::from_secs(config.forwarder.drain_timeout_secs);
        Ok(Self { listener, router, engine, shutdown, drain })
    }

    /// The address of the status endpoints (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Runs until the shutdown token is cancelled, then stops within the
    /// drain time.
    pub async fn run(self) -> Result<(), ForwarderError> {
        let Self { listener, router, engine, shutdown, drain } = self;
        let delivery = tokio::spawn(engine.run());
        let server = axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let server = async move {
            let served = server.await;
            // The loop stops at the same signal; wait for its final commit.
            match delivery.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "delivery failed"),
                Err(e) => tracing::error!(error = %e, "delivery task failed"),
            }
            served
        };
        let result = match with_grace(&shutdown, drain, server).await {
            Some(served) => served.map_err(ForwarderError::Serve),
            None => Ok(()),
        };
        tracing::info!("forwarder stopped");
        result
    }
}

/// `/count`: see [`EngineStatus::count`].
async fn count_handler(State(status): State<EngineStatus>) -> axum::Json<serde_json::Value> {
    axum::Json(status.count())
}
