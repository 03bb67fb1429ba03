//! Which offsets of one partition are done, and what to commit.
//!
//! Deliveries finish out of order (many requests in flight, retries, a live
//! lane ahead of a backfill lane), but Kafka keeps one committed offset per
//! partition. So the committed offset is the lowest offset not yet done, and
//! the done ranges above it travel in the commit's metadata, so that whoever
//! owns the partition next — this process after a restart, or another
//! forwarder after a rebalance — skips them instead of sending them again.
//!
//! The metadata is text, `cyc1:BASE:G+L,G+L,…`: BASE is the committed offset
//! it belongs to (metadata found beside another offset, say after an operator
//! reset the group, is ignored); each `G+L` is a done range, G offsets after
//! the end of the previous one (or after BASE) and L offsets long. It is kept
//! under [`METADATA_MAX_BYTES`] (brokers refuse more than 4096 by default):
//! ranges that do not fit are left out, which can only cause re-sends, never
//! a loss.

use std::collections::BTreeMap;

/// Longest commit metadata written.
pub const METADATA_MAX_BYTES: usize = 3072;
const PREFIX: &str = "cyc1:";

/// Done offsets of one partition at and above its commit point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The lowest offset not known to be done: what to commit.
    low: i64,
    /// Done ranges above `low`, start → end (exclusive); disjoint, not
    /// touching each other nor `low`.
    done: BTreeMap<i64, i64>,
}

impl PartitionOffsets {
    /// Nothing done at or after `start`.
    pub fn new(start: i64) -> Self {
        Self { low: start, done: BTreeMap::new() }
    }

    /// Resumes from a committed offset and its metadata; metadata that is not
    /// ours or belongs to another offset is ignored.
    pub fn from_commit(committed: i64, metadata: &str) -> Self {
        let mut offsets = Self::new(committed);
        for (start, end) in decode(committed, metadata) {
            offsets.mark_range_done(start, end);
        }
        offsets
    }

    /// What to commit: every offset below it is done.
    pub fn commit_offset(&self) -> i64 {
        self.low
    }

    /// True when `offset` is done (below the commit point or in a done range).
    pub fn is_done(&self, offset: i64) -> bool {
        offset < self.low || self.done.range(..=offset).next_back().is_some_and(|(_, &end)| offset < end)
    }

    /// Number of offsets in `[low, high)` that are not done.
    pub fn pending_below(&self, high: i64) -> u64 {
        if high <= self.low {
            return 0;
        }
        let done: i64 = self.done.iter().map(|(&s, &e)| e.min(high) - s.min(high)).sum();
        u64::try_from(high - self.low - done).unwrap_or(0)
    }

    /// Number of done ranges kept above the commit point.
    #[cfg(test)]
    fn gaps(&self) -> usize {
        self.done.len()
    }

    pub fn mark_done(&mut self, offset: i64) {
        self.mark_range_done(offset, offset + 1);
    }

    /// Marks `[start, end)` done.
    pub fn mark_range_done(&mut self, start: i64, end: i64) {
        let (mut start, mut end) = (start.max(self.low), end);
        if start >= end {
            return;
        }
        // Merge with every range that overlaps or touches [start, end).
        if let Some((&s, &e)) = self.done.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.done.remove(&s);
        }
        while let Some((&s, &e)) = self.done.range(start..=end).next() {
            end = end.max(e);
            self.done.remove(&s);
        }
        if start == self.low {
            self.low = end;
        } else {
            self.done.insert(start, end);
        }
    }

    /// The metadata to commit beside [`commit_offset`](Self::commit_offset),
    /// and whether every done range fitted.
    pub fn metadata(&self) -> (String, bool) {
        let mut text = format!("{PREFIX}{}:", self.low);
        let mut previous_end = self.low;
        for (i, (&start, &end)) in self.done.iter().enumerate() {
            let item = format!("{}{}+{}", if i == 0 { "" } else { "," }, start - previous_end, end - start);
            if text.len() + item.len() > METADATA_MAX_BYTES {
                return (text, false);
            }
            text.push_str(&item);
            previous_end = end;
        }
        (text, true)
    }
}

