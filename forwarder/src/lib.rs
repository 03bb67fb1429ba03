//! `cyclops-forwarder`: drains the per-project Kafka topics into Sentry.
//!
//! [`Forwarder::build`] binds the status endpoints (port 0 in tests) and
//! [`Forwarder::run`] runs until the shutdown token is cancelled, then drains
//! within `forwarder.drain_timeout_secs`. [`demo_sink`] is a stand-in for
//! Sentry that `make run` uses when no Sentry is configured.

mod consumer;
pub mod demo_sink;
mod error;
pub mod metrics;
pub mod pacing;
mod server;
mod upstream;

pub use error::ForwarderError;
pub use server::Forwarder;
