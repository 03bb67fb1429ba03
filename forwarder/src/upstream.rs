//! Replaying a stored request to the configured Sentry, and classifying its
//! answer.

use std::time::Duration;

use cyclops_common::config::Config;
use cyclops_common::record::RecordHeaders;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sentry took it (2xx).
    Delivered,
    /// Sentry refused it for good: sending again cannot help.
    Rejected(u16),
    /// Worth trying again later: 429, 5xx, timeout, connection error.
    Retry(&'static str),
    /// The record cannot be turned into a request to Sentry.
    Malformed(String),
}

/// The one Sentry this forwarder talks to; connections are pooled and kept alive.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base_url: String,
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
        Ok(Self { client, base_url: config.sentry.base_url.trim_end_matches('/').to_owned() })
    }

    /// The URL a record is replayed to. Only the path and query come from the
    /// record, and only an `/api/…` path is accepted, so that a record can
    /// never point the forwarder elsewhere.
    pub fn url_for(&self, record: &RecordHeaders) -> Result<String, String> {
        let path = &record.path;
        if !path.starts_with("/api/") || path.contains("..") || path.contains("//") || path.contains(['?', '#', '@']) {
            return Err(format!("refusing to replay to path {path:?}"));
        }
        Ok(match &record.query {
            Some(q) if !q.contains('#') => format!("{}{path}?{q}", self.base_url),
            Some(q) => return Err(format!("refusing query {q:?}")),
            None => format!("{}{path}", self.base_url),
        })
    }

    /// Sends one stored request.
    pub async fn deliver(&self, record: &RecordHeaders, body: &[u8]) -> Outcome {
        let url = match self.url_for(record) {
            Ok(url) => url,
            Err(reason) => return Outcome::Malformed(reason),
        };
        let method = match record.method.parse::<reqwest::Method>() {
            Ok(m) => m,
            Err(_) => return Outcome::Malformed(format!("bad method {:?}", record.method)),
        };
        let mut headers = HeaderMap::new();
        let mut put = |name: HeaderName, value: &Option<String>| {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, v);
            }
        };
        put(CONTENT_TYPE, &record.content_type);
        put(CONTENT_ENCODING, &record.content_encoding);
        put(USER_AGENT, &record.user_agent);
        put(HeaderName::from_static("x-sentry-auth"), &record.auth);
        put(HeaderName::from_static("x-forwarded-for"), &record.client_ip);
        let sent = self.client.request(method, url).headers(headers).body(body.to_vec()).send().await;
        match sent {
            Ok(response) => classify(response.status().as_u16()),
            Err(e) if e.is_timeout() => Outcome::Retry("timeout"),
            Err(e) if e.is_connect() => Outcome::Retry("connect"),
            Err(_) => Outcome::Retry("transport"),
        }
    }
}

/// Sentry's answer, by status code.
pub fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        400 | 401 | 403 | 413 => Outcome::Rejected(status),
        429 => Outcome::Retry("rate_limited"),
        500..=599 => Outcome::Retry("server_error"),
        // Anything else (404 from a wrong base_url, say) is most likely a
        // misconfiguration: keep the event and retry while it is fixed.
        _ => Outcome::Retry("unexpected_status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, query: Option<&str>) -> RecordHeaders {
        RecordHeaders {
            method: "POST".into(),
            path: path.into(),
            query: query.map(Into::into),
            content_type: None,
            content_encoding: None,
            auth: None,
            event_id: "0".repeat(32),
            project_id: 1,
            received_at_ms: 0,
            client_ip: None,
            user_agent: None,
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
        assert_eq!(
            up.url_for(&record("/api/1/store/", None)).as_deref(),
            Ok("http://sentry.internal:9000/api/1/store/")
        );
        assert_eq!(
            up.url_for(&record("/api/1/envelope/", Some("sentry_key=k"))).as_deref(),
            Ok("http://sentry.internal:9000/api/1/envelope/?sentry_key=k")
        );
        for bad in ["//evil.example/api/", "/api/../admin", "/other", "/api/1@evil/", "/api/1?x"] {
            assert!(up.url_for(&record(bad, None)).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200), Outcome::Delivered);
        for s in [400, 401, 403, 413] {
            assert_eq!(classify(s), Outcome::Rejected(s));
        }
        assert_eq!(classify(429), Outcome::Retry("rate_limited"));
        assert_eq!(classify(503), Outcome::Retry("server_error"));
        assert_eq!(classify(404), Outcome::Retry("unexpected_status"));
    }
}
