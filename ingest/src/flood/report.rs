//! The flood report served at `/floods`: which errors the flood filter is
//! dropping, per project, in the recent past — how many, since when, what
//! they say, from which release and which hosts. It is what an operator
//! reads during an incident.
//!
//! Memory is bounded: at most `report_max_fingerprints` entries, each with
//! at most `HOSTS_PER_ENTRY` hosts and every text cut to `TEXT_MAX_BYTES`
//! (they come from the events: a client could send a megabyte-long
//! `server_name`); entries not seen for `report_window_secs` are forgotten.
//! When the table is full, a new fingerprint takes the place of the one
//! with the fewest drops and inherits its count, as in the space-saving
//! top-k algorithm: two floods that keep arriving then cannot evict each
//! other back to 1 forever, and a real flood climbs to the top. Such a
//! count is an upper bound; `overcount` says by how much at most. Each instance reports its own drops;
//! `cyclops-count --floods` adds them up across the farm.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cyclops_common::ids::{Fingerprint, ProjectId};
use serde::Serialize;

/// Hosts kept per entry; a new host replaces the least frequent one.
const HOSTS_PER_ENTRY: usize = 5;
/// Longest text kept (title, release, host), in bytes.
const TEXT_MAX_BYTES: usize = 200;

/// What a dropped event says about itself, borrowed: most drops only add
/// to an existing entry, and copy nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample<'a> {
    /// `Type: value` of the exception, or the message.
    pub title: &'a str,
    pub release: Option<&'a str>,
    /// `server_name`, else the client's address.
    pub host: &'a str,
}

/// One flooding fingerprint of one project.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FloodEntry {
    pub project: u64,
    pub fingerprint: String,
    pub dropped: u64,
    /// How many of `dropped` may belong to the fingerprints this entry
    /// replaced when the table was full (0 when it never replaced one).
    pub overcount: u64,
    /// Unix milliseconds.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub title: String,
    /// The release of the latest dropped event that named one.
    pub release: Option<String>,
    /// The most frequent hosts, most frequent first.
    pub hosts: Vec<HostCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostCount {
    pub host: String,
    pub count: u64,
}

/// The drops of the recent past, bounded in memory.
#[derive(Debug)]
pub struct FloodReport {
    capacity: usize,
    window: Duration,
    /// Project → fingerprint → entry.
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_project: HashMap<u64, HashMap<String, FloodEntry>>,
    len: usize,
    /// When stale entries were last forgotten, Unix ms.
    purged_ms: u64,
}

impl Entries {
    fn retain(&mut self, mut keep: impl FnMut(&FloodEntry) -> bool) {
        for entries in self.by_project.values_mut() {
            entries.retain(|_, e| keep(e));
        }
        self.by_project.retain(|_, entries| !entries.is_empty());
        self.len = self.by_project.values().map(HashMap::len).sum();
    }
}

impl FloodReport {
    pub fn new(capacity: usize, window: Duration) -> Self {
        Self { capacity, window, entries: Mutex::new(Entries::default()) }
    }

