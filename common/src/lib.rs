//! What `cyclops-ingest` and `cyclops-forwarder` share, and nothing else.
//!
//! - [`category`]: Sentry's data categories, which its rate limits name.
//! - [`config`]: the one configuration both services read (file, environment, flags).
//! - [`encoding`]: HTTP content encodings, decoded within a size limit.
//! - [`record`]: the Kafka side of the contract between the two services.
//! - [`status`]: `/healthcheck`, `/live`, `/ready` and `/metrics`, served by both.
//! - [`telemetry`]: logging and the Prometheus recorder.
//! - [`shutdown`]: turning SIGTERM/SIGINT into a cancellation both services obey.
//! - [`supervise`]: owning and watching background tasks; a dead one stops the service.

pub mod category;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod fingerprint;
pub mod flood;
pub mod record;
pub mod shutdown;
pub mod status;
pub mod supervise;
pub mod telemetry;
