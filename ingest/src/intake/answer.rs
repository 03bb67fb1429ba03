//! The answer, as Sentry gives it, with Cyclops's `X-CYCLOPS-STATUS`,
//! `X-CYCLOPS-CACHE-COUNT` and `X-CYCLOPS-DURABILITY` (`kafka`, `spool`,
//! `queued` with `ingest.ack = "enqueue"`, `none` for a dropped event)
//! headers. Every answer is counted here, by endpoint and status, and every
//! refusal by reason: once each.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::decide::Fate;
use super::payload::{Kind, Understood};
use super::{Intake, StoreError};

/// Sentry's answer to a beacon: a transparent 1×1 GIF.
const PIXEL_GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x00\xff\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x00;";

fn endpoint_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Store => "store",
        Kind::Envelope => "envelope",
        Kind::Beacon => "beacon",
    }
}

/// Answers an accepted submission.
pub fn accepted(kind: Kind, understood: &Understood, fate: Fate, count: u64) -> Response {
    let mut response = match kind {
        Kind::Beacon => ([(header::CONTENT_TYPE, "image/gif")], PIXEL_GIF).into_response(),
        _ if understood.has_event => {
            axum::Json(serde_json::json!({ "id": understood.event_id.as_str() })).into_response()
        }
        _ => axum::Json(serde_json::json!({})).into_response(),
    };
    *response.status_mut() = StatusCode::OK;
    let (status, durability) = match fate {
        Fate::Processed(durability) => ("PROCESSED", durability.header()),
        Fate::Ignored(_) => ("IGNORED", "none"),
    };
    let headers = response.headers_mut();
    headers.insert("x-cyclops-status", HeaderValue::from_static(status));
    headers.insert("x-cyclops-durability", HeaderValue::from_static(durability));
    headers.insert("x-cyclops-cache-count", HeaderValue::from(count));
    counted(kind, response)
}

/// Answers a refused request, counted by reason and status; also for
/// requests refused before they are read (a method the endpoint does not take).
pub fn refuse(intake: &Intake, kind: Kind, error: StoreError) -> Response {
    intake.stats.rejected(error.reason());
    error.record();
    counted(kind, error.into_response())
}

fn counted(kind: Kind, response: Response) -> Response {
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::metrics::REQUESTS, "endpoint" => endpoint_label(kind), "status" => status).increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_is_sentrys_26_byte_gif() {
        assert_eq!(PIXEL_GIF.len(), 26);
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
    }
}