    /// Counts one dropped event at `now_ms` (Unix milliseconds).
    pub fn dropped(&self, project: ProjectId, fingerprint: &Fingerprint, sample: &Sample, now_ms: u64) {
        let (project, fingerprint) = (project.get(), fingerprint.as_str());
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        if let Some(entry) = entries.by_project.get_mut(&project).and_then(|p| p.get_mut(fingerprint)) {
            entry.dropped += 1;
            entry.last_seen_ms = now_ms;
            if let Some(release) = sample.release.map(cut)
                && entry.release.as_deref() != Some(&*release)
            {
                entry.release = Some(release.into_owned());
            }
            count_host(&mut entry.hosts, &cut(sample.host));
            return;
        }
        // Stale entries go at most once a second: that pass is over the whole table.
        if entries.len >= self.capacity && now_ms.saturating_sub(entries.purged_ms) >= 1000 {
            self.forget_stale(&mut entries, now_ms);
        }
        let mut inherited = 0;
        if entries.len >= self.capacity {
            // Full of live floods: the smallest gives way (a scan of at most
            // `capacity` entries, only for a fingerprint not yet tracked).
            let smallest = entries
                .by_project
                .values()
                .flat_map(HashMap::values)
                .min_by_key(|e| (e.dropped, e.last_seen_ms))
                .map(|e| (e.project, e.fingerprint.clone(), e.dropped));
            if let Some((p, f, dropped)) = smallest {
                if let Some(list) = entries.by_project.get_mut(&p) {
                    list.remove(&f);
                    if list.is_empty() {
                        entries.by_project.remove(&p);
                    }
                }
                entries.len -= 1;
                inherited = dropped;
            }
        }
        let entry = FloodEntry {
            project,
            fingerprint: fingerprint.to_owned(),
            dropped: inherited + 1,
            overcount: inherited,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            title: cut(sample.title).into_owned(),
            release: sample.release.map(|r| cut(r).into_owned()),
            hosts: vec![HostCount { host: cut(sample.host).into_owned(), count: 1 }],
        };
        entries.by_project.entry(project).or_default().insert(fingerprint.to_owned(), entry);
        entries.len += 1;
    }

    fn forget_stale(&self, entries: &mut Entries, now_ms: u64) {
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        entries.retain(|e| now_ms.saturating_sub(e.last_seen_ms) <= window_ms);
        entries.purged_ms = now_ms;
    }

