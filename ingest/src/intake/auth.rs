//! Who is sending: Sentry's auth in its header, query and envelope forms.
//!
//! Sources, as Relay reads them: `X-Sentry-Auth: Sentry …`, `Authorization:
//! Sentry …` and a query string containing `sentry_`; more than one of them
//! is refused (401). The envelope header's `dsn` is the fallback when none is
//! present.

use axum::http::HeaderMap;

use super::StoreError;

/// Credentials found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentryAuth {
    pub public_key: String,
    pub secret_key: Option<String>,
    /// The header value to forward upstream as `X-Sentry-Auth`, when the
    /// credentials came from a header (query auth stays in the query).
    pub forward_header: Option<String>,
}

/// Parses the `key=value, …` list after `Sentry `. `None` when `value` is
/// not Sentry auth at all.
fn parse_header(value: &str) -> Option<Result<SentryAuth, StoreError>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("sentry") {
        return None;
    }
    let mut key = None;
    let mut secret = None;
    for item in rest.split(',') {
        let mut parts = item.splitn(2, '=');
        let (Some(k), Some(v)) = (parts.next(), parts.next()) else { continue };
        match k.trim() {
            "sentry_key" => key = Some(v.trim().to_owned()),
            "sentry_secret" => secret = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    Some(match key.filter(|k| !k.is_empty()) {
        Some(public_key) => Ok(SentryAuth {
            public_key,
            secret_key: secret.filter(|s| !s.is_empty()),
            forward_header: Some(value.trim().to_owned()),
        }),
        None => Err(StoreError::BadAuth),
    })
}

fn parse_query(query: &str) -> Option<Result<SentryAuth, StoreError>> {
    if !query.contains("sentry_") {
        return None;
    }
    let mut key = None;
    let mut secret = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "sentry_key" => key = Some(v.into_owned()),
            "sentry_secret" => secret = Some(v.into_owned()),
            _ => {}
        }
    }
    // `sentry_data` alone (a GET beacon without a key) is not auth.
    key.filter(|k| !k.is_empty()).map(|public_key| {
        Ok(SentryAuth { public_key, secret_key: secret.filter(|s| !s.is_empty()), forward_header: None })
    })
}

/// The credentials of a request, from exactly one source. `Ok(None)` when the
/// request carries none (the envelope endpoint then tries the envelope's `dsn`).
pub fn from_request(headers: &HeaderMap, query: Option<&str>) -> Result<Option<SentryAuth>, StoreError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(parse_header);
    let found: Vec<Result<SentryAuth, StoreError>> =
        [header("x-sentry-auth"), header("authorization"), query.and_then(parse_query)].into_iter().flatten().collect();
    match found.len() {
        0 => Ok(None),
        1 => found.into_iter().next().transpose(),
        _ => Err(StoreError::MultipleAuth),
    }
}

/// An envelope header's `dsn` (`scheme://KEY[:SECRET]@host/…/ID`), parsed
/// once for all it is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// Empty when the DSN names no key.
    pub public_key: String,
    pub secret_key: Option<String>,
    /// The last segment of its path (`https://key@host/prefix/42` → 42);
    /// `None` when that is not a project id.
    pub project: Option<u64>,
}

impl Dsn {
    /// `None` when `dsn` is not a URL.
    pub fn parse(dsn: &str) -> Option<Self> {
        let url = url::Url::parse(dsn).ok()?;
        let project = url.path_segments().and_then(|mut s| s.rfind(|s| !s.is_empty())?.parse().ok());
        Some(Self { public_key: url.username().to_owned(), secret_key: url.password().map(str::to_owned), project })
    }

    /// The credentials it carries; a DSN without a key is bad auth.
    pub fn auth(self) -> Result<SentryAuth, StoreError> {
        if self.public_key.is_empty() {
            return Err(StoreError::BadEnvelopeAuth);
        }
        Ok(SentryAuth { public_key: self.public_key, secret_key: self.secret_key, forward_header: None })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn reads_each_source() {
        let h = headers(&[("x-sentry-auth", "Sentry sentry_key=abc, sentry_version=7, sentry_secret=s")]);
        let auth = from_request(&h, None).expect("ok").expect("some");
        assert_eq!((auth.public_key.as_str(), auth.secret_key.as_deref()), ("abc", Some("s")));
        assert!(auth.forward_header.is_some());

        let h = headers(&[("authorization", "sentry sentry_key=def,sentry_version=7")]);
        assert_eq!(from_request(&h, None).expect("ok").expect("some").public_key, "def");

        let auth = from_request(&HeaderMap::new(), Some("sentry_version=7&sentry_key=ghi")).expect("ok").expect("some");
        assert_eq!((auth.public_key.as_str(), auth.forward_header), ("ghi", None));
    }

    #[test]
    fn none_is_none_and_two_are_refused() {
        assert!(matches!(from_request(&HeaderMap::new(), Some("a=b")), Ok(None)));
        assert!(matches!(from_request(&headers(&[("authorization", "Bearer x")]), None), Ok(None)));
        let h = headers(&[("x-sentry-auth", "Sentry sentry_key=abc")]);
        assert!(matches!(from_request(&h, Some("sentry_key=abc")), Err(StoreError::MultipleAuth)));
    }

    #[test]
    fn a_header_without_a_key_is_bad() {
        let h = headers(&[("x-sentry-auth", "Sentry sentry_version=7")]);
        assert!(matches!(from_request(&h, None), Err(StoreError::BadAuth)));
    }

    #[test]
    fn a_dsn_gives_key_secret_and_project() {
        let dsn = Dsn::parse("https://pub:sec@o1.ingest.example.com/42").expect("a url");
        assert_eq!(dsn.project, Some(42));
        let auth = dsn.auth().expect("a key");
        assert_eq!((auth.public_key.as_str(), auth.secret_key.as_deref()), ("pub", Some("sec")));
        assert_eq!(Dsn::parse("not a dsn"), None);
        let keyless = Dsn::parse("https://host/42").expect("a url");
        assert_eq!(keyless.project, Some(42));
        assert!(matches!(keyless.auth(), Err(StoreError::BadEnvelopeAuth)));
    }

    #[test]
    fn a_dsn_names_its_project_last() {
        let project = |dsn: &str| Dsn::parse(dsn).and_then(|d| d.project);
        assert_eq!(project("https://k@o1.ingest.sentry.io/42"), Some(42));
        assert_eq!(project("http://k@host:9000/sentry/7/"), Some(7));
        assert_eq!(project("https://k@host/"), None);
        assert_eq!(project("not a url"), None);
    }
}
