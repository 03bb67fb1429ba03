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
//! Each submission is decoded and checked ([`payload`]), authenticated
//! ([`auth`], [`crate::keys`]), sampled and flood-filtered, and produced to
//! its project's topic, or the spool when Kafka cannot take it ([`accept`],
//! [`crate::durable`]). Every failure is one [`StoreError`].

mod accept;
mod auth;
mod decode;
mod envelope;
mod error;
mod payload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, Uri, header};
use axum::response::Response;
use axum::routing::post;
use cyclops_common::config::Config;
use cyclops_common::flood::FloodFilter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use auth::SentryAuth;
pub use error::StoreError;
pub use payload::Kind;

use crate::durable::Store;
use crate::floods::FloodReport;
use crate::keys::KeyStore;
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
    /// `ingest.max_in_flight_bytes`, in KiB permits.
    budget: Arc<Semaphore>,
    budget_kib: u32,
}

impl Intake {
    pub fn new(keys: Arc<KeyStore>, store: Store, flood: FloodFilter, stats: Arc<Stats>, config: &Config) -> Self {
        let budget_kib = u32::try_from(config.ingest.max_in_flight_bytes / 1024).unwrap_or(u32::MAX).max(1);
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
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
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

/// The intake routes; bodies larger than `ingest.max_envelope_bytes` as
/// received are refused with 413 before they are read.
#[rustfmt::skip]
pub fn router(intake: Arc<Intake>) -> Router {
    let body_limit = intake.config.limits.envelope_bytes;
    Router::new()
        .route("/api/{project_id}/store/", post(store).get(beacon).fallback(store_other_method))
        .route("/api/store/", post(legacy_store).fallback(store_other_method))
        .route("/api/{project_id}/envelope/", post(envelope).fallback(envelope_other_method))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(cors())
        .with_state(intake)
}

/// The parts of a request the intake reads.
#[derive(Debug)]
pub struct Submission {
    /// The path's project id, unparsed; `None` on `/api/store/`.
    pub project: Option<String>,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    /// Kept as a result so that a body error (too large, say) gets our error shape.
    pub body: Result<Bytes, BytesRejection>,
    /// This request's share of `ingest.max_in_flight_bytes`, held until it is answered.
    _permit: Option<OwnedSemaphorePermit>,
}

/// Assumed growth of an encoded body once decoded, for the memory budget.
const DECODED_GROWTH: usize = 4;
/// Longest a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl FromRequest<Arc<Intake>> for Submission {
    type Rejection = StoreError;

    async fn from_request(request: Request, intake: &Arc<Intake>) -> Result<Self, StoreError> {
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
        let permit = intake.reserve_memory(&parts.headers).await;
        let (method, uri, headers) = (parts.method.clone(), parts.uri.clone(), parts.headers.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), intake).await;
        Ok(Self { project, method, uri, headers, peer, body, _permit: permit })
    }
}

impl Intake {
    /// Waits until the request's likely memory (its body, and its decoded
    /// copy when encoded) fits in `ingest.max_in_flight_bytes`. Waiting
    /// requests hold only their connection, not their body.
    async fn reserve_memory(&self, headers: &HeaderMap) -> Option<OwnedSemaphorePermit> {
        let limit = self.config.limits.envelope_bytes;
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(limit, |l| l.min(limit));
        let encoded = headers.get(header::CONTENT_ENCODING).is_some_and(|v| !v.is_empty());
        let bytes = if encoded { length + (length * DECODED_GROWTH).min(limit) } else { length };
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX).min(self.budget_kib);
        self.budget.clone().acquire_many_owned(kib).await.ok()
    }
}

fn is_envelope_content(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-sentry-envelope"))
    })
}

async fn store(State(intake): State<Arc<Intake>>, submission: Submission) -> Response {
    let kind = if is_envelope_content(&submission.headers) { Kind::Envelope } else { Kind::Store };
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
    accept::refuse(&intake, Kind::Store, StoreError::MethodNotAllowed)
}

async fn envelope_other_method(State(intake): State<Arc<Intake>>) -> Response {
    accept::refuse(&intake, Kind::Envelope, StoreError::MethodNotAllowed)
}
