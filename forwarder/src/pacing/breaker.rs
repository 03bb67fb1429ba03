//! The outage breaker: when Sentry keeps failing (5xx, timeouts, connection
//! errors) for longer than a grace period, stop sending altogether and probe
//! with one request at a time, spaced by a growing backoff, until one gets
//! through. As in Relay: any answer that is not a network failure counts as
//! Sentry being there (a 400 or a 429 proves it is up).

use std::time::Duration;

use tokio::time::Instant;

use super::InvalidPacing;

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send as pacing allows.
    Send,
    /// Send exactly one probe; nothing else until it answers.
    Probe,
    /// Send nothing until then (or until a probe answers).
    WaitUntil(Instant),
    /// A probe is out; send nothing until it answers.
    WaitForProbe,
}

/// The breaker's state, as shown in metrics (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Probing = 1,
    Open = 2,
}

#[derive(Debug, Clone)]
enum State {
    Closed { failing_since: Option<Instant> },
    Open { probe_at: Instant },
    Probing,
}

/// Decides whether requests may go while Sentry keeps failing.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    grace: Duration,
    base: Duration,
    max: Duration,
    /// The current spacing between probes.
    delay: Duration,
    opened: u64,
}

impl Breaker {
    /// Opens after `grace` of nothing but failures; probes after `base`,
    /// doubling up to `max`.
    pub fn new(grace: Duration, base: Duration, max: Duration) -> Result<Self, InvalidPacing> {
        if base.is_zero() || max < base {
            return Err(InvalidPacing { name: "breaker", reason: "needs 0 < base <= max".into() });
        }
        Ok(Self { state: State::Closed { failing_since: None }, grace, base, max, delay: base, opened: 0 })
    }

    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Probing => BreakerState::Probing,
            State::Open { .. } => BreakerState::Open,
        }
    }

    /// How many times the breaker opened.
    pub fn times_opened(&self) -> u64 {
        self.opened
    }

    /// Asks for one request at `now`. A [`Permit::Probe`] moves the breaker
    /// to probing: call [`answered`](Self::answered) when it comes back.
    pub fn permit(&mut self, now: Instant) -> Permit {
        let permit = self.peek(now);
        if permit == Permit::Probe {
            self.state = State::Probing;
        }
        permit
    }

    /// What [`permit`](Self::permit) would answer, changing nothing.
    pub fn peek(&self, now: Instant) -> Permit {
        match self.state {
            State::Closed { .. } => Permit::Send,
            State::Probing => Permit::WaitForProbe,
            State::Open { probe_at } if now >= probe_at => Permit::Probe,
            State::Open { probe_at } => Permit::WaitUntil(probe_at),
        }
    }

    /// Notes an answer at `now`: `healthy` unless it was a network failure.
    pub fn answered(&mut self, now: Instant, healthy: bool) {
        if healthy {
            self.state = State::Closed { failing_since: None };
            self.delay = self.base;
            return;
        }
        match self.state {
            State::Closed { failing_since: None } => {
                self.state = State::Closed { failing_since: Some(now) };
                if self.grace.is_zero() {
                    self.open(now);
                }
            }
            State::Closed { failing_since: Some(since) } => {
                if now.duration_since(since) >= self.grace {
                    self.open(now);
                }
            }
            State::Probing => {
                self.delay = (self.delay * 2).min(self.max);
                self.state = State::Open { probe_at: now + self.delay };
            }
            // Answers of requests sent before the breaker opened.
            State::Open { .. } => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.opened += 1;
        self.delay = self.base;
        self.state = State::Open { probe_at: now + self.delay };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(Duration::from_secs(10), Duration::from_secs(1), Duration::from_secs(8)).expect("valid")
    }

    #[test]
    fn failures_within_the_grace_period_do_not_open() {
        let mut b = breaker();
        let t = Instant::now();
        b.answered(t, false);
        b.answered(t + Duration::from_secs(9), false);
        assert_eq!(b.permit(t + Duration::from_secs(9)), Permit::Send);
        b.answered(t + Duration::from_secs(9), true);
        b.answered(t + Duration::from_secs(15), false);
        assert_eq!(b.state(), BreakerState::Closed, "a success restarts the grace period");
    }

    #[test]
    fn sustained_failure_opens_then_probes_with_growing_spacing() {
        let mut b = breaker();
        let t = Instant::now();
        b.answered(t, false);
        b.answered(t + Duration::from_secs(10), false);
        assert_eq!(b.state(), BreakerState::Open);
        let t1 = t + Duration::from_secs(10);
        assert_eq!(b.permit(t1), Permit::WaitUntil(t1 + Duration::from_secs(1)));
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(b.permit(t2), Permit::Probe);
        assert_eq!(b.permit(t2), Permit::WaitForProbe, "one probe at a time");
        b.answered(t2, false);
        assert_eq!(b.permit(t2), Permit::WaitUntil(t2 + Duration::from_secs(2)));
        let mut now = t2;
        for expected in [2, 4, 8, 8] {
            now += Duration::from_secs(expected);
            assert_eq!(b.permit(now), Permit::Probe);
            b.answered(now, false);
        }
        now += Duration::from_secs(8);
        assert_eq!(b.permit(now), Permit::Probe);
        b.answered(now, true);
        assert_eq!(b.permit(now), Permit::Send);
        assert_eq!(b.times_opened(), 1);
    }
}
