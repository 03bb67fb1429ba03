//! Replaying a stored request to the configured Sentry, and classifying its
//! answer.

use std::time::{Duration, SystemTime};

use cyclops_common::config::Config;
use cyclops_common::record::RecordHeaders;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use crate::pacing::rate_limits::{parse_rate_limits, parse_retry_after};

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sentry took it (2xx).
    Delivered,
    /// Sentry refused it for good: sending again cannot help.
    Rejected(u16),
    /// Worth trying again later: 5xx, timeout, connection error, a 429
    /// without a hint.
    Retry(RetryReason),
    /// Sentry's rate limit (a 429 with `X-Sentry-Rate-Limits` or
    /// `Retry-After`): this event waits that long. What else waits is in
    /// [`Answer::limits`] (`quota`), or the whole project (`Retry-After`).
    Held { hold: Duration, quota: bool },
    /// The record breaks the replay contract: it is not sent.
    Malformed(crate::contract::Breach),
}

/// Why an attempt is to be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// No answer within `forwarder.request_timeout_ms`.
    Timeout,
    /// Sentry could not be connected to.
    Connect,
    /// Any other transport failure.
    Transport,
    /// A 429 without a hint of how long to wait.
    RateLimited,
    /// A 5xx.
    ServerError,
    /// A status neither success nor a configured refusal.
    UnexpectedStatus,
    /// The delivery task panicked.
    Panic,
}

impl RetryReason {
    /// The `reason` label of `cyclops_forwarder_retried_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Transport => "transport",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::UnexpectedStatus => "unexpected_status",
            Self::Panic => "panic",
        }
    }
}

impl Outcome {
    /// Whether this answer says Sentry has too much to do (for pacing).
    pub fn is_overload(&self) -> bool {
        matches!(self, Outcome::Retry(r) if *r != RetryReason::UnexpectedStatus)
            || matches!(self, Outcome::Held { quota: false, .. })
    }

    /// Whether Sentry could not be reached or answered as a failing proxy
    /// would (for the outage breaker): nothing else proves it down.
    pub fn is_network_failure(&self, status: Option<u16>) -> bool {
        match self {
            Outcome::Retry(_) => status.is_none_or(|s| matches!(s, 502..=504)),
            _ => false,
        }
    }
}

/// One answer from Sentry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    /// The HTTP status, when Sentry answered.
    pub status: Option<u16>,
    /// The limits of `X-Sentry-Rate-Limits`, on a 429 or a 2xx alike (Sentry
    /// sends them with a 200 when it dropped some items), clamped to
    /// `[1 s, max_hold]`.
    pub limits: Vec<Limit>,
}

/// One limit Sentry announced: these categories (empty: all) of the
/// project may send nothing for `hold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub categories: Vec<String>,
    pub hold: Duration,
}

impl Answer {
    /// An answer Sentry did not give (no request, or no response).
    pub fn local(outcome: Outcome) -> Self {
        Self { outcome, status: None, limits: Vec::new() }
    }
}

/// `X-Sentry-Rate-Limits` as holds clamped to `[1 s, max_hold]`.
pub fn limits(header: Option<&str>, max_hold: Duration) -> Vec<Limit> {
    let clamp = |d: Duration| d.clamp(Duration::from_secs(1), max_hold.max(Duration::from_secs(1)));
    header
        .map(parse_rate_limits)
        .unwrap_or_default()
        .into_iter()
        .map(|l| Limit { categories: l.categories, hold: clamp(l.retry_after) })
        .collect()
}

/// The one Sentry this forwarder talks to; connections are pooled and kept alive.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base_url: String,
    dead_letter_statuses: Vec<u16>,
    max_hold: Duration,
    /// Largest envelope read to move its `sent_at`.
    max_envelope_bytes: usize,
}

