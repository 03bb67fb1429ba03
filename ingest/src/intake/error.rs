//! Every way a submission can fail, mapped to Sentry's status codes and
//! `{"detail": "…"}` bodies in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds an SDK is asked to wait after a 503.
const RETRY_AFTER_SECS: u32 = 10;

/// Why a submission was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    Rejected,
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
    /// Kafka did not acknowledge the event in time and the spool is off:
    /// the SDK should retry.
    #[error("failed to store event")]
    Unavailable,
    /// Kafka did not take the event and the spool is full.
    #[error("failed to store event: spool full")]
    SpoolFull,
    /// Kafka did not take the event and the spool's disk failed.
    #[error("failed to store event: spool write failed")]
    SpoolFailed,
}

impl StoreError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingAuth | Self::MultipleAuth | Self::BadAuth | Self::BadEnvelopeAuth => StatusCode::UNAUTHORIZED,
            Self::Rejected => StatusCode::FORBIDDEN,
            Self::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unavailable | Self::SpoolFull | Self::SpoolFailed => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::Rejected => "rejected_key",
            Self::EmptyBody => "empty_body",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidEnvelope(_) => "invalid_envelope",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::InvalidCompression(_) => "invalid_compression",
            Self::TooLarge { .. } => "too_large",
            Self::Body { status: 413, .. } => "too_large",
            Self::Body { .. } => "body",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable => "kafka_unavailable",
            Self::SpoolFull => "spool_full",
            Self::SpoolFailed => "spool_error",
        }
    }
}

impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        let status = self.status();
        metrics::counter!(crate::metrics::REJECTED, "reason" => self.reason()).increment(1);
        if status.is_server_error() {
            tracing::error!(error = %self, "event not stored");
        } else {
            tracing::debug!(error = %self, "event refused");
        }
        let mut response = (status, Json(serde_json::json!({ "detail": self.to_string() }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}
