//! Sentry's rate limits, from its answer to the holds they become. Pure: the
//! clock is passed in.
//!
//! 1. [`header`] reads `X-Sentry-Rate-Limits` (quotas per data category) and
//!    `Retry-After` (seconds or an HTTP date), as Sentry and its SDKs do.
//! 2. [`limits`] turns the header into [`Limit`]s clamped to
//!    `[1 s, forwarder.max_hold_secs]`; Sentry sends them with a 429, and
//!    with a 200 when it dropped some of a request's items.
//! 3. [`refused_hold`] says how long a refused (429) event waits: the
//!    longest limit named, else `Retry-After` (which holds the whole
//!    project), else nothing (a bare 429, retried with backoff).
//! 4. The engine keeps the holds: a limit on every category holds the whole
//!    project in its scheduler, a limit on some categories is kept in
//!    [`holds::CategoryHolds`], which parks only the records it covers; a
//!    refused event waits for the longest limit that [`applies`] to it
//!    ([`own_hold`]).

pub mod header;
pub mod holds;

use std::time::{Duration, SystemTime};

/// One limit Sentry announced: these categories (empty: all) of the
/// project may send nothing for `hold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub categories: Vec<String>,
    pub hold: Duration,
}

impl Limit {
    /// Whether the limit is on every category (then it holds the project).
    pub fn is_on_all(&self) -> bool {
        self.categories.is_empty()
    }
}

/// How long a 429 asks the refused event to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedHold {
    pub hold: Duration,
    /// `true`: a quota of `X-Sentry-Rate-Limits` (its [`Limit`]s say what
    /// else waits); `false`: a bare `Retry-After`, which holds the project.
    pub quota: bool,
}

fn clamp(hold: Duration, max_hold: Duration) -> Duration {
    hold.clamp(Duration::from_secs(1), max_hold.max(Duration::from_secs(1)))
}

/// `X-Sentry-Rate-Limits` as holds clamped to `[1 s, max_hold]`.
pub fn limits(header: Option<&str>, max_hold: Duration) -> Vec<Limit> {
    header
        .map(header::parse_rate_limits)
        .unwrap_or_default()
        .into_iter()
        .map(|l| Limit { categories: l.categories, hold: clamp(l.retry_after, max_hold) })
        .collect()
}

/// A 429's meaning for the refused event: a wait for the longest limit
/// `X-Sentry-Rate-Limits` names (whatever its category: the request was
/// refused), else for `Retry-After`; `None` for a bare 429. `limits` are
/// the answer's [`limits`], already clamped.
pub fn refused_hold(
    limits: &[Limit],
    retry_after: Option<&str>,
    now: SystemTime,
    max_hold: Duration,
) -> Option<RefusedHold> {
    if let Some(hold) = limits.iter().map(|l| l.hold).max() {
        return Some(RefusedHold { hold, quota: true });
    }
    let hold = header::parse_retry_after(retry_after?, now)?;
    Some(RefusedHold { hold: clamp(hold, max_hold), quota: false })
}

/// Whether a limit on `limited` (empty: every category) applies to a
/// record of `categories` (empty: unknown, so any limit may apply), that is,
/// to one of them at least.
pub fn applies(limited: &[String], categories: &[String]) -> bool {
    limited.is_empty() || categories.is_empty() || categories.iter().any(|c| limited.contains(c))
}

/// The longest of `limits` that applies to a record of `categories`.
pub fn own_hold(limits: &[Limit], categories: &[String]) -> Option<Duration> {
    limits.iter().filter(|l| applies(&l.categories, categories)).map(|l| l.hold).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn hold(categories: &[&str], secs: u64) -> Limit {
        Limit { categories: strings(categories), hold: Duration::from_secs(secs) }
    }

    #[test]
    fn rate_limits_become_holds_per_category_clamped() {
        let max = Duration::from_secs(600);
        assert_eq!(
            limits(Some("60:transaction;span:organization:quota, 0::key, 99999:error:project"), max),
            vec![hold(&["transaction", "span"], 60), hold(&[], 1), hold(&["error"], 600)]
        );
        assert!(limits(None, max).is_empty());
        assert!(limits(Some("junk"), max).is_empty());
    }

    #[test]
    fn a_429_holds_for_the_longest_limit_or_retry_after() {
        let now = SystemTime::now();
        let max = Duration::from_secs(3600);
        let held = |secs, quota| Some(RefusedHold { hold: Duration::from_secs(secs), quota });
        let refused = |header, retry_after| refused_hold(&limits(header, max), retry_after, now, max);
        assert_eq!(refused(Some("60:transaction:key, 5:error:project"), None), held(60, true));
        assert_eq!(refused(Some("60::key"), Some("3")), held(60, true), "the header wins");
        assert_eq!(refused(None, Some("7")), held(7, false));
        assert_eq!(refused(None, Some("0")), held(1, false), "at least a second");
        assert_eq!(refused(Some("99999::org"), None), held(3600, true), "at most max_hold");
        assert_eq!(refused(None, None), None);
        assert_eq!(refused(Some("junk"), Some("junk")), None);
    }

    #[test]
    fn a_limit_applies_to_the_records_it_names_and_to_unknown_ones() {
        let error = strings(&["error"]);
        assert!(applies(&strings(&["error", "default"]), &error));
        assert!(!applies(&strings(&["transaction"]), &error));
        assert!(applies(&[], &error), "no category: all of them");
        assert!(applies(&strings(&["transaction"]), &[]), "a record of unknown categories");
        assert!(applies(&strings(&["attachment"]), &strings(&["error", "attachment"])));
    }

    #[test]
    fn a_refused_event_waits_for_its_own_longest_limit() {
        let limits = [hold(&["transaction"], 600), hold(&["error"], 60), hold(&["attachment"], 120)];
        assert_eq!(own_hold(&limits, &strings(&["error"])), Some(Duration::from_secs(60)));
        assert_eq!(own_hold(&limits, &strings(&["error", "attachment"])), Some(Duration::from_secs(120)));
        assert_eq!(own_hold(&limits, &strings(&["profile"])), None, "not its limit");
        assert_eq!(own_hold(&limits, &[]), Some(Duration::from_secs(600)), "unknown: any");
    }

    proptest::proptest! {
        /// Any answer: reading it never panics and every hold is within its clamp.
        #[test]
        fn any_answer_gives_bounded_holds(header in ".{0,200}", retry in ".{0,40}") {
            let day = Duration::from_secs(86_400);
            let limits = limits(Some(&header), day);
            proptest::prop_assert!(limits.iter().all(|l| l.hold >= Duration::from_secs(1) && l.hold <= day));
            if let Some(RefusedHold { hold, .. }) = refused_hold(&limits, Some(&retry), SystemTime::now(), day) {
                proptest::prop_assert!(hold >= Duration::from_secs(1) && hold <= day);
            }
        }
    }
}
