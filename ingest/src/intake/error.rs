//! Every way a submission can fail, mapped to Sentry's status codes and
//! `{"detail": "…"}` bodies in one place.
//!
//! A refusal quotes at most [`DETAIL_MAX_BYTES`] of what the client sent,
//! in its answer and in its log line, and refusals are logged at most
//! [`LOGS_PER_SEC`] a second: a client cannot make ingest echo or write
//! what it likes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::durable::StoreFailure;
use crate::keys::Refused;
use crate::spool::SpoolError;

/// Seconds an SDK is asked to wait after a 503.
const RETRY_AFTER_SECS: u32 = 10;
/// Seconds a client is asked to wait after a 503 for memory: the budget
/// frees as fast as requests are answered.
const BUDGET_RETRY_AFTER_SECS: u32 = 1;
/// Longest `detail`, and longest error text in a log line.
pub const DETAIL_MAX_BYTES: usize = 300;
/// Refusals logged per second; the rest are only counted.
const LOGS_PER_SEC: u32 = 10;

/// Why a submission was not accepted. Its text is the answer's `detail`,
/// worded as Sentry words it; its source, when it has one, is for the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("missing authorization information")]
    MissingAuth,
    #[error("multiple authorization payloads detected")]
    MultipleAuth,
    #[error("bad x-sentry-auth header")]
    BadAuth,
    #[error("bad envelope authentication header")]
    BadEnvelopeAuth,
    #[error("bad project path parameter")]
    BadProject,
    /// Unknown key, a key of another project, or a wrong secret.
    #[error("event submission rejected with_reason: ProjectId")]
    Rejected(#[source] Refused),
    #[error("empty request body")]
    EmptyBody,
    #[error("invalid JSON data: {0}")]
    InvalidJson(String),
    #[error("invalid event envelope: {0}")]
    InvalidEnvelope(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("unsupported content encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("invalid compression: {0}")]
    InvalidCompression(String),
    #[error("payload exceeds the size limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("failed to read request body: {message}")]
    Body { status: u16, message: String },
    #[error("the request body was not received within {secs} s")]
    BodyTimeout { secs: u64 },
    /// No room in `ingest.max_in_flight_bytes` (503, the client retries).
    #[error(transparent)]
    Budget(super::budget::BudgetError),
    /// Kafka did not take the event, and the spool is off, full or its
    /// disk failed: the SDK should retry.
    #[error("failed to store event{}", not_stored_suffix(.0))]
    NotStored(#[source] StoreFailure),
}

/// What the answer adds about the spool: nothing when it is off.
fn not_stored_suffix(failure: &StoreFailure) -> &'static str {
    match failure {
        StoreFailure::Kafka(_) => "",
        StoreFailure::Spool { spool: SpoolError::Full { .. }, .. } => ": spool full",
        StoreFailure::Spool { .. } => ": spool write failed",
    }
}

impl StoreError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingAuth | Self::MultipleAuth | Self::BadAuth | Self::BadEnvelopeAuth => StatusCode::UNAUTHORIZED,
            Self::Rejected(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::NotStored(_) | Self::Budget(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadProject
            | Self::EmptyBody
            | Self::InvalidJson(_)
            | Self::InvalidEnvelope(_)
            | Self::InvalidCompression(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A short, closed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingAuth => "missing_auth",
            Self::MultipleAuth => "multiple_auth",
            Self::BadAuth => "bad_auth",
            Self::BadEnvelopeAuth => "bad_envelope_auth",
            Self::BadProject => "bad_project",
            Self::Rejected(_) => "rejected_key",
            Self::EmptyBody => "empty_body",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidEnvelope(_) => "invalid_envelope",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::InvalidCompression(_) => "invalid_compression",
            Self::TooLarge { .. } => "too_large",
            Self::Body { status: 413, .. } => "too_large",
            Self::Body { .. } => "body",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Budget(e) => e.label(),
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotStored(StoreFailure::Kafka(_)) => "kafka_unavailable",
            Self::NotStored(StoreFailure::Spool { spool: SpoolError::Full { .. }, .. }) => "spool_full",
            Self::NotStored(StoreFailure::Spool { .. }) => "spool_error",
        }
    }
}

impl StoreError {
    /// Counts and logs this refusal: once per refused request, by
    /// [`super::answer::refuse`], which also answers it.
    pub(super) fn record(&self) {
        metrics::counter!(crate::metrics::REJECTED, "reason" => self.reason()).increment(1);
        if let Self::Budget(e) = self {
            metrics::counter!(crate::metrics::LIMIT_HITS, "limit" => e.label()).increment(1);
        }
        if !log_allowed() {
            return;
        }
        let detail = bounded(&error_chain(self), DETAIL_MAX_BYTES);
        match self {
            // Logged where it failed, with its topic and event id.
            Self::NotStored(_) => {}
            Self::Budget(_) => tracing::warn!(error = %detail, "request refused"),
            _ if self.status().is_server_error() => tracing::error!(error = %detail, "event not stored"),
            _ => tracing::debug!(error = %detail, "event refused"),
        }
    }
}

/// The error and its sources, `: `-joined, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sentry's answer: the status, `{"detail": …}` and, for a 503, when to
/// retry. Counting is [`StoreError::record`]'s, not this.
impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = bounded(&self.to_string(), DETAIL_MAX_BYTES);
        let mut response = (status, Json(serde_json::json!({ "detail": detail }))).into_response();
        let retry_after = match self {
            Self::Budget(_) => Some(BUDGET_RETRY_AFTER_SECS),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// At most `max` bytes of `text` (cut on a character boundary), marked
/// when cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let cut = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}… ({} bytes cut)", &text[..cut], text.len() - cut)
}

/// Whether a refusal may be logged now (at most [`LOGS_PER_SEC`] a second).
fn log_allowed() -> bool {
    use std::sync::LazyLock;

    type Limiter = governor::DefaultDirectRateLimiter;
    static LIMITER: LazyLock<Limiter> = LazyLock::new(|| {
        let per_sec = std::num::NonZeroU32::new(LOGS_PER_SEC).unwrap_or(std::num::NonZeroU32::MIN);
        governor::RateLimiter::direct(governor::Quota::per_second(per_sec))
    });
    LIMITER.check().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_client_text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        let long = "é".repeat(1000);
        let cut = bounded(&long, 301);
        assert!(cut.starts_with(&"é".repeat(150)) && cut.ends_with("(1700 bytes cut)"), "{cut}");
        assert!(cut.len() < 330);
    }

    #[tokio::test]
    async fn a_huge_event_id_gets_a_short_detail() {
        let error = StoreError::InvalidJson(format!("invalid event_id {:?}", "x".repeat(1 << 20)));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 1 << 21).await.expect("body");
        assert!(body.len() < 400, "{} bytes", body.len());
    }
}
