//! Sentry's intake endpoints, as Sentry serves them:
//!
//! - `POST /api/{project_id}/store/` — a JSON event (or the legacy base64 of
//!   zlib; or an envelope when sent as `application/x-sentry-envelope`);
//! - `POST /api/store/` — the same, the project taken from the key;
//! - `GET /api/{project_id}/store/?sentry_key=…&sentry_data=…` — browser
//!   beacons, answered with a 1×1 GIF;
//! - `POST /api/{project_id}/envelope/` — envelopes (modern SDKs);
//! - CORS preflights for all of them, as Relay answers them.
//!
//! A submission goes through the stages [`accept`] lists, each its own
//! module: who sends ([`sender`], with [`auth`] and [`crate::keys`]), the
//! body ([`body`], within the memory budget, [`budget`]), what it says
//! ([`decode`], [`mod@envelope`], [`payload`]), what becomes of it
//! ([`decide`]), storing it ([`persist`], [`crate::durable`]) and the
//! answer ([`answer`]). Every failure is one [`StoreError`] ([`error`]).

mod accept;
mod answer;
pub mod auth;
mod body;
pub mod budget;
mod decide;
pub mod decode;
mod envelope;
mod error;
pub mod payload;
mod persist;
mod sender;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::flood::FloodFilter;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, Uri, header};
use axum::response::Response;
use axum::routing::post;
use cyclops_common::config::Config;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::StoreError;
pub use payload::Kind;

use self::budget::MemoryBudget;

use crate::durable::Store;
use crate::flood::report::FloodReport;
use crate::keys::KeyStore;
use crate::now_ms;
use crate::stats::Stats;

/// What the intake handlers share.
#[derive(Debug)]
pub struct Intake {
    pub keys: Arc<KeyStore>,
    pub store: Store,
    pub flood: FloodFilter,
    pub floods: FloodReport,
    pub stats: Arc<Stats>,
    pub config: IntakeConfig,
    /// `ingest.max_in_flight_bytes`
    pub budget: Arc<MemoryBudget>,
}

impl Intake {
    pub fn new(keys: Arc<KeyStore>, store: Store, flood: FloodFilter, stats: Arc<Stats>, config: &Config) -> Self {
        let ingest = &config.ingest;
        Self {
            keys,
            store,
            flood,
            floods: FloodReport::new(
                config.ingest.flood.report_max_fingerprints,
                std::time::Duration::from_secs(config.ingest.flood.report_window_secs),
            ),
            stats,
            config: IntakeConfig::new(config),
            budget: MemoryBudget::new(
                ingest.max_in_flight_bytes,
                ingest.in_flight_client_percent,
                Duration::from_millis(ingest.in_flight_wait_ms),
            ),
        }
    }
}

/// The slice of the configuration the request path reads.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    pub topic_prefix: String,
    pub trust_forwarded_for: bool,
    pub limits: payload::Limits,
    pub sampling: cyclops_common::config::SamplingConfig,
    /// `ingest.connections.body_timeout_ms`
    pub body_timeout: Duration,
}

impl IntakeConfig {
    pub fn new(config: &Config) -> Self {
        Self {
            topic_prefix: config.kafka.topic_prefix.clone(),
            trust_forwarded_for: config.ingest.trust_forwarded_for,
            limits: payload::Limits {
                event_bytes: config.ingest.max_event_bytes,
                envelope_bytes: config.ingest.max_envelope_bytes,
            },
            sampling: config.ingest.sampling.clone(),
            body_timeout: Duration::from_millis(config.ingest.connections.body_timeout_ms),
        }
    }
}

/// Headers a browser SDK may send, as Relay allows them.
const CORS_ALLOWED: [&str; 11] = [
    "x-sentry-auth",
    "x-requested-with",
    "x-forwarded-for",
    "origin",
    "referer",
    "accept",
    "content-type",
    "authentication",
    "authorization",
    "content-encoding",
    "transfer-encoding",
];
/// Headers a browser SDK may read.
const CORS_EXPOSED: [&str; 3] = ["x-sentry-error", "x-sentry-rate-limits", "retry-after"];

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(CORS_ALLOWED.map(HeaderName::from_static))
        .expose_headers(CORS_EXPOSED.map(HeaderName::from_static))
        .allow_origin(AllowOrigin::any())
        .max_age(Duration::from_secs(3600))
}

/// The intake routes.
#[rustfmt::skip]
pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/api/{project_id}/store/", post(store).get(beacon).fallback(store_other_method))
        .route("/api/store/", post(legacy_store).fallback(store_other_method))
        .route("/api/{project_id}/envelope/", post(envelope).fallback(envelope_other_method))
        .layer(cors())
        .with_state(intake)
}

