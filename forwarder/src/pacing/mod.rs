//! How fast to send to Sentry: pure algorithms with the clock passed in, so
//! that they are unit- and property-tested without sleeping.
//!
//! - [`adaptive`]: `forwarder.pacing = "adaptive"` — the number of requests in
//!   flight follows Sentry's measured latency (additive increase while latency
//!   stays at its baseline, multiplicative decrease when it rises or on
//!   timeouts, 5xx and plain 429s), after Vector's adaptive request concurrency.
//! - [`cyclops`]: `forwarder.pacing = "cyclops"` — Cyclops's original: one
//!   request at a time, spaced by the 90th percentile of the last
//!   `max_requests_to_average` response times, capped at `max_dump_interval_ms`.
//! - [`backoff`]: jittered exponential delays between retries of one event.
//! - [`breaker`]: the outage breaker (stop sending and probe while Sentry is down).
//! - [`pacer`]: the gate a request passes, combining the mode and the breaker.

pub mod adaptive;
pub mod backoff;
pub mod breaker;
pub mod cyclops;
pub mod pacer;

/// Why pacing parameters were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid pacing parameter {name}: {reason}")]
pub struct InvalidPacing {
    pub name: &'static str,
    pub reason: String,
}
