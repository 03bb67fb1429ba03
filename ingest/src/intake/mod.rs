//! Sentry's intake endpoints: `POST /api/{project_id}/store/` and
//! `POST /api/{project_id}/envelope/`.
//!
//! A submission is authenticated, given a stable event id, and produced to
//! its project's topic with the request body exactly as received; the SDK
//! gets `200 {"id": …}` only once Kafka acknowledged it.
//!
//! Not yet here (issue 3): decompression and validation of encoded bodies,
//! the flood filter, sampling, GET beacons, `/api/store/`, CORS, keys from
//! Sentry's database. Encoded bodies are stored as received with an event id
//! assigned by ingest.

mod auth;
mod error;
mod event_id;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cyclops_common::config::Config;
use cyclops_common::record::{RecordHeaders, topic_name};

pub use auth::KeyStore;
pub use error::StoreError;

use crate::producer::EventProducer;

/// Largest request body accepted, as sent (Sentry's envelope limit).
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// What the intake handlers share.
#[derive(Debug)]
pub struct Intake {
    pub trust_forwarded_for: bool,
    pub keys: KeyStore,
    pub producer: EventProducer,
    pub topic_prefix: String,
}

impl Intake {
    pub fn new(config: &Config, producer: EventProducer) -> Self {
        Self {
            trust_forwarded_for: config.ingest.trust_forwarded_for,
            keys: KeyStore::new(&config.projects),
            producer,
            topic_prefix: config.kafka.topic_prefix.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Store,
    Envelope,
}

/// The intake routes.
#[rustfmt::skip]
pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/api/{project_id}/store/", post(store))
        .route("/api/{project_id}/envelope/", post(envelope))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(intake)
}

/// The parts of a request the intake reads.
struct Submission {
    project: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: SocketAddr,
    /// Kept as a result so that a body error (too large, say) gets our error shape.
    body: Result<Bytes, BytesRejection>,
}

impl<S: Send + Sync> FromRequest<S> for Submission {
    type Rejection = StoreError;

    async fn from_request(request: Request, state: &S) -> Result<Self, StoreError> {
        let (mut parts, body) = request.into_parts();
        let Path(project) =
            Path::<String>::from_request_parts(&mut parts, state).await.map_err(|_| StoreError::BadProject)?;
        // Served with connect info; a request without it (a test calling the
        // router directly) has no peer address to record.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |ConnectInfo(addr)| *addr);
        let body = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await;
        Ok(Self { project, method: parts.method, uri: parts.uri, headers: parts.headers, peer, body })
    }
}

async fn store(State(intake): State<Arc<Intake>>, submission: Submission) -> Result<Response, StoreError> {
    accept(&intake, Endpoint::Store, submission).await
}

async fn envelope(State(intake): State<Arc<Intake>>, submission: Submission) -> Result<Response, StoreError> {
    accept(&intake, Endpoint::Envelope, submission).await
}

/// The client's address: the TCP peer, or behind a trusted proxy the
/// leftmost `X-Forwarded-For` entry that is an IP address.
fn client_ip(trust_forwarded_for: bool, headers: &HeaderMap, peer: SocketAddr) -> String {
    let forwarded = || {
        let value = headers.get("x-forwarded-for")?.to_str().ok()?;
        value.split(',').next()?.trim().parse::<std::net::IpAddr>().ok()
    };
    match trust_forwarded_for.then(forwarded).flatten() {
        Some(ip) => ip.to_string(),
        None => peer.ip().to_string(),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

async fn accept(intake: &Intake, endpoint: Endpoint, s: Submission) -> Result<Response, StoreError> {
    let project_id: u64 = s.project.parse().map_err(|_| StoreError::BadProject)?;
    let query = s.uri.query().filter(|q| !q.is_empty());
    let request_auth = auth::from_request(&s.headers, query)?;
    let body = s.body.map_err(|e| StoreError::Body { status: e.status().as_u16(), message: e.body_text() })?;
    if body.is_empty() {
        return Err(StoreError::EmptyBody);
    }
    let encoding = header_str(&s.headers, header::CONTENT_ENCODING).filter(|e| !e.eq_ignore_ascii_case("identity"));
    let found = match (endpoint, encoding.is_some()) {
        // Encoded bodies are stored as they came; reading them is issue 3's decompression.
        (_, true) => event_id::Found::default(),
        (Endpoint::Store, false) => event_id::from_store_body(&body)?,
        (Endpoint::Envelope, false) => event_id::from_envelope(&body)?,
    };
    let auth = match (request_auth, found.dsn.as_deref()) {
        (Some(auth), _) => auth,
        (None, Some(dsn)) if endpoint == Endpoint::Envelope => auth::from_dsn(dsn)?,
        (None, _) => return Err(StoreError::MissingAuth),
    };
    intake.keys.check(&auth, project_id)?;

    let event_id = found.event_id.clone().unwrap_or_else(event_id::new);
    let record = RecordHeaders {
        method: s.method.to_string(),
        path: s.uri.path().to_owned(),
        query: query.map(str::to_owned),
        content_type: header_str(&s.headers, header::CONTENT_TYPE),
        content_encoding: encoding,
        auth: auth.forward_header,
        event_id: event_id.clone(),
        project_id,
        received_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        client_ip: Some(client_ip(intake.trust_forwarded_for, &s.headers, s.peer)),
        user_agent: header_str(&s.headers, header::USER_AGENT),
    };
    let topic = topic_name(&intake.topic_prefix, project_id);
    intake.producer.send(&topic, &event_id, &body, record.to_kafka()).await.map_err(|e| {
        tracing::error!(error = %e, topic, event_id, "kafka did not take the event");
        StoreError::Unavailable
    })?;
    metrics::counter!(crate::metrics::ACCEPTED).increment(1);

    // An envelope without an event id (sessions, client reports) answers `{}`, as Sentry does.
    let body = match (endpoint, &found.event_id) {
        (Endpoint::Envelope, None) => serde_json::json!({}),
        _ => serde_json::json!({ "id": event_id }),
    };
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert("x-cyclops-status", HeaderValue::from_static("PROCESSED"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_trusted() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().expect("addr");
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, 10.0.0.1"));
        assert_eq!(client_ip(false, &headers, peer), "10.0.0.9");
        assert_eq!(client_ip(true, &headers, peer), "203.0.113.7");
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(true, &headers, peer), "10.0.0.9", "an unparsable header falls back to the peer");
        assert_eq!(client_ip(true, &HeaderMap::new(), peer), "10.0.0.9");
    }
}
