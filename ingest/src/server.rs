//! Building the router and serving it with a bounded graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use cyclops_common::config::Config;
use cyclops_common::shutdown::{CancellationToken, with_grace};
use cyclops_common::status::{self, StatusState};
use tokio::net::TcpListener;

use crate::IngestError;
use crate::intake::{self, Intake};
use crate::producer::EventProducer;

/// Longest wait at shutdown for events queued in the producer.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

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
    /// Binds `ingest.bind:ingest.port` and prepares the routes. Cancelling
    /// `shutdown` later stops the service.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, IngestError> {
        let addr = SocketAddr::new(config.ingest.bind, config.ingest.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| IngestError::Bind { addr, source })?;
        let status = StatusState::new("ingest", config.ingest.healthcheck_text.clone(), &config, shutdown.clone())?;
        cyclops_common::telemetry::record_build_info("ingest");
        crate::metrics::describe();
        let intake = Arc::new(Intake::new(&config, EventProducer::new(&config)?));
        let router = status::router(Arc::new(status)).merge(intake::router(intake.clone()));
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
        tokio::spawn(async move {
            signal.cancelled().await;
            tokio::time::sleep(delay).await;
            closer.cancel();
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
        let result = match with_grace(&stop_accepting, drain, server.into_future()).await {
            Some(served) => served.map_err(IngestError::Serve),
            None => Ok(()),
        };
        tracing::info!("ingest stopped");
        // Every answered request was already acknowledged by Kafka; what is
        // still queued belongs to requests abandoned above, so a short flush will do.
        tokio::task::spawn_blocking(move || intake.producer.flush(FINAL_FLUSH)).await.ok();
        result
    }
}
