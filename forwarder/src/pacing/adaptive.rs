//! Adaptive concurrency: how many requests may be in flight to Sentry.
//!
//! Time is cut into windows about one round trip long. During a window the
//! controller notes the mean latency of successful answers, whether any
//! answer signalled overload (timeout, 5xx, a 429 without Sentry's rate-limit
//! header), and whether the limit was reached. At the window's end:
//!
//! - overload, or latency above the baseline by more than
//!   `rtt_deviation_scale` standard deviations → `limit × decrease_ratio`
//!   (at least `min`);
//! - else, when a queue is building at Sentry — as in TCP Vegas, the
//!   window's latency is more than 10% (and at least 1 ms) above `rtt_min`,
//!   the lowest recent window — → `limit − 1`;
//! - else, when the limit was reached, latency stayed at the baseline and
//!   within 5% (or 0.5 ms) of `rtt_min` → `limit + 1` (at most `max`);
//!
//! and the baseline (an exponentially weighted mean and variance of window
//! latencies) takes the window in. Throughput therefore rises to what Sentry
//! can take without raising its latency: the limit settles where at most
//! about one request in twenty waits at Sentry. `rtt_min` is measured anew
//! every [`RTT_MIN_WINDOWS`] windows by halving the limit for two windows
//! (as BBR's ProbeRTT does), so that a Sentry that became slower for good —
//! or faster — is not judged against a stale floor. A 429 *with* `X-Sentry-Rate-Limits`
//! is a quota, not a capacity signal: it is [`Signal::Neutral`] here and
//! holds its project elsewhere.

use std::time::Duration;

use tokio::time::Instant;

use super::InvalidPacing;

/// Latency within this share of the baseline counts as "at the baseline".
const LATENCY_TOLERANCE: f64 = 0.02;
/// A queue shorter than this is noise whatever the floor, in seconds: a
/// busy host's scheduler alone moves a sub-millisecond round trip by more
/// than [`QUEUE_TOLERANCE`]. Without it a Sentry (or a relay) that answers
/// within a millisecond reads as queueing at every window and the limit
/// sits at `min`. It only applies where `rtt_min` is under 10 ms: above,
/// the relative tolerances are the larger.
const NOISE_FLOOR_SECS: f64 = 0.000_5;
/// Windows after which the lowest latency is measured anew.
pub const RTT_MIN_WINDOWS: u32 = 100;
/// Windows a re-measurement lasts: one for the queue to drain, one to measure.
const PROBE_WINDOWS: u32 = 2;

/// Growth stops once a window's latency is this share above the lowest
/// recent one (the Vegas guard: requests then wait in Sentry's queue, and
/// more in flight would only wait longer), and the limit shrinks by one past
/// twice it. Without it the baseline drifts up with the queue it causes. 5%
/// keeps the requests that wait to about one in twenty, so the 90th
/// percentile stays at the unloaded latency.
const QUEUE_TOLERANCE: f64 = 0.05;

/// Parameters; [`AdaptiveParams::default`] documents the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveParams {
    /// Limit at start. Defaults to 2.
    pub initial: u32,
    /// Lowest limit. Defaults to 1.
    pub min: u32,
    /// Highest limit. Defaults to 64.
    pub max: u32,
    /// Multiplier on overload, in (0, 1). Defaults to 0.9.
    pub decrease_ratio: f64,
    /// Weight of a new window in the baseline, in (0, 1]. Defaults to 0.4.
    pub ewma_alpha: f64,
    /// Standard deviations above the baseline that count as rising latency. Defaults to 2.5.
    pub rtt_deviation_scale: f64,
    /// Shortest window, so that a very fast Sentry is not judged on noise. Defaults to 20 ms.
    pub min_window: Duration,
}

impl Default for AdaptiveParams {
    fn default() -> Self {
        Self {
            initial: 2,
            min: 1,
            max: 64,
            decrease_ratio: 0.9,
            ewma_alpha: 0.4,
            rtt_deviation_scale: 2.5,
            min_window: Duration::from_millis(20),
        }
    }
}

impl AdaptiveParams {
    pub fn validate(&self) -> Result<(), InvalidPacing> {
        let bad = |name, reason: &str| Err(InvalidPacing { name, reason: reason.into() });
        if self.min == 0 {
            return bad("min", "must be at least 1");
        }
        if self.max < self.min {
            return bad("max", "must be at least min");
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return bad("initial", "must be between min and max");
        }
        if !(self.decrease_ratio > 0.0 && self.decrease_ratio < 1.0) {
            return bad("decrease_ratio", "must be in (0, 1)");
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return bad("ewma_alpha", "must be in (0, 1]");
        }
        if !(self.rtt_deviation_scale.is_finite() && self.rtt_deviation_scale >= 0.0) {
            return bad("rtt_deviation_scale", "must be a non-negative number");
        }
        Ok(())
    }
}