/// The done ranges in `metadata`, when it belongs to `committed`.
fn decode(committed: i64, metadata: &str) -> Vec<(i64, i64)> {
    let Some(rest) = metadata.strip_prefix(PREFIX) else { return Vec::new() };
    let Some((base, ranges)) = rest.split_once(':') else { return Vec::new() };
    if base.parse::<i64>() != Ok(committed) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut previous_end = committed;
    for item in ranges.split(',').filter(|s| !s.is_empty()) {
        let parsed = item.split_once('+').and_then(|(g, l)| Some((g.parse::<i64>().ok()?, l.parse::<i64>().ok()?)));
        // A damaged list is dropped whole: re-sending is safe, skipping is not.
        let Some((gap, len)) = parsed.filter(|&(g, l)| g >= 0 && l > 0) else { return Vec::new() };
        let Some(start) = previous_end.checked_add(gap) else { return Vec::new() };
        let Some(end) = start.checked_add(len) else { return Vec::new() };
        out.push((start, end));
        previous_end = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commit_point_is_the_lowest_offset_not_done() {
        let mut o = PartitionOffsets::new(10);
        o.mark_done(12);
        o.mark_done(11);
        assert_eq!(o.commit_offset(), 10);
        assert!(o.is_done(11) && o.is_done(12) && !o.is_done(10) && !o.is_done(13));
        o.mark_done(10);
        assert_eq!(o.commit_offset(), 13);
        assert_eq!(o.gaps(), 0);
    }

    #[test]
    fn metadata_round_trips_and_belongs_to_its_offset() {
        let mut o = PartitionOffsets::new(100);
        o.mark_range_done(105, 110);
        o.mark_done(200);
        let (text, complete) = o.metadata();
        assert!(complete);
        assert_eq!(text, "cyc1:100:5+5,90+1");
        assert_eq!(PartitionOffsets::from_commit(100, &text), o);
        assert_eq!(PartitionOffsets::from_commit(101, &text), PartitionOffsets::new(101), "another offset's");
        assert_eq!(PartitionOffsets::from_commit(100, ""), PartitionOffsets::new(100));
        assert_eq!(PartitionOffsets::from_commit(100, "cyc1:100:5+x"), PartitionOffsets::new(100), "damaged");
        assert_eq!(PartitionOffsets::from_commit(100, "cyc1:100:-5+5"), PartitionOffsets::new(100));
    }

    #[test]
    fn metadata_that_does_not_fit_leaves_ranges_out() {
        let mut o = PartitionOffsets::new(0);
        for i in 0..2000 {
            o.mark_done(1 + i * 2);
        }
        let (text, complete) = o.metadata();
        assert!(!complete);
        assert!(text.len() <= METADATA_MAX_BYTES);
        let resumed = PartitionOffsets::from_commit(0, &text);
        assert!(resumed.gaps() > 100 && resumed.gaps() < 2000);
        for i in 0..4001 {
            assert!(!resumed.is_done(i) || o.is_done(i), "never more done than really done");
        }
    }

    #[test]
    fn pending_counts_what_is_left() {
        let mut o = PartitionOffsets::new(0);
        o.mark_range_done(3, 5);
        o.mark_done(8);
        assert_eq!(o.pending_below(10), 7);
        assert_eq!(o.pending_below(4), 3);
        assert_eq!(o.pending_below(0), 0);
    }

    proptest! {
        /// Whatever the order of completions: the commit offset never passes
        /// an offset that is not done, every done offset is known done, and
        /// a resume from the commit knows no offset done that was not.
        #[test]
        fn random_completion_orders(start in 0i64..1000, done in proptest::collection::vec(0i64..300, 0..300)) {
            let mut o = PartitionOffsets::new(start);
            let mut truth = BTreeSet::new();
            for d in done {
                let offset = start + d;
                o.mark_done(offset);
                truth.insert(offset);
                let low = o.commit_offset();
                prop_assert!((start..low).all(|x| truth.contains(&x)));
                prop_assert!(!truth.contains(&low));
            }
            for x in start..start + 310 {
                prop_assert_eq!(o.is_done(x), truth.contains(&x));
            }
            let (text, complete) = o.metadata();
            prop_assert!(text.len() <= METADATA_MAX_BYTES);
            let resumed = PartitionOffsets::from_commit(o.commit_offset(), &text);
            if complete {
                prop_assert_eq!(&resumed, &o);
            }
            for x in start..start + 310 {
                prop_assert!(!resumed.is_done(x) || truth.contains(&x));
            }
            let pending = (start..start + 310).filter(|x| !truth.contains(x)).count() as u64;
            prop_assert_eq!(o.pending_below(start + 310), pending);
        }
    }
}
