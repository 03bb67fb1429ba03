//! Floods of one error: how ingest recognises them and what it keeps about them.
//!
//! - [`fingerprint`]: what makes two events "the same error" — a hash of
//!   the event's stable parts, read from its JSON without building it.
//! - [`filter`]: the flood filter — at most `ingest.flood.max_uses` events
//!   per (project, fingerprint) per window, counted farm-wide in Redis or in
//!   process when Redis is away.
//! - [`redis_client`]: the Redis client made from `[redis]`, and the `/ready` probe
//!   that pings it (only ingest uses Redis).
//! - [`report`]: the flood report served at `/floods` — what is being
//!   dropped, since when, from where.

pub mod filter;
pub mod fingerprint;
pub mod redis_client;
pub mod report;

pub use filter::{FloodFilter, Verdict};
