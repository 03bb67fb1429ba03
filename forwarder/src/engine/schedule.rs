//! Which buffered event goes to Sentry next: fair across projects, newest
//! first within a partition, with rate-limit holds and retry timers. Pure:
//! the clock is passed in.
//!
//! - **Projects take turns** (deficit round robin with a quantum of one
//!   event times the project's weight): a project with ready work sends up
//!   to `weight` events, then the next project's turn comes. A flooding
//!   project cannot starve the others, whatever its backlog.
//! - **Within a project**, its partitions take turns.
//! - **Within a partition**, events sit in two lanes: `live` (read at the
//!   head of the partition) and `backfill` (read from a gap left behind when
//!   the live lane jumped ahead). With `newest_first`, the newest live event
//!   goes first, except that `backfill_percent` of the picks take the oldest
//!   event (backfill first), so the backlog keeps draining and the committed
//!   offset keeps moving. Without it, the oldest event always goes first.
//! - **Retries** wait in their partition until their time has come, then go
//!   before anything else of that partition.
//! - **Holds**: a project held by a rate limit is skipped until the hold
//!   ends; its events wait (the buffer is bounded, the rest waits in Kafka).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;

use tokio::time::Instant;

/// Which reader an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Live,
    Backfill,
}

#[derive(Debug)]
struct Retry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Retry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Retry<T> {}
impl<T> PartialOrd for Retry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Retry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Whether the `pick`-th pick (from 1) of a partition takes the oldest
/// event: exactly `percent` of every 100 picks do, spread evenly (20 → every
/// fifth; 30 → the 4th, 7th and 10th of each ten).
fn is_oldest_turn(pick: u64, percent: u64) -> bool {
    pick * percent / 100 > (pick - 1) * percent / 100
}

#[derive(Debug)]
struct PartitionQueue<T> {
    project: u64,
    live: VecDeque<T>,
    backfill: VecDeque<T>,
    retries: BinaryHeap<Reverse<Retry<T>>>,
    picks: u64,
}

impl<T> PartitionQueue<T> {
    fn len(&self) -> usize {
        self.live.len() + self.backfill.len() + self.retries.len()
    }

    fn retry_due(&self, now: Instant) -> bool {
        self.retries.peek().is_some_and(|Reverse(r)| r.at <= now)
    }

    /// With `retry_cap` events waiting to be retried, only those go (when
    /// due): a Sentry failing for long must not move the whole backlog
    /// into the retry queue, in memory.
    fn ready(&self, now: Instant, retry_cap: usize) -> bool {
        self.retry_due(now) || (self.retries.len() < retry_cap && (!self.live.is_empty() || !self.backfill.is_empty()))
    }

    fn pop(&mut self, now: Instant, newest_first: bool, backfill_percent: u64, retry_cap: usize) -> Option<T> {
        if self.retry_due(now) {
            return self.retries.pop().map(|Reverse(r)| r.item);
        }
        if self.retries.len() >= retry_cap {
            return None;
        }
        self.picks += 1;
        let oldest_turn = !newest_first || is_oldest_turn(self.picks, backfill_percent);
        if oldest_turn {
            self.backfill.pop_front().or_else(|| self.live.pop_front())
        } else {
            self.live.pop_back().or_else(|| self.backfill.pop_front())
        }
    }
}

#[derive(Debug)]
struct Project<K> {
    partitions: VecDeque<K>,
    weight: u32,
}

/// The scheduler; `K` names a partition, `T` is a buffered event.
#[derive(Debug)]
pub struct Scheduler<K, T> {
    partitions: HashMap<K, PartitionQueue<T>>,
    projects: HashMap<u64, Project<K>>,
    /// Projects in turn order; the front one is sending.
    ring: VecDeque<u64>,
    /// Events the front project may still send in this turn.
    credit: u32,
    /// Projects held until then. Kept apart from `projects`, so that a hold
    /// outlives a rebalance that takes the project's partitions and gives
    /// them back.
    held: HashMap<u64, Instant>,
    weights: HashMap<u64, u32>,
    newest_first: bool,
    backfill_percent: u64,
    /// Retries a partition may hold before it sends nothing new.
    retry_cap: usize,
    seq: u64,
}

impl<K: Clone + Eq + Hash, T> Scheduler<K, T> {
    /// `backfill_percent`: with `newest_first`, this share of a partition's
    /// picks takes the oldest event (0 = only when nothing newer is buffered).
    ///
    /// `retry_cap`: once a partition has this many events waiting to be
    /// retried, it sends only those until fewer wait.
    pub fn new(newest_first: bool, backfill_percent: u32, weights: HashMap<u64, u32>, retry_cap: usize) -> Self {
        Self {
            partitions: HashMap::new(),
            projects: HashMap::new(),
            ring: VecDeque::new(),
            credit: 0,
            held: HashMap::new(),
            weights,
            newest_first,
            backfill_percent: u64::from(backfill_percent.min(100)),
            retry_cap: retry_cap.max(1),
            seq: 0,
        }
    }