    /// The top `limit` entries of each project seen within the window, most
    /// dropped first, keyed by project id.
    pub fn top(&self, limit: usize, now_ms: u64) -> std::collections::BTreeMap<u64, Vec<FloodEntry>> {
        // Copies under the lock (at most `capacity` entries); sorts after.
        let mut by_project: std::collections::BTreeMap<u64, Vec<FloodEntry>> = {
            let Ok(mut entries) = self.entries.lock() else { return Default::default() };
            self.forget_stale(&mut entries, now_ms);
            entries.by_project.iter().map(|(project, list)| (*project, list.values().cloned().collect())).collect()
        };
        for list in by_project.values_mut() {
            list.sort_by(|a, b| b.dropped.cmp(&a.dropped).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
            list.truncate(limit);
        }
        by_project
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

fn count_host(hosts: &mut Vec<HostCount>, host: &str) {
    if let Some(h) = hosts.iter_mut().find(|h| h.host == host) {
        h.count += 1;
    } else if hosts.len() < HOSTS_PER_ENTRY {
        hosts.push(HostCount { host: host.to_owned(), count: 1 });
    } else if let Some(least) = hosts.iter_mut().min_by_key(|h| h.count) {
        // Space-saving: the newcomer inherits the evicted count, so a host
        // that keeps coming climbs back up.
        least.host = host.to_owned();
        least.count += 1;
    }
    hosts.sort_by_key(|h| std::cmp::Reverse(h.count));
}

/// `text` cut to `TEXT_MAX_BYTES` on a character boundary, marked with `…`.
fn cut(text: &str) -> Cow<'_, str> {
    if text.len() <= TEXT_MAX_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = TEXT_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(title: &'a str, release: Option<&'a str>, host: &'a str) -> Sample<'a> {
        Sample { title, release, host }
    }

    #[test]
    fn drops_add_up_per_project_and_fingerprint() {
        let report = FloodReport::new(100, Duration::from_secs(60));
        for t in 0..5 {
            report.dropped(
                ProjectId::new(1),
                &Fingerprint::new("fp-a"),
                &sample("ZeroDivisionError: division by zero", Some("shop@1"), "web-1"),
                1000 + t,
            );
        }
        report.dropped(
            ProjectId::new(1),
            &Fingerprint::new("fp-a"),
            &sample("ignored later title", Some("shop@2"), "web-2"),
            2000,
        );
        report.dropped(ProjectId::new(1), &Fingerprint::new("fp-b"), &sample("KeyError", None, "web-1"), 2000);
        report.dropped(ProjectId::new(2), &Fingerprint::new("fp-a"), &sample("other project", None, "web-9"), 2000);
        let top = report.top(10, 2000);
        let a = &top[&1][0];
        assert_eq!((a.fingerprint.as_str(), a.dropped, a.first_seen_ms, a.last_seen_ms), ("fp-a", 6, 1000, 2000));
        assert_eq!(a.title, "ZeroDivisionError: division by zero", "the first sample's title stays");
        assert_eq!(a.release.as_deref(), Some("shop@2"), "the latest release");
        assert_eq!(
            a.hosts,
            vec![HostCount { host: "web-1".into(), count: 5 }, HostCount { host: "web-2".into(), count: 1 }]
        );
        assert_eq!(top[&1][1].fingerprint, "fp-b");
        assert_eq!(top[&2].len(), 1);
    }

    #[test]
    fn memory_stays_bounded_and_new_floods_still_show() {
        let report = FloodReport::new(3, Duration::from_secs(60));
        for (fp, n) in [("big", 50), ("mid", 20), ("small", 2)] {
            for _ in 0..n {
                report.dropped(ProjectId::new(1), &Fingerprint::new(fp), &sample(fp, None, "h"), 1000);
            }
        }
        report.dropped(ProjectId::new(1), &Fingerprint::new("new"), &sample("new", None, "h"), 1001);
        let top = report.top(10, 1001);
        let names: Vec<_> = top[&1].iter().map(|e| e.fingerprint.clone()).collect();
        assert_eq!(names, ["big", "mid", "new"], "the smallest gave way");
        assert_eq!((top[&1][2].dropped, top[&1][2].overcount), (3, 2), "and its count went on, as an upper bound");
        // Two newcomers taking turns do not reset each other to 1: counts climb.
        for _ in 0..30 {
            report.dropped(ProjectId::new(1), &Fingerprint::new("x"), &sample("x", None, "h"), 1002);
            report.dropped(ProjectId::new(1), &Fingerprint::new("y"), &sample("y", None, "h"), 1002);
        }
        let top = report.top(10, 1002);
        let newcomers = top[&1].iter().filter(|e| e.fingerprint == "x" || e.fingerprint == "y");
        assert!(newcomers.map(|e| e.dropped).max() >= Some(30), "{:?}", top[&1]);
        for i in 0..(HOSTS_PER_ENTRY + 10) {
            report.dropped(
                ProjectId::new(1),
                &Fingerprint::new("big"),
                &sample("big", None, &format!("host-{i}")),
                1002,
            );
        }
        assert_eq!(report.top(10, 1002)[&1][0].hosts.len(), HOSTS_PER_ENTRY);
    }

    #[test]
    fn entries_past_the_window_are_forgotten() {
        let report = FloodReport::new(10, Duration::from_secs(60));
        report.dropped(ProjectId::new(1), &Fingerprint::new("old"), &sample("old", None, "h"), 1_000);
        report.dropped(ProjectId::new(1), &Fingerprint::new("recent"), &sample("recent", None, "h"), 50_000);
        let top = report.top(10, 70_000);
        assert_eq!(top[&1].iter().map(|e| e.fingerprint.as_str()).collect::<Vec<_>>(), ["recent"]);
        assert!(report.top(10, 200_000).is_empty());
    }

    #[test]
    fn long_titles_are_cut_on_a_character_boundary() {
        let title = "é".repeat(150);
        let short = cut(&title);
        assert!(short.len() <= TEXT_MAX_BYTES + "…".len() && short.ends_with('…'));
        let report = FloodReport::new(10, Duration::from_secs(60));
        let huge = "h".repeat(1 << 20);
        report.dropped(ProjectId::new(1), &Fingerprint::new("fp"), &sample(&huge, Some(&huge), &huge), 1);
        report.dropped(ProjectId::new(1), &Fingerprint::new("fp"), &sample(&huge, Some(&huge), &format!("{huge}2")), 2);
        let entry = &report.top(1, 2)[&1][0];
        assert!(entry.title.len() < 300 && entry.release.as_ref().is_some_and(|r| r.len() < 300));
        assert!(entry.hosts.iter().all(|h| h.host.len() < 300), "a client's megabyte host is cut");
    }
}
