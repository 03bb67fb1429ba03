//! How one partition is read: a live lane at the head and, after a jump, a
//! backfill lane that drains the gap the jump left behind. Pure: it decides,
//! the poll thread does what it says ([`Action`]).
//!
//! With `process_newer_messages_first`, a partition whose unread backlog
//! (high watermark minus the live lane's position) passes
//! `jump_threshold_events` jumps: the live lane moves to the newest events
//! (one buffer's worth below the high watermark), so they and every fresh
//! event are read (and, newest first, sent) at once, and the events skipped
//! over become a gap that a second reader
//! drains oldest first, with its guaranteed share of sends
//! ([`super::schedule`]). Gaps are drained in order; a partition keeps at
//! most [`MAX_GAPS`]. The committed offset is the lowest offset not done, so
//! it waits for the backfill, while the done ranges above it (the live
//! lane's work) travel in the commit metadata.

use std::collections::VecDeque;

/// Most gaps a partition keeps; past it, the live lane reads through.
pub const MAX_GAPS: usize = 8;

/// What the poll thread must do for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PauseLive,
    ResumeLive,
    /// Move the live reader to this offset.
    SeekLive(i64),
    /// Start (or move) the backfill reader at this offset.
    BackfillFrom(i64),
    /// The backfill reader is done with this partition.
    BackfillStop,
    PauseBackfill,
    ResumeBackfill,
}

/// What to do with a record a reader delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Buffer it; `holes` is a range of offsets skipped over (compacted,
    /// transaction markers, expired) that count as done.
    Take { holes: Option<(i64, i64)> },
    /// Not this lane's (read before a seek): ignore it.
    Stale,
    /// Past the end of the backfill's gap: ignore it, but the offsets
    /// skipped over up to the gap's end count as done.
    Skip { holes: Option<(i64, i64)> },
    /// The live reader went back below where it was (the log restarted
    /// lower: topic recreated or truncated): take it and forget what was
    /// done above.
    Rewound,
}

/// The reading state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// The offset the live reader should deliver next, once known.
    pub live_next: Option<i64>,
    /// Live records below this were read before a jump: the backfill has them.
    live_floor: i64,
    /// Ranges `[start, end)` the backfill lane still has to read, oldest first.
    gaps: VecDeque<(i64, i64)>,
    backfill_next: Option<i64>,
    pub live_paused: bool,
    pub backfill_paused: bool,
}

impl Reading {
    /// Reading from `start` (the group's commit), or from wherever the
    /// first record is when there is none.
    pub fn new(start: Option<i64>) -> Self {
        Self { live_next: start, ..Self::default() }
    }

    pub fn gaps(&self) -> usize {
        self.gaps.len()
    }

    /// Events in the gaps not read yet (a bound on the backfill's work).
    pub fn gap_events(&self) -> i64 {
        let first = match (self.gaps.front(), self.backfill_next) {
            (Some(&(start, end)), Some(next)) => end - next.max(start),
            (Some(&(start, end)), None) => end - start,
            _ => 0,
        };
        first + self.gaps.iter().skip(1).map(|(s, e)| e - s).sum::<i64>()
    }

    /// The live reader delivered `offset`.
    pub fn live(&mut self, offset: i64) -> Read {
        if offset < self.live_floor {
            return Read::Stale;
        }
        let previous = self.live_next.replace(offset + 1);
        match previous {
            Some(next) if offset > next => Read::Take { holes: Some((next, offset)) },
            Some(next) if offset < next && self.gaps.is_empty() => Read::Rewound,
            Some(next) if offset < next => {
                // Below its position but above the floor with gaps pending:
                // a duplicate on its way; keep the position.
                self.live_next = Some(next);
                Read::Stale
            }
            _ => Read::Take { holes: None },
        }
    }

