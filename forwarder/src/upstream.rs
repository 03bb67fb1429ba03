//! Replaying a stored request to the configured Sentry, and classifying its
//! answer.

use std::time::{Duration, SystemTime};

use cyclops_common::config::Config;
use cyclops_common::record::RecordHeaders;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use crate::rate_limits::{self, Limit, RefusedHold};

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
    Held(RefusedHold),
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
            || matches!(self, Outcome::Held(RefusedHold { quota: false, .. }))
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

impl Answer {
    /// An answer Sentry did not give (no request, or no response).
    pub fn local(outcome: Outcome) -> Self {
        Self { outcome, status: None, limits: Vec::new() }
    }
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
        let limits = rate_limits::limits(header("x-sentry-rate-limits"), self.max_hold);
        let outcome = if status == 429 {
            rate_limits::refused_hold(&limits, header("retry-after"), SystemTime::now(), self.max_hold)
                .map_or(Outcome::Retry(RetryReason::RateLimited), Outcome::Held)
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
    fn overload_and_network_failures_are_told_apart() {
        assert!(Outcome::Retry(RetryReason::ServerError).is_overload());
        assert!(Outcome::Retry(RetryReason::Timeout).is_overload());
        let held = |quota| Outcome::Held(RefusedHold { hold: Duration::from_secs(1), quota });
        assert!(held(false).is_overload(), "plain Retry-After");
        assert!(!held(true).is_overload(), "a quota is not capacity");
        assert!(!Outcome::Retry(RetryReason::UnexpectedStatus).is_overload());
        assert!(Outcome::Retry(RetryReason::ServerError).is_network_failure(Some(503)));
        assert!(!Outcome::Retry(RetryReason::ServerError).is_network_failure(Some(500)));
        assert!(Outcome::Retry(RetryReason::Connect).is_network_failure(None));
        assert!(!Outcome::Rejected(400).is_network_failure(Some(400)));
    }
}
