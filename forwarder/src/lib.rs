//! `cyclops-forwarder`: drains the per-project Kafka topics into Sentry.
//!
//! [`Forwarder::build`] binds the status endpoints (port 0 in tests) and
//! [`Forwarder::run`] runs until the shutdown token is cancelled, then drains
//! within `forwarder.drain_timeout_secs`. The delivery itself is the
//! [`engine`]'s; [`schedule`] decides the order ([`holds`] parks the categories Sentry
//! rate-limits), [`pacing`] the pace,
//! [`offsets`] what to commit. [`demo_sink`] is a stand-in for Sentry that
//! `make run` uses when no Sentry is configured.

pub mod contract;
pub mod deadletter;
pub mod demo_sink;
pub mod engine;
mod error;
pub mod holds;
pub mod metrics;
pub mod offsets;
pub mod pacing;
pub mod replay;
pub mod schedule;
mod sent_at;
mod server;
mod upstream;

pub use error::ForwarderError;
pub use server::Forwarder;
