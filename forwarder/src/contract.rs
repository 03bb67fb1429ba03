//! What a record may make the forwarder send: the replay half of the record
//! contract (`schemas/record-v2.schema.json`).
//!
//! Anyone who can write to a project topic can put any header on a record;
//! the forwarder still sends only what ingest could have stored: a Sentry
//! intake path under `sentry.base_url` (after percent-decoding and removing
//! dot segments, so `/api/%2e%2e/admin` is `/admin`, not an intake path),
//! the method that endpoint takes, Sentry auth and no control characters in
//! any header. A record that breaks it is dead-lettered with its
//! [`Breach`], never sent, never dropped silently.

use cyclops_common::encoding::Encoding;
use cyclops_common::record::RecordHeaders;
use percent_encoding::percent_decode_str;

/// How a record breaks the contract; `label` is its metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Breach {
    #[error("path {0:?} is not a Sentry intake path once normalized")]
    Path(String),
    #[error("path names project {named}, the record is of project {record}")]
    Project { named: u64, record: u64 },
    #[error("method {method:?} is not what {path} takes")]
    Method { method: String, path: String },
    #[error("auth is not Sentry auth")]
    Auth,
    #[error("{0} holds a control character")]
    ControlCharacter(&'static str),
    #[error("content encoding {0:?} is not one Sentry reads")]
    Encoding(String),
}

impl Breach {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Path(_) => "path",
            Self::Project { .. } => "project",
            Self::Method { .. } => "method",
            Self::Auth => "auth",
            Self::ControlCharacter(_) => "control_character",
            Self::Encoding(_) => "encoding",
        }
    }
}

/// A record's request as it may be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The normalized intake path.
    pub path: String,
    pub method: reqwest::Method,
}

/// The intake endpoints, by normalized path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Store(Option<u64>),
    Envelope(u64),
}

fn has_control(value: &str) -> bool {
    value.chars().any(|c| c.is_control() && c != '\t')
}

/// Percent-decodes `raw` and removes its dot segments (RFC 3986 §5.2.4);
/// `None` when it does not decode to UTF-8 or decodes to control characters.
pub fn normalize(raw: &str) -> Option<String> {
    let decoded = percent_decode_str(raw).decode_utf8().ok()?;
    if has_control(&decoded) {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate().skip(1) {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                // A trailing dot segment leaves a directory: keep the slash.
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    Some(format!("/{}", out.join("/")))
}

fn endpoint(path: &str) -> Option<Endpoint> {
    let project = |id: &str| -> Option<u64> {
        let canonical =
            !id.is_empty() && !id.starts_with('0') && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit());
        canonical.then(|| id.parse().ok()).flatten()
    };
    match path.strip_prefix("/api/")?.strip_suffix('/')?.split('/').collect::<Vec<_>>().as_slice() {
        ["store"] => Some(Endpoint::Store(None)),
        [id, "store"] => Some(Endpoint::Store(Some(project(id)?))),
        [id, "envelope"] => Some(Endpoint::Envelope(project(id)?)),
        _ => None,
    }
}

/// Checks `record` against the contract and gives what to send.
pub fn check(record: &RecordHeaders) -> Result<Replay, Breach> {
    let path = normalize(&record.path).ok_or_else(|| Breach::Path(record.path.clone()))?;
    let endpoint = endpoint(&path).ok_or_else(|| Breach::Path(record.path.clone()))?;
    let named = match endpoint {
        Endpoint::Store(named) => named,
        Endpoint::Envelope(named) => Some(named),
    };
    if let Some(named) = named
        && named != record.project_id.get()
    {
        return Err(Breach::Project { named, record: record.project_id.get() });
    }
    // Browser beacons are the one GET, and only with a project in the path.
    let method = match (record.method.as_str(), endpoint) {
        ("POST", _) => reqwest::Method::POST,
        ("GET", Endpoint::Store(Some(_))) => reqwest::Method::GET,
        _ => return Err(Breach::Method { method: record.method.clone(), path }),
    };
    if let Some(auth) = &record.auth {
        let sentry = auth.split_once(' ').is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("sentry"));
        if !sentry {
            return Err(Breach::Auth);
        }
    }
    for (name, value) in [
        ("query", &record.query),
        ("auth", &record.auth),
        ("content type", &record.content_type),
        ("content encoding", &record.content_encoding),
        ("user agent", &record.user_agent),
        ("client address", &record.client_ip),
    ] {
        if value.as_deref().is_some_and(|v| has_control(v) || (name == "query" && v.contains('#'))) {
            return Err(Breach::ControlCharacter(name));
        }
    }
    if let Some(encoding) = &record.content_encoding
        && Encoding::from_header(Some(encoding)).is_err()
    {
        return Err(Breach::Encoding(encoding.clone()));
    }
    Ok(Replay { path, method })
}

