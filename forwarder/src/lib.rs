//! `cyclops-forwarder`: drains the per-project Kafka topics into Sentry.
//!
//! [`Forwarder::build`] binds the status endpoints (port 0 in tests) and
//! [`Forwarder::run`] runs until the shutdown token is cancelled, then drains
//! within `forwarder.drain_timeout_secs`. The delivery itself is the
//! [`engine`]'s (its `schedule` decides the order, its `offsets` say what
//! to commit); [`pacing`] sets the pace, [`rate_limits`] turns Sentry's
//! rate limits into holds. A [`job::Job`] is one event on its way, which
//! the [`deadletter`] writer keeps when Sentry refuses it for good.
//! [`demo_sink`] is a stand-in for Sentry that `make run` uses when no
//! Sentry is configured.

pub mod contract;
mod deadletter;
pub mod demo_sink;
mod engine;
mod error;
mod job;
pub mod metrics;
mod pacing;
mod rate_limits;
pub mod replay;
mod sent_at;
mod server;
mod upstream;

pub use error::ForwarderError;
pub use server::Forwarder;
