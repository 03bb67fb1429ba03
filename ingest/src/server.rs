//! Building the router and serving it with a bounded graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use cyclops_common::config::Config;
use cyclops_common::shutdown::CancellationToken;
use cyclops_common::status::{self, StatusState};
use tokio::net::TcpListener;

use crate::IngestError;

/// A bound, not yet running ingest service.
#[derive(Debug)]
pub struct Ingest {
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
}

impl Ingest {
    /// Binds `ingest.bind:ingest.port` and prepares the routes. Cancelling
    /// `shutdown` later stops the service.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, IngestError> {
        let addr = SocketAddr::new(config.ingest.bind, config.ingest.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| IngestError::Bind { addr, source })?;
        let status = StatusState::new("ingest", config.ingest.healthcheck_text.clone(), &config, shutdown.clone())?;
        cyclops_common::telemetry::record_build_info("ingest");
        let router = status::router(Arc::new(status));
        Ok(Self { listener, router, shutdown, drain: Duration::from_secs(config.ingest.drain_timeout_secs) })
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
        let Self { listener, router, shutdown, drain } = self;
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => return result.map_err(IngestError::Serve),
            () = shutdown.cancelled() => {}
        }
        match tokio::time::timeout(drain, server).await {
            Ok(result) => {
                tracing::info!("ingest drained and stopped");
                result.map_err(IngestError::Serve)
            }
            Err(_) => {
                tracing::warn!(drain_secs = drain.as_secs(), "drain time over; abandoning in-flight requests");
                Ok(())
            }
        }
    }
}