    /// The backfill reader delivered `offset`.
    pub fn backfill(&mut self, offset: i64, actions: &mut Vec<Action>) -> Read {
        let Some(&(start, end)) = self.gaps.front() else { return Read::Stale };
        if offset < start {
            return Read::Stale;
        }
        if offset >= end {
            let next = self.backfill_next.unwrap_or(start);
            self.next_gap(actions);
            return Read::Skip { holes: (next < end).then_some((next, end)) };
        }
        let next = self.backfill_next.unwrap_or(start);
        let holes = (offset > next).then_some((next, offset));
        self.backfill_next = Some(offset + 1);
        if offset + 1 >= end {
            self.next_gap(actions);
        }
        Read::Take { holes }
    }

    fn next_gap(&mut self, actions: &mut Vec<Action>) {
        self.gaps.pop_front();
        let was_paused = std::mem::replace(&mut self.backfill_paused, false);
        match self.gaps.front() {
            Some(&(start, _)) => {
                self.backfill_next = Some(start);
                actions.push(Action::BackfillFrom(start));
                // A seek leaves a paused reader paused: the next gap would
                // never be read, and the commit would wait on it for good.
                if was_paused {
                    actions.push(Action::ResumeBackfill);
                }
            }
            None => {
                self.backfill_next = None;
                actions.push(Action::BackfillStop);
            }
        }
    }

    /// When more than `threshold` events wait unread ahead of the live lane,
    /// moves it to the newest `window` of them (`high` is the partition's
    /// end), leaving the rest as a gap; true when it did.
    pub fn maybe_jump(&mut self, high: i64, threshold: i64, window: i64, actions: &mut Vec<Action>) -> bool {
        let Some(next) = self.live_next else { return false };
        let target = high - window.max(0);
        if high - next <= threshold || target <= next || self.gaps.len() >= MAX_GAPS {
            return false;
        }
        self.gaps.push_back((next, target));
        if self.gaps.len() == 1 {
            self.backfill_next = Some(next);
            actions.push(Action::BackfillFrom(next));
        }
        self.live_floor = target;
        self.live_next = Some(target);
        actions.push(Action::SeekLive(target));
        true
    }

