//! Reading a request body: within one deadline for the whole body (not per
//! chunk, so a trickle cannot keep a request open), at most the size limit,
//! and every chunk charged to the memory budget as it arrives.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::StoreError;
use super::budget::Charge;
use super::error::{DETAIL_MAX_BYTES, bounded};

/// The body's declared `Content-Length`, if any and readable.
pub fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads all of `body`: 413 past `limit` (at once when the declared length
/// is larger), 408 when it is not all in by `deadline`.
pub async fn read(
    mut body: Body,
    limit: usize,
    declared: Option<usize>,
    deadline: Instant,
    timeout_secs: u64,
    charge: &mut Charge,
) -> Result<Bytes, StoreError> {
    if declared.is_some_and(|d| d > limit) {
        return Err(StoreError::TooLarge { limit });
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                metrics::counter!(crate::metrics::LIMIT_HITS, "limit" => "body_timeout").increment(1);
                return Err(StoreError::BodyTimeout { secs: timeout_secs });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(StoreError::Body { status: 400, message: bounded(&e.to_string(), DETAIL_MAX_BYTES) });
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else { continue };
        if total + chunk.len() > limit {
            return Err(StoreError::TooLarge { limit });
        }
        charge.add(chunk.len()).await.map_err(StoreError::Budget)?;
        total += chunk.len();
        chunks.push(chunk);
    }
    if chunks.len() <= 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    // One contiguous copy for the parsers; charged before it is made, and
    // the chunks' charge given back once they are dropped.
    charge.add(total).await.map_err(StoreError::Budget)?;
    let mut out = BytesMut::with_capacity(total);
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    charge.release(total);
    Ok(out.freeze())
}
