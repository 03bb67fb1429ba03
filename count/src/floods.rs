//! `--floods`: each ingest's `/floods`, added up across the farm. The same
//! error floods every instance behind a load balancer, so entries are
//! merged by (project, fingerprint): drops and host counts add up, the
//! first sighting is the earliest, the release is the latest one seen.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

/// One flooding error of one project, farm-wide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedFlood {
    pub project: u64,
    pub fingerprint: String,
    pub dropped: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub title: String,
    pub release: Option<String>,
    /// Most frequent first.
    pub hosts: Vec<(String, u64)>,
    /// Instances that reported it.
    pub instances: usize,
}

/// Merges `/floods` documents and keeps the `limit` most dropped.
pub fn merge_floods(documents: &[Value], limit: usize) -> Vec<MergedFlood> {
    let mut merged: HashMap<(u64, String), MergedFlood> = HashMap::new();
    let mut release_seen: HashMap<(u64, String), u64> = HashMap::new();
    for doc in documents {
        let Some(projects) = doc["projects"].as_object() else { continue };
        for entry in projects.values().filter_map(Value::as_array).flatten() {
            let (Some(project), Some(fingerprint)) = (entry["project"].as_u64(), entry["fingerprint"].as_str()) else {
                continue;
            };
            let key = (project, fingerprint.to_owned());
            let n = |k: &str| entry[k].as_u64().unwrap_or(0);
            let m = merged.entry(key.clone()).or_insert_with(|| MergedFlood {
                project,
                fingerprint: fingerprint.to_owned(),
                dropped: 0,
                first_seen_ms: u64::MAX,
                last_seen_ms: 0,
                title: entry["title"].as_str().unwrap_or_default().to_owned(),
                release: None,
                hosts: Vec::new(),
                instances: 0,
            });
            m.dropped += n("dropped");
            m.first_seen_ms = m.first_seen_ms.min(n("first_seen_ms"));
            m.last_seen_ms = m.last_seen_ms.max(n("last_seen_ms"));
            m.instances += 1;
            if let Some(release) = entry["release"].as_str() {
                let seen = release_seen.entry(key).or_default();
                if n("last_seen_ms") >= *seen {
                    *seen = n("last_seen_ms");
                    m.release = Some(release.to_owned());
                }
            }
            for host in entry["hosts"].as_array().into_iter().flatten() {
                let (Some(name), Some(count)) = (host["host"].as_str(), host["count"].as_u64()) else { continue };
                match m.hosts.iter_mut().find(|(h, _)| h == name) {
                    Some((_, c)) => *c += count,
                    None => m.hosts.push((name.to_owned(), count)),
                }
            }
        }
    }
    let mut floods: Vec<MergedFlood> = merged.into_values().collect();
    for f in &mut floods {
        f.hosts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        f.hosts.truncate(5);
    }
    floods.sort_by(|a, b| b.dropped.cmp(&a.dropped).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
    floods.truncate(limit);
    floods
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m{:02}s ago", secs / 60, secs % 60),
        _ => format!("{}h{:02}m ago", secs / 3600, secs % 3600 / 60),
    }
}

/// The merged floods as text, ages relative to `now_ms`.
pub fn render_floods(floods: &[MergedFlood], now_ms: u64) -> String {
    if floods.is_empty() {
        return "No floods: the flood filter dropped nothing lately.\n".into();
    }
    let mut out = String::new();
    for (i, f) in floods.iter().enumerate() {
        out += &format!(
            "{}. project {}: {} dropped, since {} (last {}): {}\n",
            i + 1,
            f.project,
            f.dropped,
            ago(now_ms, f.first_seen_ms),
            ago(now_ms, f.last_seen_ms),
            f.title
        );
        let hosts: Vec<String> = f.hosts.iter().map(|(h, c)| format!("{h} ({c})")).collect();
        out += &format!(
            "   release {}; hosts {}; {} instance(s); {}\n",
            f.release.as_deref().unwrap_or("unknown"),
            if hosts.is_empty() { "unknown".into() } else { hosts.join(", ") },
            f.instances,
            f.fingerprint
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(entries: Value) -> Value {
        json!({"service": "ingest", "projects": {"1": entries}})
    }

    #[test]
    fn the_same_flood_on_two_instances_adds_up() {
        let a = doc(json!([
            {"project": 1, "fingerprint": "fp-x", "dropped": 300, "first_seen_ms": 5_000, "last_seen_ms": 9_000,
             "title": "KeyError: 'cart'", "release": "shop@1", "hosts": [{"host": "web-1", "count": 200}, {"host": "web-2", "count": 100}]},
            {"project": 1, "fingerprint": "fp-small", "dropped": 3, "first_seen_ms": 1, "last_seen_ms": 2, "title": "t", "release": null, "hosts": []}
        ]));
        let b = doc(json!([
            {"project": 1, "fingerprint": "fp-x", "dropped": 250, "first_seen_ms": 4_000, "last_seen_ms": 9_500,
             "title": "KeyError: 'cart'", "release": "shop@2", "hosts": [{"host": "web-2", "count": 250}]}
        ]));
        let floods = merge_floods(&[a, b, json!({"unrelated": true})], 10);
        assert_eq!(floods.len(), 2);
        let x = &floods[0];
        assert_eq!((x.dropped, x.first_seen_ms, x.last_seen_ms, x.instances), (550, 4_000, 9_500, 2));
        assert_eq!(x.release.as_deref(), Some("shop@2"), "the latest release");
        assert_eq!(x.hosts, vec![("web-2".to_owned(), 350), ("web-1".to_owned(), 200)]);
        assert_eq!(merge_floods(&[floods_doc_of(x)], 1).len(), 1);
        let text = render_floods(&floods[..1], 69_500);
        assert_eq!(
            text,
            "1. project 1: 550 dropped, since 1m05s ago (last 1m00s ago): KeyError: 'cart'\n   release shop@2; hosts web-2 (350), web-1 (200); 2 instance(s); fp-x\n"
        );
    }

    fn floods_doc_of(f: &MergedFlood) -> Value {
        doc(json!([{"project": f.project, "fingerprint": f.fingerprint, "dropped": f.dropped,
            "first_seen_ms": f.first_seen_ms, "last_seen_ms": f.last_seen_ms, "title": f.title, "hosts": []}]))
    }

    #[test]
    fn nothing_dropped_says_so() {
        assert!(render_floods(&merge_floods(&[doc(json!([]))], 10), 0).starts_with("No floods"));
    }
}
