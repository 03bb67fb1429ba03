//! What `cyclops-ingest` and `cyclops-forwarder` share, and nothing else.
//!
//! - [`category`]: Sentry's data categories, which its rate limits name.
//! - [`config`]: the one configuration both services read (file, environment, flags).
//! - [`encoding`]: HTTP content encodings, decoded within a size limit.
//! - [`kafka`]: every librdkafka client, made from `[kafka]`; how topics are created.
//! - [`record`]: the Kafka side of the contract between the two services.
//! - [`redis_client`]: the Redis client, made from `[redis]`.
//! - [`secret`]: passwords and keys that never print.
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
pub mod kafka;
pub mod record;
pub mod redis_client;
pub mod secret;
pub mod shutdown;
pub mod status;
pub mod supervise;
pub mod telemetry;
