//! `cyclops-ingest`: the HTTP service Sentry SDKs send to.
//!
//! It speaks Sentry's ingestion protocol, drops floods of one error, and
//! produces every accepted event to its project's Kafka topic, where
//! `cyclops-forwarder` picks it up. [`Ingest::build`] binds the listener
//! (port 0 in tests) and [`Ingest::run`] serves until the shutdown token is
//! cancelled, then drains within `ingest.drain_timeout_secs`.

mod durable;
mod error;
pub mod flood;
pub mod intake;
mod keys;
mod keys_refresh;
mod listener;
pub mod metrics;
pub mod producer;
mod server;
mod spool;
mod stats;

pub use error::IngestError;
pub use server::Ingest;

/// Now, in Unix milliseconds (0 before 1970, saturating far after): what
/// records, the spool and `/floods` stamp.
pub(crate) fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