/// The method and URL a record is replayed as, under `base_url` (no
/// trailing slash): only the normalized intake path and the checked query
/// come from the record, so that it can never point the forwarder elsewhere.
pub fn replay_url(base_url: &str, record: &RecordHeaders) -> Result<(reqwest::Method, String), Breach> {
    let Replay { path, method } = check(record)?;
    let url = match &record.query {
        Some(q) => format!("{base_url}{path}?{q}"),
        None => format!("{base_url}{path}"),
    };
    Ok((method, url))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use cyclops_common::ids::{EventId, ProjectId};

    fn record(method: &str, path: &str) -> RecordHeaders {
        RecordHeaders {
            method: method.into(),
            path: path.into(),
            query: None,
            content_type: None,
            content_encoding: None,
            auth: Some("Sentry sentry_key=k, sentry_version=7".into()),
            event_id: EventId::new("0".repeat(32)),
            project_id: ProjectId::new(7),
            received_at_ms: 0,
            client_ip: None,
            user_agent: None,
            fingerprint: None,
            categories: Vec::new(),
        }
    }

    #[test]
    fn what_ingest_stores_is_replayed_as_is() {
        for (method, path) in
            [("POST", "/api/7/store/"), ("POST", "/api/7/envelope/"), ("POST", "/api/store/"), ("GET", "/api/7/store/")]
        {
            let replay = check(&record(method, path)).expect(path);
            assert_eq!((replay.method.as_str(), replay.path.as_str()), (method, path));
        }
    }

    #[test]
    fn escaping_paths_are_breaches() {
        for path in [
            "/api/%2e%2e/%2e%2e/admin",
            "/api/.%2E/internal",
            "/api/7/store/../../admin/",
            "/api/7/%2fstore/",
            "/admin/",
            "/api/envelope/",
            "/api/07/store/",
            "/api/7/store",
            "/api/7/store/%0d%0aX: y",
            "/api/%ff/store/",
        ] {
            assert!(matches!(check(&record("POST", path)), Err(Breach::Path(_))), "{path}");
        }
        // Normalized into an intake path: sent as the normalized one.
        assert_eq!(check(&record("POST", "/api/7/./envelope/")).expect("normalizes").path, "/api/7/envelope/");
        assert_eq!(check(&record("POST", "/api/%37/store/")).expect("normalizes").path, "/api/7/store/");
    }

    #[test]
    fn another_projects_path_is_a_breach() {
        assert_eq!(check(&record("POST", "/api/8/store/")), Err(Breach::Project { named: 8, record: 7 }));
    }

    #[test]
    fn only_the_endpoints_methods() {
        for (method, path) in [
            ("DELETE", "/api/7/store/"),
            ("CONNECT", "/api/7/store/"),
            ("GET", "/api/7/envelope/"),
            ("GET", "/api/store/"),
            ("post", "/api/7/store/"),
        ] {
            assert!(matches!(check(&record(method, path)), Err(Breach::Method { .. })), "{method} {path}");
        }
    }

    #[test]
    fn auth_and_headers_must_be_clean() {
        let mut bearer = record("POST", "/api/7/store/");
        bearer.auth = Some("Bearer abc".into());
        assert_eq!(check(&bearer), Err(Breach::Auth));
        let mut split = record("POST", "/api/7/store/");
        split.user_agent = Some("sdk\r\nX-Injected: 1".into());
        assert_eq!(check(&split), Err(Breach::ControlCharacter("user agent")));
        let mut encoding = record("POST", "/api/7/store/");
        encoding.content_encoding = Some("compress".into());
        assert_eq!(check(&encoding), Err(Breach::Encoding("compress".into())));
    }

    proptest! {
        /// Whatever the path, what is replayed is an intake path of the
        /// record's own project, with no dot segment and nothing encoded.
        #[test]
        fn a_replayed_path_is_always_an_intake_path(path in "(/|[a-z0-9]|%2[eEfF]|%[0-9a-fA-F]{2}|\\.|api|store|envelope|7){0,12}") {
            if let Ok(replay) = check(&record("POST", &path)) {
                prop_assert!(
                    ["/api/7/store/", "/api/7/envelope/", "/api/store/"].contains(&replay.path.as_str()),
                    "{path} -> {}", replay.path
                );
            }
        }
    }
}
