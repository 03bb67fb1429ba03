//! Delays between retries of one event: exponential with full jitter, so
//! that forwarders retrying after the same outage do not come back in step.
//! The random draw is passed in, which keeps this pure.

use std::time::Duration;

use super::InvalidPacing;

/// The retry schedule of one event.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays drawn from `[0, min(cap, base × 2^attempt)]`.
    pub fn new(base: Duration, cap: Duration) -> Result<Self, InvalidPacing> {
        if base.is_zero() {
            return Err(InvalidPacing { name: "base", reason: "must be more than zero".into() });
        }
        if cap < base {
            return Err(InvalidPacing { name: "cap", reason: "must be at least the base".into() });
        }
        Ok(Self { base, cap, attempt: 0 })
    }

    /// The ceiling of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, given a uniform draw `unit` in [0, 1].
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let delay = self.ceiling().mul_f64(unit.clamp(0.0, 1.0));
        self.attempt = self.attempt.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000)).expect("valid");
        let ceilings: Vec<u128> = (0..6)
            .map(|_| {
                let c = b.ceiling().as_millis();
                b.next_delay(1.0);
                c
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }

    proptest! {
        #[test]
        fn delays_stay_within_the_cap_and_ceilings_never_shrink(
            base_ms in 1u64..10_000,
            cap_factor in 1u64..1000,
            draws in proptest::collection::vec(0.0f64..=1.0, 1..100),
        ) {
            let cap = Duration::from_millis(base_ms.saturating_mul(cap_factor));
            let mut b = Backoff::new(Duration::from_millis(base_ms), cap).expect("valid");
            let mut last_ceiling = Duration::ZERO;
            for unit in draws {
                let ceiling = b.ceiling();
                prop_assert!(ceiling >= last_ceiling);
                let delay = b.next_delay(unit);
                prop_assert!(delay <= ceiling && delay <= cap);
                last_ceiling = ceiling;
            }
        }
    }
}
