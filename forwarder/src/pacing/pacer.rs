//! The gate every request passes: the pacing mode (`adaptive` or `cyclops`)
//! and the outage breaker together. Pure: the clock is passed in.

use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::{AdaptiveLimit, Signal};
use super::breaker::{Breaker, BreakerState, Permit};
use super::cyclops::CyclopsPacer;

/// Whether a request may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Not before then.
    WaitUntil(Instant),
    /// Not before an answer comes back.
    WaitForAnswer,
}

#[derive(Debug)]
enum Mode {
    Adaptive(AdaptiveLimit),
    Cyclops { pacer: CyclopsPacer, in_flight: u32 },
}

/// Pacing and breaker.
#[derive(Debug)]
pub struct Pacer {
    mode: Mode,
    breaker: Breaker,
}

/// What one answer said, for pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feedback {
    pub rtt: Duration,
    /// Too much for Sentry: 5xx, timeout, a 429 that is not a quota.
    pub overload: bool,
    /// Sentry unreachable or behind a failing proxy (for the breaker).
    pub network_failure: bool,
    /// Sentry answered at all (a time to learn from).
    pub answered: bool,
}

impl Pacer {
    pub fn adaptive(limit: AdaptiveLimit, breaker: Breaker) -> Self {
        Self { mode: Mode::Adaptive(limit), breaker }
    }

    pub fn cyclops(pacer: CyclopsPacer, breaker: Breaker) -> Self {
        Self { mode: Mode::Cyclops { pacer, in_flight: 0 }, breaker }
    }

    /// Whether a request may go at `now`; changes nothing.
    pub fn gate(&mut self, now: Instant) -> Gate {
        match self.breaker.peek(now) {
            Permit::Send => {}
            // A probe goes alone.
            Permit::Probe if self.in_flight() == 0 => return Gate::Go,
            Permit::Probe | Permit::WaitForProbe => return Gate::WaitForAnswer,
            Permit::WaitUntil(at) => return Gate::WaitUntil(at),
        }
        match &mut self.mode {
            Mode::Adaptive(limit) if limit.in_flight() < limit.limit() => Gate::Go,
            Mode::Adaptive(limit) => {
                // Tells the limiter that demand reached its limit.
                limit.try_start();
                Gate::WaitForAnswer
            }
            Mode::Cyclops { in_flight, .. } if *in_flight > 0 => Gate::WaitForAnswer,
            Mode::Cyclops { pacer, .. } => {
                let at = pacer.next_send_at(now);
                if at > now { Gate::WaitUntil(at) } else { Gate::Go }
            }
        }
    }

    /// A request goes at `now` (after [`gate`](Self::gate) said [`Gate::Go`]).
    pub fn started(&mut self, now: Instant) {
        // Takes the probe when the breaker is open; a no-op when closed.
        let _permit = self.breaker.permit(now);
        match &mut self.mode {
            Mode::Adaptive(limit) => {
                limit.try_start();
            }
            Mode::Cyclops { pacer, in_flight } => {
                pacer.sent(now);
                *in_flight += 1;
            }
        }
    }

    /// Its answer came back at `now`.
    pub fn finished(&mut self, now: Instant, feedback: Feedback) {
        self.breaker.answered(now, !feedback.network_failure);
        match &mut self.mode {
            Mode::Adaptive(limit) => {
                let signal = if feedback.overload {
                    Signal::Overload
                } else if feedback.answered && !feedback.network_failure {
                    Signal::Success(feedback.rtt)
                } else {
                    Signal::Neutral
                };
                limit.finish(now, signal);
            }
            Mode::Cyclops { pacer, in_flight } => {
                *in_flight = in_flight.saturating_sub(1);
                if feedback.answered {
                    pacer.record(feedback.rtt);
                }
            }
        }
    }

    pub fn in_flight(&self) -> u32 {
        match &self.mode {
            Mode::Adaptive(limit) => limit.in_flight(),
            Mode::Cyclops { in_flight, .. } => *in_flight,
        }
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> u32 {
        match &self.mode {
            Mode::Adaptive(limit) => limit.limit(),
            Mode::Cyclops { .. } => 1,
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn breaker_openings(&self) -> u64 {
        self.breaker.times_opened()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::adaptive::AdaptiveParams;

    fn breaker() -> Breaker {
        Breaker::new(Duration::ZERO, Duration::from_secs(1), Duration::from_secs(4)).expect("valid")
    }

    fn ok(rtt_ms: u64) -> Feedback {
        Feedback { rtt: Duration::from_millis(rtt_ms), overload: false, network_failure: false, answered: true }
    }

    #[test]
    fn adaptive_lets_the_limit_through_then_waits_for_answers() {
        let params = AdaptiveParams { initial: 2, ..AdaptiveParams::default() };
        let mut p = Pacer::adaptive(AdaptiveLimit::new(params).expect("valid"), breaker());
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(p.gate(now), Gate::Go);
            p.started(now);
        }
        assert_eq!(p.gate(now), Gate::WaitForAnswer);
        p.finished(now + Duration::from_millis(10), ok(10));
        assert_eq!(p.gate(now), Gate::Go);
    }

    #[test]
    fn cyclops_sends_one_at_a_time_spaced_by_its_percentile() {
        let pacer = CyclopsPacer::new(10, Duration::from_secs(1)).expect("valid");
        let mut p = Pacer::cyclops(pacer, breaker());
        let t = Instant::now();
        assert_eq!(p.gate(t), Gate::Go);
        p.started(t);
        assert_eq!(p.gate(t), Gate::WaitForAnswer);
        p.finished(t + Duration::from_millis(50), ok(50));
        assert_eq!(p.gate(t + Duration::from_millis(50)), Gate::Go, "spacing counts from the send");
        p.started(t + Duration::from_millis(50));
        p.finished(t + Duration::from_millis(60), ok(10));
        assert_eq!(p.gate(t + Duration::from_millis(60)), Gate::WaitUntil(t + Duration::from_millis(100)));
    }

    #[test]
    fn an_open_breaker_stops_everything_but_one_probe() {
        let mut p = Pacer::adaptive(AdaptiveLimit::new(AdaptiveParams::default()).expect("valid"), breaker());
        let t = Instant::now();
        p.started(t);
        let failed = Feedback { rtt: Duration::ZERO, overload: true, network_failure: true, answered: false };
        p.finished(t, failed);
        assert_eq!(p.breaker_state(), BreakerState::Open);
        assert_eq!(p.gate(t), Gate::WaitUntil(t + Duration::from_secs(1)));
        let t1 = t + Duration::from_secs(1);
        assert_eq!(p.gate(t1), Gate::Go);
        p.started(t1);
        assert_eq!(p.gate(t1), Gate::WaitForAnswer, "only the probe");
        p.finished(t1, ok(5));
        assert_eq!(p.breaker_state(), BreakerState::Closed);
        assert_eq!(p.gate(t1), Gate::Go);
    }
}