/// A request as the intake takes it: its head, and its body, read only once
/// its credentials are known ([`accept`]).
#[derive(Debug)]
pub struct Submission {
    pub head: Head,
    pub body: Body,
}

/// The parts of a request's head the intake reads.
#[derive(Debug)]
pub struct Head {
    /// The path's project id, unparsed; `None` on `/api/store/`.
    pub project: Option<String>,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    /// When all of the body must be in: `ingest.connections.body_timeout_ms` after its head.
    pub body_deadline: tokio::time::Instant,
}

impl Head {
    /// The raw query string; `None` when empty.
    pub fn query(&self) -> Option<&str> {
        self.uri.query().filter(|q| !q.is_empty())
    }

    /// A header's value, trimmed; `None` when absent, empty or not text.
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The client's address: the TCP peer, or behind a trusted proxy the
    /// leftmost `X-Forwarded-For` entry that is an IP address.
    pub fn client(&self, trust_forwarded_for: bool) -> IpAddr {
        let forwarded = || {
            let value = self.headers.get("x-forwarded-for")?.to_str().ok()?;
            value.split(',').next()?.trim().parse::<IpAddr>().ok()
        };
        trust_forwarded_for.then(forwarded).flatten().unwrap_or(self.peer.ip())
    }
}

impl FromRequest<Arc<Intake>> for Submission {
    type Rejection = StoreError;

    async fn from_request(request: Request, intake: &Arc<Intake>) -> Result<Self, StoreError> {
        let body_deadline = tokio::time::Instant::now() + intake.config.body_timeout;
        let (mut parts, body) = request.into_parts();
        // The route says whether there is a project id; its value is read from
        // the raw path, so that a percent-encoded id is refused, not decoded.
        let project = match Path::<String>::from_request_parts(&mut parts, intake).await {
            Ok(_) => parts.uri.path().split('/').nth(2).map(str::to_owned),
            Err(_) => None,
        };
        // Served with connect info; a request without it (a test calling the
        // router directly) has no peer address to record.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |ConnectInfo(addr)| *addr);
        let head = Head { project, method: parts.method, uri: parts.uri, headers: parts.headers, peer, body_deadline };
        Ok(Self { head, body })
    }
}

fn is_envelope_content(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-sentry-envelope"))
    })
}

async fn store(State(intake): State<Arc<Intake>>, submission: Submission) -> Response {
    let kind = if is_envelope_content(&submission.head.headers) { Kind::Envelope } else { Kind::Store };
    accept::handle(&intake, kind, submission).await
}

async fn legacy_store(State(intake): State<Arc<Intake>>, submission: Submission) -> Response {
    store(State(intake), submission).await
}

async fn beacon(State(intake): State<Arc<Intake>>, submission: Submission) -> Response {
    accept::handle(&intake, Kind::Beacon, submission).await
}

async fn envelope(State(intake): State<Arc<Intake>>, submission: Submission) -> Response {
    accept::handle(&intake, Kind::Envelope, submission).await
}

// Without these, the router would answer other methods itself: uncounted
// and without Sentry's `{"detail"}` body.
async fn store_other_method(State(intake): State<Arc<Intake>>) -> Response {
    answer::refuse(&intake, Kind::Store, StoreError::MethodNotAllowed)
}

async fn envelope_other_method(State(intake): State<Arc<Intake>>) -> Response {
    answer::refuse(&intake, Kind::Envelope, StoreError::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn head(peer: &str, forwarded: Option<&'static str>) -> Head {
        let mut headers = HeaderMap::new();
        if let Some(value) = forwarded {
            headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        }
        Head {
            project: None,
            method: Method::POST,
            uri: Uri::from_static("/api/1/store/"),
            headers,
            peer: peer.parse().expect("addr"),
            body_deadline: tokio::time::Instant::now(),
        }
    }

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_trusted() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        let proxied = head("10.0.0.9:5000", Some("203.0.113.7, 10.0.0.1"));
        assert_eq!(proxied.client(false), ip("10.0.0.9"));
        assert_eq!(proxied.client(true), ip("203.0.113.7"));
        let garbage = head("10.0.0.9:5000", Some("garbage"));
        assert_eq!(garbage.client(true), ip("10.0.0.9"), "an unparsable header falls back to the peer");
        assert_eq!(head("10.0.0.9:5000", None).client(true), ip("10.0.0.9"));
    }
}
