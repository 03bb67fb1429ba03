//! When a connection has waited too long: the rule behind the listener's
//! head and keep-alive deadlines, pure and on an injected clock, so that it
//! is tested without sockets or sleeping.
//!
//! hyper has one knob for this (`header_read_timeout`), and in hyper 1.x it
//! also runs while a kept-alive connection waits for its next request, so it
//! cannot give a short head deadline and a long idle one (a load balancer's
//! idle connections need the long one). The listener tracks the phase itself.

use std::time::Duration;

use tokio::time::Instant;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// New: its first request's head must be complete by `opened` + the head timeout.
    Opened { opened: Instant },
    /// A request's head is arriving; the head deadline counts from `since`
    /// (the connection's opening for its first request, else the head's first byte).
    Head { since: Instant },
    /// A request is being handled: its body read, its answer written. Its
    /// own deadlines (body, produce) bound it.
    Busy,
    /// Kept alive after an answer sent at `since`, waiting for the next request.
    Idle { since: Instant },
}

/// The deadlines a client is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub head: Duration,
    pub idle: Duration,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// `ingest.connections.request_head_timeout_ms`
    Head,
    /// `ingest.connections.keepalive_idle_timeout_ms`
    Idle,
}

impl Expired {
    /// The `limit` label of `cyclops_ingest_limit_hits_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Head => "request_head_timeout",
            Self::Idle => "keepalive_idle_timeout",
        }
    }
}

/// What the watchdog does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Close(Expired),
    /// Look again at this instant (the phase may have moved on by then).
    CheckAt(Instant),
}

impl Phase {
    /// The phase once bytes arrived while in this one.
    #[must_use]
    pub fn on_bytes(self, now: Instant) -> Self {
        match self {
            Self::Opened { opened } => Self::Head { since: opened },
            Self::Idle { .. } => Self::Head { since: now },
            other => other,
        }
    }

    /// What to do at `now`. A busy connection is looked at again after the
    /// shorter deadline, by when it has usually gone idle.
    pub fn next(self, now: Instant, limits: Deadlines) -> Next {
        let (deadline, expired) = match self {
            Self::Opened { opened } => (opened + limits.head, Expired::Head),
            Self::Head { since } => (since + limits.head, Expired::Head),
            Self::Idle { since } => (since + limits.idle, Expired::Idle),
            Self::Busy => return Next::CheckAt(now + limits.head.min(limits.idle)),
        };
        if now >= deadline { Next::Close(expired) } else { Next::CheckAt(deadline) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: Deadlines = Deadlines { head: Duration::from_secs(10), idle: Duration::from_secs(75) };

    #[test]
    fn a_silent_new_connection_gets_the_head_deadline_not_the_idle_one() {
        let t0 = Instant::now();
        let phase = Phase::Opened { opened: t0 };
        assert_eq!(phase.next(t0, LIMITS), Next::CheckAt(t0 + LIMITS.head));
        assert_eq!(phase.next(t0 + LIMITS.head, LIMITS), Next::Close(Expired::Head));
    }

    #[test]
    fn a_first_head_trickled_in_counts_from_the_connection() {
        let t0 = Instant::now();
        let phase = Phase::Opened { opened: t0 }.on_bytes(t0 + Duration::from_secs(9));
        assert_eq!(phase.next(t0 + Duration::from_secs(10), LIMITS), Next::Close(Expired::Head));
    }

    #[test]
    fn a_kept_alive_connection_idles_long_then_has_the_head_deadline_from_its_first_byte() {
        let t0 = Instant::now();
        let idle = Phase::Idle { since: t0 };
        assert_eq!(idle.next(t0 + Duration::from_secs(60), LIMITS), Next::CheckAt(t0 + LIMITS.idle));
        assert_eq!(idle.next(t0 + LIMITS.idle, LIMITS), Next::Close(Expired::Idle));
        let head = idle.on_bytes(t0 + Duration::from_secs(70));
        assert_eq!(head.next(t0 + Duration::from_secs(79), LIMITS), Next::CheckAt(t0 + Duration::from_secs(80)));
        assert_eq!(head.next(t0 + Duration::from_secs(80), LIMITS), Next::Close(Expired::Head));
    }

    #[test]
    fn bytes_of_a_body_keep_a_busy_connection_busy() {
        let t0 = Instant::now();
        assert_eq!(Phase::Busy.on_bytes(t0), Phase::Busy);
        assert_eq!(Phase::Head { since: t0 }.on_bytes(t0 + LIMITS.head), Phase::Head { since: t0 });
    }

    proptest! {
        /// Whatever the phase and the time, a connection is closed no later
        /// than its deadline and never before it, and a check is never in the past.
        #[test]
        fn never_early_never_late(since_ms in 0u64..200_000, now_ms in 0u64..400_000, which in 0u8..4) {
            let t0 = Instant::now();
            let since = t0 + Duration::from_millis(since_ms);
            let now = t0 + Duration::from_millis(now_ms);
            let (phase, deadline) = match which {
                0 => (Phase::Opened { opened: since }, Some(since + LIMITS.head)),
                1 => (Phase::Head { since }, Some(since + LIMITS.head)),
                2 => (Phase::Idle { since }, Some(since + LIMITS.idle)),
                _ => (Phase::Busy, None),
            };
            match (phase.next(now, LIMITS), deadline) {
                (Next::Close(_), Some(d)) => prop_assert!(now >= d),
                (Next::Close(_), None) => prop_assert!(false, "a busy connection is never closed"),
                (Next::CheckAt(at), Some(d)) => prop_assert!(now < d && at == d),
                (Next::CheckAt(at), None) => prop_assert!(at > now),
            }
        }
    }
}
