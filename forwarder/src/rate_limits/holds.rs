//! Rate-limit holds on some of a project's data categories. Pure: the clock
//! is passed in.
//!
//! Sentry limits each data category on its own: a project over its
//! transaction quota still takes its errors. A hold that names categories
//! (`X-Sentry-Rate-Limits: 3600:transaction:organization`) therefore parks
//! only the records whose every category is held, until a hold ends, while
//! the project's other records go on; a hold on every category stops the
//! whole project in the scheduler instead
//! ([`crate::engine::schedule::Scheduler::hold`]). A record only partly held (an
//! error with an attachment, the attachment over its quota) is sent: Sentry
//! takes what it may and drops the rest, as the SDK itself would have; if it
//! refuses the whole record, the record waits as a refused one. A record
//! whose categories are unknown (written by an older ingest) is parked by
//! any hold of its project.

use std::collections::HashMap;

use tokio::time::Instant;

/// Active category holds, per project.
#[derive(Debug, Default)]
pub struct CategoryHolds {
    by_project: HashMap<u64, HashMap<String, Instant>>,
}

impl CategoryHolds {
    /// Holds `category` of `project` until `until` (a later hold extends, an
    /// earlier one does not shorten); holds over at `now` are forgotten.
    pub fn hold(&mut self, project: u64, category: &str, until: Instant, now: Instant) {
        self.by_project.retain(|_, holds| {
            holds.retain(|_, &mut end| end > now);
            !holds.is_empty()
        });
        let holds = self.by_project.entry(project).or_default();
        let end = holds.entry(category.to_owned()).or_insert(until);
        *end = (*end).max(until);
    }

    /// Until when a record of `project` with `categories` must wait (the
    /// first of its holds to end), or `None` when it may go now.
    pub fn parked_until(&self, project: u64, categories: &[String], now: Instant) -> Option<Instant> {
        let holds = self.by_project.get(&project)?;
        let active = holds.iter().filter(|&(_, &end)| end > now);
        if categories.is_empty() {
            return active.map(|(_, &end)| end).max();
        }
        categories.iter().map(|c| holds.get(c).copied().filter(|&end| end > now)).min().flatten()
    }

    /// The holds active at `now`: project, category, end; sorted.
    pub fn active(&self, now: Instant) -> Vec<(u64, String, Instant)> {
        let mut list: Vec<_> = self
            .by_project
            .iter()
            .flat_map(|(&project, holds)| {
                holds.iter().filter(|&(_, &end)| end > now).map(move |(c, &end)| (project, c.clone(), end))
            })
            .collect();
        list.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        list
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cats(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_records_of_a_held_category_are_parked() {
        let now = Instant::now();
        let mut holds = CategoryHolds::default();
        holds.hold(1, "transaction", now + Duration::from_secs(60), now);
        assert_eq!(holds.parked_until(1, &cats(&["transaction"]), now), Some(now + Duration::from_secs(60)));
        assert_eq!(holds.parked_until(1, &cats(&["error"]), now), None, "errors go on");
        assert_eq!(holds.parked_until(2, &cats(&["transaction"]), now), None, "other projects go on");
        assert_eq!(holds.parked_until(1, &cats(&["error", "transaction"]), now), None, "partly held: Sentry decides");
        holds.hold(1, "profile", now + Duration::from_secs(30), now);
        assert_eq!(
            holds.parked_until(1, &cats(&["transaction", "profile"]), now),
            Some(now + Duration::from_secs(30)),
            "wholly held: until the first hold ends"
        );
        assert!(holds.parked_until(1, &[], now).is_some(), "unknown categories wait");
    }

    #[test]
    fn holds_end_extend_and_are_listed() {
        let now = Instant::now();
        let mut holds = CategoryHolds::default();
        holds.hold(1, "attachment", now + Duration::from_secs(10), now);
        holds.hold(1, "attachment", now + Duration::from_secs(5), now);
        assert_eq!(holds.active(now), vec![(1, "attachment".to_owned(), now + Duration::from_secs(10))]);
        holds.hold(1, "attachment", now + Duration::from_secs(30), now);
        let later = now + Duration::from_secs(31);
        assert_eq!(holds.parked_until(1, &cats(&["attachment"]), later), None, "over");
        assert!(holds.active(later).is_empty());
        holds.hold(1, "error", later + Duration::from_secs(1), later);
        assert_eq!(holds.active(later).len(), 1, "the ended hold was forgotten");
    }
}