/// What one answer says about Sentry's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A 2xx, and how long it took.
    Success(Duration),
    /// A timeout, connection error, 5xx or a 429 without Sentry's header.
    Overload,
    /// Anything else (4xx, quota 429s): no information about capacity.
    Neutral,
}

/// Exponentially weighted mean and variance.
#[derive(Debug, Clone, Copy, PartialEq)]
struct EwmaVar {
    mean: f64,
    var: f64,
}

impl EwmaVar {
    fn update(&mut self, alpha: f64, x: f64) {
        let diff = x - self.mean;
        let inc = alpha * diff;
        self.mean += inc;
        self.var = (1.0 - alpha) * (self.var + diff * inc);
    }
}

#[derive(Debug, Clone, Default)]
struct Window {
    rtt_sum: f64,
    rtt_count: u32,
    overload: bool,
    reached_limit: bool,
}

/// The controller. Call [`try_start`](Self::try_start) before a request
/// and [`finish`](Self::finish) with its outcome.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    params: AdaptiveParams,
    limit: u32,
    in_flight: u32,
    baseline: Option<EwmaVar>,
    /// The lowest window latency lately, in seconds, and its age in windows.
    rtt_min: Option<(f64, u32)>,
    /// While `rtt_min` is measured anew: the limit to restore, windows left.
    probe: Option<(u32, u32)>,
    window: Window,
    window_end: Option<Instant>,
}

impl AdaptiveLimit {
    pub fn new(params: AdaptiveParams) -> Result<Self, InvalidPacing> {
        params.validate()?;
        Ok(Self {
            limit: params.initial,
            params,
            in_flight: 0,
            baseline: None,
            rtt_min: None,
            probe: None,
            window: Window::default(),
            window_end: None,
        })
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The baseline latency, once one window has passed.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.map(|b| Duration::from_secs_f64(b.mean.max(0.0)))
    }

    /// Takes a slot for one request; false when the limit is reached.
    pub fn try_start(&mut self) -> bool {
        if self.in_flight >= self.limit {
            self.window.reached_limit = true;
            return false;
        }
        self.in_flight += 1;
        if self.in_flight >= self.limit {
            self.window.reached_limit = true;
        }
        true
    }