impl Upstream {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.forwarder.request_timeout_ms))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            // Never follow a redirect: only the configured upstream is contacted.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            base_url: config.sentry.base_url.trim_end_matches('/').to_owned(),
            dead_letter_statuses: config.forwarder.dead_letter_statuses.clone(),
            max_hold: Duration::from_secs(config.forwarder.max_hold_secs),
            max_envelope_bytes: config.ingest.max_envelope_bytes,
        })
    }

    /// The request a record is replayed as ([`crate::contract::replay_url`]).
    pub fn replay_for(&self, record: &RecordHeaders) -> Result<(reqwest::Method, String), crate::contract::Breach> {
        crate::contract::replay_url(&self.base_url, record)
    }

    /// Sends one stored request.
    pub async fn deliver(&self, record: &RecordHeaders, body: bytes::Bytes) -> Answer {
        let (method, url) = match self.replay_for(record) {
            Ok(replay) => replay,
            Err(breach) => return Answer::local(Outcome::Malformed(breach)),
        };
        let body = self.moved_sent_at(record, &body).map_or(body, bytes::Bytes::from);
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (CONTENT_TYPE, &record.content_type),
            (CONTENT_ENCODING, &record.content_encoding),
            (USER_AGENT, &record.user_agent),
            (HeaderName::from_static("x-sentry-auth"), &record.auth),
            (HeaderName::from_static("x-forwarded-for"), &record.client_ip),
        ] {
            let Some(value) = value.as_deref() else { continue };
            // The contract check refused control characters; anything else
            // HTTP cannot carry is refused too, never dropped silently.
            match HeaderValue::from_str(value) {
                Ok(value) => headers.insert(name, value),
                Err(_) => {
                    let breach = crate::contract::Breach::ControlCharacter("a header");
                    return Answer::local(Outcome::Malformed(breach));
                }
            };
        }
        let sent = self.client.request(method, url).headers(headers).body(body).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Answer::local(Outcome::Retry(RetryReason::Timeout)),
            Err(e) if e.is_connect() => return Answer::local(Outcome::Retry(RetryReason::Connect)),
            Err(_) => return Answer::local(Outcome::Retry(RetryReason::Transport)),
        };
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let limits = limits(header("x-sentry-rate-limits"), self.max_hold);
        let outcome = if status == 429 {
            rate_limited(&limits, header("retry-after"), SystemTime::now(), self.max_hold)
        } else {
            classify(status, &self.dead_letter_statuses)
        };
        Answer { outcome, status: Some(status), limits }
    }
}

impl Upstream {
    /// An envelope's body with `sent_at` moved forward by the time it waited
    /// since ingest received it ([`crate::sent_at`]), or `None` to send it as stored.
    fn moved_sent_at(&self, record: &RecordHeaders, body: &[u8]) -> Option<Vec<u8>> {
        let envelope = record.path.ends_with("/envelope/")
            || record.content_type.as_deref().is_some_and(|t| t.starts_with("application/x-sentry-envelope"));
        if !envelope || record.received_at_ms == 0 {
            return None;
        }
        let received = std::time::UNIX_EPOCH + Duration::from_millis(record.received_at_ms);
        let waited = SystemTime::now().duration_since(received).ok()?;
        crate::sent_at::rewrite(body, record.content_encoding.as_deref(), waited, self.max_envelope_bytes)
    }
}

/// A 429's meaning for the refused event: a wait for the longest limit
/// `X-Sentry-Rate-Limits` names (whatever its category: the request was
/// refused), else for `Retry-After`; a bare 429 is retried with backoff.
/// `limits` are the answer's [`limits`], already clamped.
pub fn rate_limited(limits: &[Limit], retry_after: Option<&str>, now: SystemTime, max_hold: Duration) -> Outcome {
    let clamp = |d: Duration| d.clamp(Duration::from_secs(1), max_hold.max(Duration::from_secs(1)));
    if let Some(hold) = limits.iter().map(|l| l.hold).max() {
        return Outcome::Held { hold, quota: true };
    }
    match retry_after.and_then(|r| parse_retry_after(r, now)) {
        Some(hold) => Outcome::Held { hold: clamp(hold), quota: false },
        None => Outcome::Retry(RetryReason::RateLimited),
    }
}

