//! Cyclops's pacing, kept for those who want it: one request at a time,
//! each spaced from the previous by the 90th percentile of the last
//! `max_requests_to_average` response times, capped at
//! `max_dump_interval` (Cyclops `MAX_DUMP_INTERVAL`, which the original
//! computed but never enforced; here it is the cap).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::InvalidPacing;

/// The spacing of one-at-a-time requests.
#[derive(Debug, Clone)]
pub struct CyclopsPacer {
    window: VecDeque<Duration>,
    capacity: usize,
    max_interval: Duration,
    last_sent: Option<Instant>,
    /// Reused for the percentile, so that computing it allocates nothing.
    scratch: Vec<Duration>,
}

impl CyclopsPacer {
    /// `max_requests_to_average` (Cyclops `MAX_REQUESTS_TO_AVERAGE`, 5000) and
    /// `max_interval` (Cyclops `MAX_DUMP_INTERVAL`, 1000 ms).
    pub fn new(max_requests_to_average: usize, max_interval: Duration) -> Result<Self, InvalidPacing> {
        if max_requests_to_average == 0 {
            return Err(InvalidPacing { name: "max_requests_to_average", reason: "must be at least 1".into() });
        }
        Ok(Self {
            window: VecDeque::with_capacity(max_requests_to_average),
            capacity: max_requests_to_average,
            max_interval,
            last_sent: None,
            scratch: Vec::with_capacity(max_requests_to_average),
        })
    }

    /// Records one response time.
    pub fn record(&mut self, response_time: Duration) {
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(response_time);
    }

    /// The 90th percentile of the recorded times, capped; zero before any.
    pub fn interval(&mut self) -> Duration {
        if self.window.is_empty() {
            return Duration::ZERO;
        }
        self.scratch.clear();
        self.scratch.extend(self.window.iter().copied());
        // Nearest rank: the smallest time at or above 90% of the samples.
        let rank = (self.scratch.len() * 9).div_ceil(10).max(1) - 1;
        let (_, p90, _) = self.scratch.select_nth_unstable(rank);
        (*p90).min(self.max_interval)
    }

    /// When the next request may go.
    pub fn next_send_at(&mut self, now: Instant) -> Instant {
        match self.last_sent {
            Some(last) => (last + self.interval()).max(now),
            None => now,
        }
    }

    /// Notes that a request went at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn spaces_by_the_90th_percentile_of_the_last_n() {
        let mut pacer = CyclopsPacer::new(10, ms(1000)).expect("valid");
        assert_eq!(pacer.interval(), Duration::ZERO);
        for t in 1..=10 {
            pacer.record(ms(t * 10));
        }
        assert_eq!(pacer.interval(), ms(90));
        // Only the last 10 count: ten fast answers push the slow ones out.
        for _ in 0..10 {
            pacer.record(ms(5));
        }
        assert_eq!(pacer.interval(), ms(5));
    }

    #[test]
    fn the_cap_is_enforced() {
        let mut pacer = CyclopsPacer::new(5, ms(1000)).expect("valid");
        for _ in 0..5 {
            pacer.record(ms(30_000));
        }
        assert_eq!(pacer.interval(), ms(1000));
    }

    #[test]
    fn sends_are_spaced_from_the_previous_one() {
        let mut pacer = CyclopsPacer::new(5, ms(1000)).expect("valid");
        pacer.record(ms(50));
        let t0 = Instant::now();
        assert_eq!(pacer.next_send_at(t0), t0, "the first goes at once");
        pacer.sent(t0);
        assert_eq!(pacer.next_send_at(t0 + ms(10)), t0 + ms(50));
        assert_eq!(pacer.next_send_at(t0 + ms(80)), t0 + ms(80), "never in the past");
    }

    proptest! {
        #[test]
        fn the_interval_stays_within_the_samples_and_the_cap(
            samples in proptest::collection::vec(0u64..5000, 1..300),
            cap in 1u64..3000,
            n in 1usize..100,
        ) {
            let mut pacer = CyclopsPacer::new(n, ms(cap)).expect("valid");
            for s in &samples {
                pacer.record(ms(*s));
            }
            let last: Vec<u64> = samples.iter().rev().take(n).copied().collect();
            let interval = pacer.interval();
            prop_assert!(interval <= ms(cap));
            prop_assert!(interval >= ms(*last.iter().min().unwrap_or(&0)).min(ms(cap)));
            prop_assert!(interval <= ms(*last.iter().max().unwrap_or(&0)));
        }

        /// Slower answers never make the pacer send sooner.
        #[test]
        fn slower_answers_never_shorten_the_interval(base in 1u64..1000, extra in 0u64..1000) {
            let mut fast = CyclopsPacer::new(20, ms(1000)).expect("valid");
            let mut slow = CyclopsPacer::new(20, ms(1000)).expect("valid");
            for _ in 0..20 {
                fast.record(ms(base));
                slow.record(ms(base + extra));
            }
            prop_assert!(slow.interval() >= fast.interval());
        }
    }
}