    fn queue(&mut self, partition: &K, project: u64) -> &mut PartitionQueue<T> {
        use std::collections::hash_map::Entry;
        match self.partitions.entry(partition.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let weight = self.weights.get(&project).copied().unwrap_or(1).max(1);
                let p = self.projects.entry(project).or_insert_with(|| Project { partitions: VecDeque::new(), weight });
                p.partitions.push_back(partition.clone());
                if p.partitions.len() == 1 {
                    self.ring.push_back(project);
                }
                e.insert(PartitionQueue {
                    project,
                    live: VecDeque::new(),
                    backfill: VecDeque::new(),
                    retries: BinaryHeap::new(),
                    picks: 0,
                })
            }
        }
    }

    /// Buffers an event read from `partition` of `project`, in offset order
    /// within its lane.
    pub fn push(&mut self, partition: &K, project: u64, lane: Lane, item: T) {
        let q = self.queue(partition, project);
        match lane {
            Lane::Live => q.live.push_back(item),
            Lane::Backfill => q.backfill.push_back(item),
        }
    }

    /// Puts an event back, to be sent again at `at`.
    pub fn retry_at(&mut self, partition: &K, project: u64, item: T, at: Instant) {
        self.seq += 1;
        let seq = self.seq;
        self.queue(partition, project).retries.push(Reverse(Retry { at, seq, item }));
    }

    /// Holds `project` until `until` (a later hold extends, an earlier one
    /// does not shorten); holds over at `now` are forgotten.
    pub fn hold(&mut self, project: u64, until: Instant, now: Instant) {
        self.held.retain(|_, &mut end| end > now);
        let end = self.held.entry(project).or_insert(until);
        *end = (*end).max(until);
    }

    fn held_until(&self, project: u64, now: Instant) -> Option<Instant> {
        self.held.get(&project).copied().filter(|&u| u > now)
    }

    /// Projects held at `now`, with when their hold ends.
    pub fn holds(&self, now: Instant) -> Vec<(u64, Instant)> {
        let mut held: Vec<_> = self.held.iter().filter(|&(_, &u)| u > now).map(|(&id, &u)| (id, u)).collect();
        held.sort_unstable_by_key(|&(id, _)| id);
        held
    }

    /// Drops `partition` and what it buffered (its partition was revoked);
    /// returns how many events were dropped.
    pub fn remove_partition(&mut self, partition: &K) -> usize {
        let Some(q) = self.partitions.remove(partition) else { return 0 };
        if let Some(p) = self.projects.get_mut(&q.project) {
            p.partitions.retain(|k| k != partition);
            if p.partitions.is_empty() {
                self.projects.remove(&q.project);
                self.ring.retain(|&id| id != q.project);
            }
        }
        q.len()
    }

    /// Events buffered for `partition` (retries included).
    pub fn buffered(&self, partition: &K) -> usize {
        self.partitions.get(partition).map_or(0, PartitionQueue::len)
    }

    /// Moves what the live lane of `partition` buffered to the front of its
    /// backfill lane, in order: after a jump, those events are backlog too,
    /// older than the gap the backfill lane drains.
    pub fn demote_live(&mut self, partition: &K) {
        if let Some(q) = self.partitions.get_mut(partition) {
            let live = std::mem::take(&mut q.live);
            for item in live.into_iter().rev() {
                q.backfill.push_front(item);
            }
        }
    }

    /// Events buffered in one lane of `partition` (retries not counted).
    pub fn lane_len(&self, partition: &K, lane: Lane) -> usize {
        self.partitions.get(partition).map_or(0, |q| match lane {
            Lane::Live => q.live.len(),
            Lane::Backfill => q.backfill.len(),
        })
    }

    /// Events buffered, in all.
    pub fn total_buffered(&self) -> usize {
        self.partitions.values().map(PartitionQueue::len).sum()
    }

    fn project_ready(&self, project: u64, now: Instant) -> bool {
        let Some(p) = self.projects.get(&project) else { return false };
        if self.held_until(project, now).is_some() {
            return false;
        }
        p.partitions.iter().any(|k| self.partitions.get(k).is_some_and(|q| q.ready(now, self.retry_cap)))
    }

    /// The next event to send at `now`, with its partition; `None` when
    /// nothing is ready (see [`next_wakeup`](Self::next_wakeup)).
    pub fn next(&mut self, now: Instant) -> Option<(K, T)> {
        for _ in 0..self.ring.len() {
            let &project = self.ring.front()?;
            if self.credit > 0 && self.project_ready(project, now) {
                break;
            }
            self.ring.rotate_left(1);
            if let Some(&next) = self.ring.front() {
                self.credit = self.projects.get(&next).map_or(1, |p| p.weight);
            }
        }
        let &project = self.ring.front()?;
        if !self.project_ready(project, now) {
            return None;
        }
        self.credit = self.credit.saturating_sub(1);
        let (newest_first, backfill_percent, retry_cap) = (self.newest_first, self.backfill_percent, self.retry_cap);
        let p = self.projects.get_mut(&project)?;
        for _ in 0..p.partitions.len() {
            let key = p.partitions.front()?.clone();
            p.partitions.rotate_left(1);
            if let Some(q) = self.partitions.get_mut(&key)
                && q.ready(now, retry_cap)
                && let Some(item) = q.pop(now, newest_first, backfill_percent, retry_cap)
            {
                return Some((key, item));
            }
        }
        None
    }

    /// When something not ready now becomes ready (a hold ends, a retry is
    /// due); `None` when that depends only on new events.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let holds = self.held.values().copied();
        let retries = self.partitions.values().filter_map(|q| q.retries.peek().map(|Reverse(r)| r.at));
        holds.chain(retries).filter(|&t| t > now).min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn sched(newest_first: bool) -> Scheduler<&'static str, u32> {
        Scheduler::new(newest_first, 20, HashMap::new(), 1000)
    }

    fn drain(s: &mut Scheduler<&'static str, u32>, now: Instant) -> Vec<(&'static str, u32)> {
        std::iter::from_fn(|| s.next(now)).collect()
    }

    #[test]
    fn projects_take_turns_whatever_their_backlog() {
        let mut s = sched(false);
        let now = Instant::now();
        for i in 0..100 {
            s.push(&"flood", 1, Lane::Live, i);
        }
        for i in 0..3 {
            s.push(&"small", 2, Lane::Live, 1000 + i);
        }
        let order: Vec<_> = drain(&mut s, now).into_iter().map(|(k, _)| k).collect();
        let first_six = &order[..6];
        assert_eq!(first_six.iter().filter(|k| **k == "small").count(), 3, "{first_six:?}");
        assert_eq!(order.len(), 103);
    }

    #[test]
    fn weights_give_a_larger_share() {
        let mut s: Scheduler<&str, u32> = Scheduler::new(false, 20, HashMap::from([(1, 3)]), 1000);
        let now = Instant::now();
        for i in 0..30 {
            s.push(&"a", 1, Lane::Live, i);
            s.push(&"b", 2, Lane::Live, i);
        }
        let first: Vec<_> = drain(&mut s, now).into_iter().take(20).map(|(k, _)| k).collect();
        assert_eq!(first.iter().filter(|k| **k == "a").count(), 15, "{first:?}");
    }

    #[test]
    fn newest_first_with_a_share_for_the_oldest() {
        let mut s = sched(true);
        let now = Instant::now();
        for i in 0..10 {
            s.push(&"p", 1, Lane::Live, i);
        }
        let order: Vec<_> = drain(&mut s, now).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, vec![9, 8, 7, 6, 0, 5, 4, 3, 2, 1]);
        let mut s = sched(false);
        for i in 0..4 {
            s.push(&"p", 1, Lane::Live, i);
        }
        assert_eq!(drain(&mut s, now).into_iter().map(|(_, i)| i).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn backfill_drains_oldest_first_at_its_share() {
        let mut s = sched(true);
        let now = Instant::now();
        for i in 0..8 {
            s.push(&"p", 1, Lane::Backfill, i);
            s.push(&"p", 1, Lane::Live, 100 + i);
        }
        let order: Vec<_> = drain(&mut s, now).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, vec![107, 106, 105, 104, 0, 103, 102, 101, 100, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn demoted_live_events_go_before_the_backfill() {
        let mut s = sched(true);
        let now = Instant::now();
        s.push(&"p", 1, Lane::Backfill, 10);
        s.push(&"p", 1, Lane::Live, 1);
        s.push(&"p", 1, Lane::Live, 2);
        s.demote_live(&"p");
        assert_eq!(s.lane_len(&"p", Lane::Live), 0);
        s.push(&"p", 1, Lane::Live, 100);
        let order: Vec<_> = drain(&mut s, now).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, vec![100, 1, 2, 10]);
    }

    #[test]
    fn held_projects_are_skipped_until_their_hold_ends() {
        let mut s = sched(false);
        let now = Instant::now();
        s.push(&"a", 1, Lane::Live, 1);
        s.push(&"b", 2, Lane::Live, 2);
        s.hold(1, now + Duration::from_secs(5), now);
        assert_eq!(drain(&mut s, now), vec![("b", 2)]);
        assert_eq!(s.next_wakeup(now), Some(now + Duration::from_secs(5)));
        assert_eq!(s.holds(now), vec![(1, now + Duration::from_secs(5))]);
        assert_eq!(drain(&mut s, now + Duration::from_secs(5)), vec![("a", 1)]);
    }

    #[test]
    fn a_hold_outlives_a_rebalance_that_gives_the_partition_back() {
        let mut s = sched(false);
        let now = Instant::now();
        s.push(&"a", 1, Lane::Live, 1);
        s.hold(1, now + Duration::from_secs(5), now);
        assert_eq!(s.remove_partition(&"a"), 1);
        s.push(&"a", 1, Lane::Live, 1);
        assert!(drain(&mut s, now).is_empty(), "still held");
        assert_eq!(drain(&mut s, now + Duration::from_secs(5)), vec![("a", 1)]);
    }

    #[test]
    fn retries_wait_for_their_time_then_go_first() {
        let mut s = sched(false);
        let now = Instant::now();
        s.retry_at(&"a", 1, 7, now + Duration::from_millis(100));
        assert_eq!(s.next(now), None);
        assert_eq!(s.next_wakeup(now), Some(now + Duration::from_millis(100)));
        s.push(&"a", 1, Lane::Live, 8);
        let later = now + Duration::from_millis(100);
        assert_eq!(drain(&mut s, later), vec![("a", 7), ("a", 8)]);
    }

    #[test]
    fn a_full_retry_queue_stops_fresh_sends() {
        let mut s: Scheduler<&str, u32> = Scheduler::new(false, 20, HashMap::new(), 2);
        let now = Instant::now();
        s.retry_at(&"p", 1, 1, now + Duration::from_secs(1));
        s.push(&"p", 1, Lane::Live, 3);
        assert_eq!(s.next(now), Some(("p", 3)), "one retry waiting: fresh events still go");
        s.retry_at(&"p", 1, 3, now + Duration::from_secs(1));
        s.push(&"p", 1, Lane::Live, 4);
        assert_eq!(s.next(now), None, "two waiting: nothing new until they went");
        let later = now + Duration::from_secs(1);
        assert_eq!(drain(&mut s, later), vec![("p", 1), ("p", 3), ("p", 4)]);
    }

    #[test]
    fn a_removed_partition_drops_its_events() {
        let mut s = sched(false);
        let now = Instant::now();
        s.push(&"a", 1, Lane::Live, 1);
        s.push(&"a", 1, Lane::Live, 2);
        s.push(&"b", 1, Lane::Live, 3);
        assert_eq!(s.remove_partition(&"a"), 2);
        assert_eq!(drain(&mut s, now), vec![("b", 3)]);
        assert_eq!(s.total_buffered(), 0);
    }

    proptest! {
        /// Over any 100 consecutive picks, the oldest lane gets exactly its
        /// percentage, and never two turns closer than 100 / percent rounded down.
        #[test]
        fn the_backfill_share_is_the_configured_percentage(percent in 0u64..=100, start in 1u64..10_000) {
            let turns: Vec<u64> = (start..start + 100).filter(|&p| is_oldest_turn(p, percent)).collect();
            prop_assert_eq!(turns.len() as u64, percent);
            if let Some(spacing) = 100u64.checked_div(percent) {
                prop_assert!(turns.windows(2).all(|w| w[1] - w[0] >= spacing), "{:?}", turns);
            }
        }

        /// Every pushed event comes out exactly once, and while two projects
        /// both have work, neither sends more than `weight` in a row.
        #[test]
        fn nothing_lost_and_turns_are_bounded(
            pushes in proptest::collection::vec((0u64..4, 0u8..3, any::<bool>()), 1..200),
            newest_first in any::<bool>(),
        ) {
            let mut s: Scheduler<(u64, u8), usize> = Scheduler::new(newest_first, 25, HashMap::new(), 1000);
            let now = Instant::now();
            for (i, &(project, partition, backfill)) in pushes.iter().enumerate() {
                let lane = if backfill { Lane::Backfill } else { Lane::Live };
                s.push(&(project, partition), project, lane, i);
            }
            let mut remaining: HashMap<u64, usize> = HashMap::new();
            for &(p, _, _) in &pushes {
                *remaining.entry(p).or_default() += 1;
            }
            let mut seen = vec![false; pushes.len()];
            let mut run = (u64::MAX, 0usize);
            while let Some(((project, _), i)) = s.next(now) {
                prop_assert!(!seen[i]);
                seen[i] = true;
                prop_assert_eq!(pushes[i].0, project);
                run = if run.0 == project { (project, run.1 + 1) } else { (project, 1) };
                let others_waiting = remaining.iter().any(|(&p, &n)| p != project && n > 0);
                prop_assert!(!others_waiting || run.1 <= 1, "project {} sent {} in a row", project, run.1);
                *remaining.entry(project).or_default() -= 1;
            }
            prop_assert!(seen.iter().all(|&x| x));
        }
    }
}