    /// Pauses or resumes each reader for how full its lane is.
    pub fn flow(&mut self, live_len: usize, backfill_len: usize, cap: usize, actions: &mut Vec<Action>) {
        let (full, drained) = (cap, cap / 2);
        if !self.live_paused && live_len >= full {
            self.live_paused = true;
            actions.push(Action::PauseLive);
        } else if self.live_paused && live_len <= drained {
            self.live_paused = false;
            actions.push(Action::ResumeLive);
        }
        if self.gaps.is_empty() {
            return;
        }
        if !self.backfill_paused && backfill_len >= full {
            self.backfill_paused = true;
            actions.push(Action::PauseBackfill);
        } else if self.backfill_paused && backfill_len <= drained {
            self.backfill_paused = false;
            actions.push(Action::ResumeBackfill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_lane_reports_holes_it_skips() {
        let mut r = Reading::new(Some(10));
        assert_eq!(r.live(10), Read::Take { holes: None });
        assert_eq!(r.live(13), Read::Take { holes: Some((11, 13)) });
        let mut fresh = Reading::new(None);
        assert_eq!(fresh.live(500), Read::Take { holes: None }, "no commit: starts where the first record is");
        assert_eq!(r.live(5), Read::Rewound, "the log restarted lower");
        assert_eq!(r.live(6), Read::Take { holes: None });
    }

    #[test]
    fn a_jump_leaves_a_gap_the_backfill_drains_in_order() {
        let mut r = Reading::new(Some(100));
        let mut actions = Vec::new();
        assert!(!r.maybe_jump(150, 100, 0, &mut actions), "small backlogs are read through");
        assert!(r.maybe_jump(1000, 100, 0, &mut actions));
        assert_eq!(actions, vec![Action::BackfillFrom(100), Action::SeekLive(1000)]);
        assert_eq!(r.live(500), Read::Stale, "read before the seek took effect");
        assert_eq!(r.live(1000), Read::Take { holes: None });
        assert_eq!(r.gap_events(), 900);
        actions.clear();
        assert_eq!(r.backfill(100, &mut actions), Read::Take { holes: None });
        assert_eq!(r.backfill(102, &mut actions), Read::Take { holes: Some((101, 102)) });
        assert_eq!(r.backfill(999, &mut actions), Read::Take { holes: Some((103, 999)) });
        assert_eq!(actions, vec![Action::BackfillStop], "gap drained");
        assert_eq!(r.gaps(), 0);
        assert_eq!(r.backfill(1000, &mut actions), Read::Stale, "the live lane's");
        let mut tail = Reading::new(Some(0));
        tail.maybe_jump(1000, 100, 0, &mut actions);
        assert_eq!(tail.backfill(1005, &mut actions), Read::Skip { holes: Some((0, 1000)) }, "gap gone (retention)");
    }

    #[test]
    fn the_live_lane_keeps_the_newest_window() {
        let mut r = Reading::new(Some(0));
        let mut actions = Vec::new();
        assert!(r.maybe_jump(1000, 100, 50, &mut actions));
        assert_eq!(actions, vec![Action::BackfillFrom(0), Action::SeekLive(950)]);
        assert_eq!(r.gap_events(), 950);
        let mut near = Reading::new(Some(960));
        assert!(!near.maybe_jump(1100, 100, 200, &mut actions), "nothing to skip over");
    }

    #[test]
    fn gaps_queue_up_to_a_bound() {
        let mut r = Reading::new(Some(0));
        let mut actions = Vec::new();
        for i in 1..=MAX_GAPS as i64 + 2 {
            r.live_next = Some((i - 1) * 1000 + 10);
            r.maybe_jump(i * 1000, 100, 0, &mut actions);
        }
        assert_eq!(r.gaps(), MAX_GAPS);
        actions.clear();
        assert_eq!(r.backfill(999, &mut actions), Read::Take { holes: Some((10, 999)) });
        assert_eq!(actions, vec![Action::BackfillFrom(1010)], "on to the next gap");
        assert_eq!(r.backfill(1500, &mut actions), Read::Take { holes: Some((1010, 1500)) });
    }

    #[test]
    fn a_backfill_paused_when_its_gap_ends_reads_the_next_gap() {
        let mut r = Reading::new(Some(0));
        let mut actions = Vec::new();
        for i in 1..=2 {
            r.live_next = Some((i - 1) * 1000 + 10);
            r.maybe_jump(i * 1000, 100, 0, &mut actions);
        }
        r.flow(0, 10, 10, &mut actions);
        actions.clear();
        // The last record of the first gap, read with the backfill lane full.
        assert_eq!(r.backfill(999, &mut actions), Read::Take { holes: Some((10, 999)) });
        assert_eq!(actions, vec![Action::BackfillFrom(1010), Action::ResumeBackfill]);
        actions.clear();
        r.flow(0, 10, 10, &mut actions);
        assert_eq!(actions, vec![Action::PauseBackfill], "paused again while still full: the state follows the reader");
    }

    #[test]
    fn readers_pause_when_their_lane_is_full() {
        let mut r = Reading::new(Some(0));
        let mut actions = Vec::new();
        r.flow(10, 0, 10, &mut actions);
        r.flow(10, 0, 10, &mut actions);
        r.flow(5, 0, 10, &mut actions);
        assert_eq!(actions, vec![Action::PauseLive, Action::ResumeLive]);
        actions.clear();
        r.maybe_jump(1000, 10, 0, &mut actions);
        actions.clear();
        r.flow(0, 10, 10, &mut actions);
        r.flow(0, 4, 10, &mut actions);
        assert_eq!(actions, vec![Action::PauseBackfill, Action::ResumeBackfill]);
    }
}
