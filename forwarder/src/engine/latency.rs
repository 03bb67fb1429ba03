//! Sentry's recent response times for `/count` (Cyclops's `average` and
//! `percentile`): two HDR histograms in turn, each covering up to `window`
//! answers, so the figures describe the last `window` to `2 × window`
//! answers in constant memory.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest time recorded, ms; longer answers count as this.
const MAX_MS: u64 = 3_600_000;

#[derive(Debug)]
pub struct LatencyWindow {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    window: u64,
}

impl LatencyWindow {
    pub fn new(window: usize) -> Self {
        // Constant, valid bounds: this cannot fail.
        let histogram = || Histogram::new_with_bounds(1, MAX_MS, 2).expect("valid histogram bounds");
        Self { current: histogram(), previous: histogram(), window: window.max(1) as u64 }
    }

    pub fn record(&mut self, rtt: Duration) {
        if self.current.len() >= self.window {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
        }
        let ms = u64::try_from(rtt.as_millis()).unwrap_or(MAX_MS).clamp(1, MAX_MS);
        self.current.saturating_record(ms);
    }

    /// Mean and 90th percentile, ms; zeros before any answer.
    pub fn summary(&self) -> (f64, f64) {
        let mut merged = self.current.clone();
        if merged.add(&self.previous).is_err() || merged.is_empty() {
            return (0.0, 0.0);
        }
        (merged.mean(), merged.value_at_quantile(0.9) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_the_recent_answers() {
        let mut w = LatencyWindow::new(100);
        assert_eq!(w.summary(), (0.0, 0.0));
        for ms in 1..=100 {
            w.record(Duration::from_millis(ms));
        }
        let (mean, p90) = w.summary();
        assert!((mean - 50.5).abs() < 1.0, "{mean}");
        assert!((89.0..=91.0).contains(&p90), "{p90}");
        for _ in 0..200 {
            w.record(Duration::from_millis(1000));
        }
        assert!(w.summary().0 > 990.0, "old answers age out");
    }
}