    /// Gives the slot back with what the answer said, at `now`.
    pub fn finish(&mut self, now: Instant, signal: Signal) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match signal {
            Signal::Success(rtt) => {
                self.window.rtt_sum += rtt.as_secs_f64();
                self.window.rtt_count += 1;
            }
            Signal::Overload => self.window.overload = true,
            Signal::Neutral => {}
        }
        match self.window_end {
            None => {
                // The first answer opens the first window.
                if let Signal::Success(rtt) = signal {
                    self.window_end = Some(now + rtt.max(self.params.min_window));
                } else if signal == Signal::Overload {
                    self.decrease();
                    self.window = Window::default();
                }
            }
            Some(end) if now >= end => self.close_window(now),
            Some(_) => {}
        }
    }

    fn decrease(&mut self) {
        let lowered = (f64::from(self.limit) * self.params.decrease_ratio).floor() as u32;
        self.limit = lowered.max(self.params.min);
    }

    fn close_window(&mut self, now: Instant) {
        let window = std::mem::take(&mut self.window);
        let current = (window.rtt_count > 0).then(|| window.rtt_sum / f64::from(window.rtt_count));
        if let Some((restore, left)) = self.probe {
            self.probe_window(restore, left, current, window.overload);
        } else {
            self.adjust(&window, current);
        }
        if let Some(rtt) = current {
            let base = self.baseline.get_or_insert(EwmaVar { mean: rtt, var: 0.0 });
            base.update(self.params.ewma_alpha, rtt);
            self.rtt_min = match self.rtt_min {
                Some((min, age)) if rtt >= min => Some((min, age + 1)),
                _ => Some((rtt, 0)),
            };
        }
        if self.probe.is_none()
            && self.rtt_min.is_some_and(|(_, age)| age >= RTT_MIN_WINDOWS)
            && self.limit > self.params.min
        {
            self.probe = Some((self.limit, PROBE_WINDOWS));
            self.limit = (self.limit / 2).max(self.params.min);
        }
        let length = self.baseline().unwrap_or(self.params.min_window).max(self.params.min_window);
        self.window_end = Some(now + length);
    }

    /// One window of a re-measurement of `rtt_min` at half the limit.
    fn probe_window(&mut self, restore: u32, left: u32, current: Option<f64>, overload: bool) {
        if left > 1 {
            self.probe = Some((restore, left - 1));
            return;
        }
        self.probe = None;
        // The last window, its queue drained, is the new floor.
        if let Some(rtt) = current {
            self.rtt_min = Some((rtt, 0));
        }
        self.limit = if overload {
            ((f64::from(restore) * self.params.decrease_ratio).floor() as u32).max(self.params.min)
        } else {
            restore
        };
    }

    fn adjust(&mut self, window: &Window, current: Option<f64>) {
        match (self.baseline, current) {
            (_, _) if window.overload => self.decrease(),
            (Some(base), Some(rtt)) => {
                // A steady server has almost no variance; the tolerance keeps
                // measurement noise from reading as rising latency.
                let tolerance = base.mean * LATENCY_TOLERANCE;
                let threshold = (base.var.max(0.0).sqrt() * self.params.rtt_deviation_scale).max(tolerance);
                let rtt_min = self.rtt_min.map_or(rtt, |(min, _)| min.min(rtt));
                let queue = rtt - rtt_min;
                if rtt > base.mean + threshold {
                    self.decrease();
                } else if queue > (2.0 * QUEUE_TOLERANCE * rtt_min).max(2.0 * NOISE_FLOOR_SECS) {
                    self.limit = self.limit.saturating_sub(1).max(self.params.min);
                } else if window.reached_limit
                    && rtt <= base.mean + tolerance
                    && queue <= (QUEUE_TOLERANCE * rtt_min).max(NOISE_FLOOR_SECS)
                    && self.limit < self.params.max
                {
                    self.limit += 1;
                }
            }
            (None, _) | (_, None) => {
                if window.reached_limit && !window.overload && self.limit < self.params.max {
                    self.limit += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limit() -> AdaptiveLimit {
        AdaptiveLimit::new(AdaptiveParams::default()).expect("valid")
    }

    /// Runs `windows` windows of `per_window` requests answered in `rtt`
    /// (a closed loop keeping the limit full), returning the limits seen.
    fn drive(
        ctl: &mut AdaptiveLimit,
        start: Instant,
        windows: u32,
        rtt: impl Fn(u32) -> Duration,
    ) -> (Instant, Vec<u32>) {
        let mut now = start;
        let mut seen = Vec::new();
        for _ in 0..windows {
            let latency = rtt(ctl.limit());
            while ctl.try_start() {}
            let slots = ctl.in_flight();
            now += latency;
            for _ in 0..slots {
                ctl.finish(now, Signal::Success(latency));
            }
            seen.push(ctl.limit());
        }
        (now, seen)
    }

    #[test]
    fn grows_while_latency_stays_at_its_baseline() {
        let mut ctl = limit();
        let (_, seen) = drive(&mut ctl, Instant::now(), 40, |_| Duration::from_millis(30));
        assert!(ctl.limit() > 20, "grew to {}: {seen:?}", ctl.limit());
        assert!(ctl.limit() <= AdaptiveParams::default().max);
    }

    #[test]
    fn grows_against_a_server_that_answers_within_a_millisecond() {
        // 150 µs, and 40 µs more per request in flight: what a relay next
        // door, or this process's own busy core, looks like. Each request
        // more is 20% more latency, far past the relative tolerances, yet
        // under a millisecond in all.
        let mut ctl = limit();
        let (_, seen) =
            drive(&mut ctl, Instant::now(), 20_000, |limit| Duration::from_micros(150 + 40 * u64::from(limit)));
        let settled = &seen[10_000..];
        // Up to about a millisecond of queue, not past it.
        assert!(settled.iter().all(|&l| (8..=32).contains(&l)), "{settled:?}");
    }

    #[test]
    fn finds_the_knee_of_a_server_that_slows_past_its_capacity() {
        // Latency is flat up to 8 in flight, then grows with the queue.
        let knee = |limit: u32| Duration::from_millis(20 + 10 * u64::from(limit.saturating_sub(8)));
        let mut ctl = limit();
        let (_, seen) = drive(&mut ctl, Instant::now(), 200, knee);
        let settled = &seen[100..];
        let near = settled.iter().filter(|l| (6..=10).contains(*l)).count();
        assert!(near * 10 >= settled.len() * 9, "stays near the knee of 8 (but while re-measuring): {settled:?}");
        assert!(settled.iter().all(|&l| l <= 12), "{settled:?}");
    }

    #[test]
    fn stays_at_the_capacity_of_a_server_that_queues_past_it() {
        // 16 served at once; more wait their turn, so latency grows with the excess.
        let queueing = |limit: u32| Duration::from_millis(20).mul_f64((f64::from(limit) / 16.0).max(1.0));
        let mut ctl = limit();
        let (_, seen) = drive(&mut ctl, Instant::now(), 300, queueing);
        let settled = &seen[150..];
        let at_capacity = settled.iter().filter(|l| (16..=17).contains(*l)).count();
        // Off it: a one-window overshoot to 18 (answers lag a window) and the
        // re-measurement of the floor at half the limit every RTT_MIN_WINDOWS windows.
        assert!(at_capacity * 10 >= settled.len() * 9, "at the capacity of 16, one waiting at most: {settled:?}");
        assert!(settled.iter().all(|&l| l <= 18), "{settled:?}");
    }

    #[test]
    fn overload_cuts_the_limit_multiplicatively() {
        let mut ctl = limit();
        let (now, _) = drive(&mut ctl, Instant::now(), 40, |_| Duration::from_millis(30));
        let before = ctl.limit();
        assert!(ctl.try_start());
        // Past the window's end: the window closes on this answer.
        ctl.finish(now + Duration::from_secs(1), Signal::Overload);
        assert_eq!(ctl.limit(), ((f64::from(before) * 0.9).floor() as u32).max(1));
    }

    #[test]
    fn parameters_are_validated() {
        for params in [
            AdaptiveParams { min: 0, ..AdaptiveParams::default() },
            AdaptiveParams { max: 0, ..AdaptiveParams::default() },
            AdaptiveParams { initial: 100, ..AdaptiveParams::default() },
            AdaptiveParams { decrease_ratio: 1.0, ..AdaptiveParams::default() },
            AdaptiveParams { ewma_alpha: 0.0, ..AdaptiveParams::default() },
            AdaptiveParams { rtt_deviation_scale: f64::NAN, ..AdaptiveParams::default() },
        ] {
            assert!(AdaptiveLimit::new(params).is_err());
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Start,
        Finish(u8, u64),
        Advance(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Start),
            (0u8..3, 1u64..500).prop_map(|(kind, ms)| Step::Finish(kind, ms)),
            (0u64..200).prop_map(Step::Advance),
        ]
    }

    proptest! {
        /// Whatever happens, the limit stays within [min, max], in-flight
        /// never exceeds the limit it was admitted under, and slots balance.
        #[test]
        fn invariants_hold_for_any_sequence(steps in proptest::collection::vec(step(), 1..400)) {
            let params = AdaptiveParams::default();
            let mut ctl = AdaptiveLimit::new(params.clone()).expect("valid");
            let mut now = Instant::now();
            let mut admitted = 0u32;
            for s in steps {
                match s {
                    Step::Start => if ctl.try_start() { admitted += 1; },
                    Step::Finish(kind, ms) if admitted > 0 => {
                        admitted -= 1;
                        let signal = match kind {
                            0 => Signal::Success(Duration::from_millis(ms)),
                            1 => Signal::Overload,
                            _ => Signal::Neutral,
                        };
                        ctl.finish(now, signal);
                    }
                    Step::Finish(..) => {}
                    Step::Advance(ms) => now += Duration::from_millis(ms),
                }
                prop_assert!(ctl.limit() >= params.min && ctl.limit() <= params.max);
                prop_assert_eq!(ctl.in_flight(), admitted);
            }
        }

        /// Rising latency never raises the limit: once windows are slower
        /// than the baseline (past the 2% noise tolerance), the limit ends
        /// unchanged or lower. Two steps, because `drive` answers a whole
        /// step at one instant and so the first closing window mixes the
        /// last fast answers with the first slow one.
        #[test]
        fn slower_windows_never_raise_the_limit(base_ms in 20u64..500, factor in 1.03f64..10.0) {
            let mut ctl = AdaptiveLimit::new(AdaptiveParams::default()).expect("valid");
            let (now, _) = drive(&mut ctl, Instant::now(), 30, |_| Duration::from_millis(base_ms));
            let before = ctl.limit();
            let slow = Duration::from_secs_f64(base_ms as f64 * factor / 1000.0);
            let (_, seen) = drive(&mut ctl, now, 2, |_| slow);
            prop_assert!(seen[1] <= before, "{} -> {:?}", before, seen);
        }
    }
}