/// Sentry's answer, by status code; `refused` are the statuses that mean
/// "never send this again" (`forwarder.dead_letter_statuses`).
pub fn classify(status: u16, refused: &[u16]) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        s if refused.contains(&s) => Outcome::Rejected(status),
        429 => Outcome::Retry(RetryReason::RateLimited),
        500..=599 => Outcome::Retry(RetryReason::ServerError),
        // Anything else (404 from a wrong base_url, say) is most likely a
        // misconfiguration: keep the event and retry while it is fixed.
        _ => Outcome::Retry(RetryReason::UnexpectedStatus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cyclops_common::ids::{EventId, ProjectId};

    fn record(path: &str, query: Option<&str>) -> RecordHeaders {
        RecordHeaders {
            method: "POST".into(),
            path: path.into(),
            query: query.map(Into::into),
            content_type: None,
            content_encoding: None,
            auth: None,
            event_id: EventId::new("0".repeat(32)),
            project_id: ProjectId::new(1),
            received_at_ms: 0,
            client_ip: None,
            user_agent: None,
            fingerprint: None,
            categories: Vec::new(),
        }
    }

    fn upstream() -> Upstream {
        let mut config = Config::default();
        config.sentry.base_url = "http://sentry.internal:9000/".into();
        Upstream::new(&config).expect("client")
    }

    #[test]
    fn urls_keep_to_the_configured_host() {
        let up = upstream();
        let url = |path, query| up.replay_for(&record(path, query)).map(|(_, url)| url);
        assert_eq!(url("/api/1/store/", None).as_deref(), Ok("http://sentry.internal:9000/api/1/store/"));
        assert_eq!(
            url("/api/1/envelope/", Some("sentry_key=k")).as_deref(),
            Ok("http://sentry.internal:9000/api/1/envelope/?sentry_key=k")
        );
        for bad in ["//evil.example/api/", "/api/../admin", "/other", "/api/1@evil/", "/api/1?x", "/api/1/store/#x"] {
            assert!(url(bad, None).is_err(), "{bad}");
        }
        assert!(url("/api/1/store/", Some("a#b")).is_err(), "a fragment in the query");
    }

    #[test]
    fn answers_are_classified() {
        let refused = [400, 401, 403, 413];
        assert_eq!(classify(200, &refused), Outcome::Delivered);
        for s in refused {
            assert_eq!(classify(s, &refused), Outcome::Rejected(s));
        }
        assert_eq!(classify(429, &refused), Outcome::Retry(RetryReason::RateLimited));
        assert_eq!(classify(503, &refused), Outcome::Retry(RetryReason::ServerError));
        assert_eq!(classify(404, &refused), Outcome::Retry(RetryReason::UnexpectedStatus));
        assert_eq!(classify(403, &[400]), Outcome::Retry(RetryReason::UnexpectedStatus), "configurable");
    }

    #[test]
    fn rate_limits_become_holds_per_category_clamped() {
        let max = Duration::from_secs(600);
        let hold = |categories: &[&str], secs| Limit {
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            hold: Duration::from_secs(secs),
        };
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
        let held = |hold, quota| Outcome::Held { hold: Duration::from_secs(hold), quota };
        let rate_limited = |header, retry_after| rate_limited(&limits(header, max), retry_after, now, max);
        assert_eq!(rate_limited(Some("60:transaction:key, 5:error:project"), None), held(60, true));
        assert_eq!(rate_limited(Some("60::key"), Some("3")), held(60, true), "the header wins");
        assert_eq!(rate_limited(None, Some("7")), held(7, false));
        assert_eq!(rate_limited(None, Some("0")), held(1, false), "at least a second");
        assert_eq!(rate_limited(Some("99999::org"), None), held(3600, true), "at most max_hold");
        assert_eq!(rate_limited(None, None), Outcome::Retry(RetryReason::RateLimited));
        assert_eq!(rate_limited(Some("junk"), Some("junk")), Outcome::Retry(RetryReason::RateLimited));
    }

    #[test]
    fn overload_and_network_failures_are_told_apart() {
        assert!(Outcome::Retry(RetryReason::ServerError).is_overload());
        assert!(Outcome::Retry(RetryReason::Timeout).is_overload());
        assert!(Outcome::Held { hold: Duration::from_secs(1), quota: false }.is_overload(), "plain Retry-After");
        assert!(!Outcome::Held { hold: Duration::from_secs(1), quota: true }.is_overload(), "a quota is not capacity");
        assert!(!Outcome::Retry(RetryReason::UnexpectedStatus).is_overload());
        assert!(Outcome::Retry(RetryReason::ServerError).is_network_failure(Some(503)));
        assert!(!Outcome::Retry(RetryReason::ServerError).is_network_failure(Some(500)));
        assert!(Outcome::Retry(RetryReason::Connect).is_network_failure(None));
        assert!(!Outcome::Rejected(400).is_network_failure(Some(400)));
    }

    proptest::proptest! {
        /// Any answer: reading it never panics and every hold is within its clamp.
        #[test]
        fn any_answer_gives_bounded_holds(header in ".{0,200}", retry in ".{0,40}") {
            let day = Duration::from_secs(86_400);
            let limits = limits(Some(&header), day);
            proptest::prop_assert!(limits.iter().all(|l| l.hold >= Duration::from_secs(1) && l.hold <= day));
            if let Outcome::Held { hold, .. } = rate_limited(&limits, Some(&retry), SystemTime::now(), day) {
                proptest::prop_assert!(hold >= Duration::from_secs(1) && hold <= day);
            }
        }
    }
}
