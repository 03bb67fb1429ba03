//! A fake Sentry for the tests: records every request (with when it came)
//! and answers as the test says — scripted statuses, rules matching a path
//! or body (with headers such as `X-Sentry-Rate-Limits`), added latency.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One request as the fake Sentry received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body with its `Content-Encoding` undone, as text (lossy); empty
    /// when it cannot be decoded.
    pub fn decoded_text(&self) -> String {
        use cyclops_common::encoding::{Encoding, decode};
        let Ok(encoding) = Encoding::from_header(self.header("content-encoding")) else { return String::new() };
        decode(encoding, &self.body, 64 << 20).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
}

/// An answer for requests whose path and body contain given text.
#[derive(Debug, Clone)]
pub struct Rule {
    pub path_contains: String,
    pub body_contains: String,
    /// How many requests it answers; `None` = every one.
    pub times: Option<usize>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Rule {
    /// Answers requests whose path contains `path` with `status`.
    pub fn path(path: &str, status: u16) -> Self {
        Self { path_contains: path.into(), body_contains: String::new(), times: None, status, headers: Vec::new() }
    }

    /// Answers requests whose body contains `needle` with `status`.
    pub fn body(needle: &str, status: u16) -> Self {
        Self { path_contains: String::new(), body_contains: needle.into(), times: None, status, headers: Vec::new() }
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Statuses to answer, in order, when no rule matches; 200 once empty.
    script: VecDeque<u16>,
    rules: Vec<Rule>,
    latency: Duration,
}

/// A running fake Sentry; stops when dropped.
#[derive(Debug)]
pub struct FakeSentry {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl FakeSentry {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1").await
    }

    /// [`Self::start`] on another loopback address (`127.0.0.3`, say): a
    /// host a record must never make the forwarder reach.
    pub async fn start_on(ip: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = CancellationToken::new();
        // Sentry takes envelopes far above axum's 2 MB default; answers come
        // from the test's script and rules only.
        let app =
            Router::new().fallback(record).layer(axum::extract::DefaultBodyLimit::disable()).with_state(inner.clone());
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(until).await });
        Ok(Self { addr, inner, stop })
    }

    /// The base URL to configure as `sentry.base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut inner| f(&mut inner))
    }

    /// Answer the next requests no rule matches with these statuses, then 200 again.
    pub fn script(&self, statuses: &[u16]) {
        self.with(|i| i.script.extend(statuses));
    }

    /// Adds a rule; the first matching rule answers.
    pub fn rule(&self, rule: Rule) {
        self.with(|i| i.rules.push(rule));
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.with(|i| i.rules.clear());
    }

    /// Answers every request after `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.with(|i| i.latency = latency);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|i| i.requests.clone()).unwrap_or_default()
    }
}

impl Drop for FakeSentry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let decided = inner.lock().ok().map(|mut inner| {
        let path = uri.path();
        let text = String::from_utf8_lossy(&body);
        let rule = inner
            .rules
            .iter_mut()
            .find(|r| r.times != Some(0) && path.contains(&r.path_contains) && text.contains(r.body_contains.as_str()));
        let (status, extra) = match rule {
            Some(rule) => {
                rule.times = rule.times.map(|n| n - 1);
                (rule.status, rule.headers.clone())
            }
            None => (inner.script.pop_front().unwrap_or(200), Vec::new()),
        };
        inner.requests.push(Recorded {
            method,
            path: path.to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body: body.clone(),
            at,
            status,
        });
        (status, extra, inner.latency)
    });
    let Some((status, extra, latency)) = decided else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut response =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "{}").into_response();
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
