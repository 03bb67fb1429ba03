//! What `cyclops-ingest` and `cyclops-forwarder` share, and nothing else.
//!
//! - [`category`]: Sentry's data categories, which its rate limits name.
//! - [`cli`]: the command-line flags both services take.
//! - [`config`]: the one configuration both services read (file, environment, flags).
//! - [`encoding`]: HTTP content encodings, decoded within a size limit (ingest
//!   reads bodies with it, the forwarder late envelopes).
//! - [`ids`]: the project id, event id and fingerprint, each its own type.
//! - [`kafka`]: every librdkafka client, made from `[kafka]`; how topics are created.
//! - [`record`]: the Kafka side of the contract between the two services.
//! - [`secret`]: passwords and keys that never print.
//! - [`status`]: `/healthcheck`, `/live`, `/ready` and `/metrics`, served by both
//!   (each service adds its own checks: ingest pings the Redis only it uses).
//! - [`telemetry`]: logging and the Prometheus recorder.
//! - [`shutdown`]: turning SIGTERM/SIGINT into a cancellation both services obey.
//! - [`supervise`]: owning and watching background tasks; a dead one stops the service.

pub mod category;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod ids;
pub mod kafka;
pub mod record;
pub mod secret;
pub mod shutdown;
pub mod status;
pub mod supervise;
pub mod telemetry;
