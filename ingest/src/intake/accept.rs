//! One submission from request to answer: decode and read it, authenticate,
//! sample, flood-filter, produce, and answer as Sentry would, with Cyclops's
//! `X-CYCLOPS-STATUS`, `X-CYCLOPS-CACHE-COUNT` and `X-CYCLOPS-DURABILITY`
//! (`kafka`, `spool`, `queued` with `ingest.ack = "enqueue"`, `none` for a
//! dropped event) headers.
//!
//! Dropped events (flood filter, sampling) are answered 200 like stored
//! ones: a 429 would make the SDK hold back all of its errors, not only the
//! flooding one. An envelope with no items is answered 200 and not stored,
//! as Relay does: there is nothing in it to deliver.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::flood::Verdict;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cyclops_common::record::{RecordHeaders, topic_name};

use super::decode::{self, Encoding};
use super::payload::{self, Kind, Understood};
use super::{Intake, StoreError, Submission, auth, body, envelope};
use crate::durable::{Durability, Outgoing, StoreFailure};
use crate::flood::report::Sample;
use crate::spool::SpoolError;

/// Longest envelope header line read to find a `dsn` (Relay's own limit on
/// an envelope header is far below this).
const ENVELOPE_HEADER_MAX_BYTES: usize = 64 << 10;

/// Sentry's answer to a beacon: a transparent 1×1 GIF.
const PIXEL_GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x00\xff\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x00;";

/// What became of an accepted submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Processed(Durability),
    Ignored(&'static str),
}

fn endpoint_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Store => "store",
        Kind::Envelope => "envelope",
        Kind::Beacon => "beacon",
    }
}

/// Answers one submission; every outcome is counted.
pub async fn handle(intake: &Intake, kind: Kind, submission: Submission) -> Response {
    match accept(intake, kind, submission).await {
        Ok(response) => counted(kind, response),
        Err(error) => refuse(intake, kind, error),
    }
}

/// Answers a refused request, counted by reason and status; also for
/// requests refused before they are read (a method the endpoint does not take).
pub fn refuse(intake: &Intake, kind: Kind, error: StoreError) -> Response {
    intake.stats.rejected(error.reason());
    counted(kind, error.into_response())
}

fn counted(kind: Kind, response: Response) -> Response {
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::metrics::REQUESTS, "endpoint" => endpoint_label(kind), "status" => status).increment(1);
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The client's address: the TCP peer, or behind a trusted proxy the
/// leftmost `X-Forwarded-For` entry that is an IP address.
pub(super) fn client_ip(trust_forwarded_for: bool, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    let forwarded = || {
        let value = headers.get("x-forwarded-for")?.to_str().ok()?;
        value.split(',').next()?.trim().parse::<IpAddr>().ok()
    };
    trust_forwarded_for.then(forwarded).flatten().unwrap_or(peer.ip())
}

/// A project id as Sentry writes one: decimal digits, no sign, no leading
/// zero, no percent-encoding (the raw path segment is checked).
pub(super) fn parse_project(segment: &str) -> Option<u64> {
    let canonical = !segment.is_empty() && segment.len() <= 19 && segment.bytes().all(|b| b.is_ascii_digit());
    if !canonical || segment.starts_with('0') {
        return None;
    }
    segment.parse().ok()
}

async fn accept(intake: &Intake, kind: Kind, s: Submission) -> Result<Response, StoreError> {
    if kind == Kind::Beacon && s.method != axum::http::Method::GET {
        return Err(StoreError::MethodNotAllowed);
    }
    let path_project = match &s.project {
        Some(p) => Some(parse_project(p).ok_or(StoreError::BadProject)?),
        None => None,
    };
    let query = s.uri.query().filter(|q| !q.is_empty());
    let request_auth = auth::from_request(&s.headers, query)?;
    // Strangers are refused before their body is read, let alone decoded.
    let found = match request_auth {
        Some(auth) => {
            let project = intake.keys.resolve(&auth, path_project)?;
            Some((auth, project))
        }
        // Only an envelope can carry its credentials inside (its header's `dsn`).
        None if kind != Kind::Envelope => return Err(StoreError::MissingAuth),
        None => None,
    };
    let raw_encoding = header_str(&s.headers, header::CONTENT_ENCODING);
    let encoding = Encoding::from_header(raw_encoding.as_deref())?;
    let limits = intake.config.limits;
    let client = client_ip(intake.config.trust_forwarded_for, &s.headers, s.peer);
    let mut charge = intake.budget.charge(client);
    let timeout_secs = intake.config.body_timeout.as_secs();
    let declared = body::declared_length(&s.headers);
    let body = body::read(s.body, limits.envelope_bytes, declared, s.body_deadline, timeout_secs, &mut charge).await?;
    if kind != Kind::Beacon && body.is_empty() {
        return Err(StoreError::EmptyBody);
    }
    let (auth, project_id) = match found {
        Some(found) => found,
        None => {
            // Its header line, decoded no further, names the key. A body
            // that yields none is a stranger's: 401 whatever else is wrong with it.
            let line = decode::first_line(encoding, &body, ENVELOPE_HEADER_MAX_BYTES);
            let dsn = line.ok().and_then(|l| envelope::header_dsn(&l)).ok_or(StoreError::MissingAuth)?;
            let auth = auth::from_dsn(&dsn)?;
            let project = intake.keys.resolve(&auth, path_project)?;
            (auth, project)
        }
    };
    let decoded = decode::decode_charged(encoding, &body, limits.decoded(kind), &mut charge).await?;
    let understood = payload::understand_decoded(kind, &decoded, s.uri.path(), query, limits)?;
    // Relay answers a header/dsn disagreement as an invalid envelope.
    if understood.dsn.as_deref().and_then(|d| auth::from_dsn(d).ok()).is_some_and(|d| d.public_key != auth.public_key) {
        return Err(StoreError::InvalidEnvelope("header mismatch: public key".into()));
    }
    // As Relay: an envelope that says it is for another project is refused,
    // not stored for Sentry to refuse later.
    if let Some(named) = understood.dsn.as_deref().and_then(auth::dsn_project)
        && named != project_id
    {
        return Err(StoreError::InvalidEnvelope("header mismatch: project id".into()));
    }

    let (mut fate, count) = decide(intake, project_id, &understood).await;
    if fate == Fate::Ignored("flood") {
        report_flood(intake, project_id, &understood, &s.headers, s.peer);
    }
    if let Fate::Processed(_) = fate {
        let Understood { event_id, rewritten, .. } = &understood;
        let (value, query, encoding) = match rewritten {
            Some(r) => (r.body.as_slice(), r.query.as_deref().or(query), None),
            None => (body.as_ref(), query, encoding.name()),
        };
        let record = RecordHeaders {
            method: s.method.to_string(),
            path: s.uri.path().to_owned(),
            query: query.map(str::to_owned),
            content_type: header_str(&s.headers, header::CONTENT_TYPE),
            content_encoding: encoding.map(str::to_owned),
            auth: auth.forward_header.clone(),
            event_id: event_id.clone(),
            project_id,
            received_at_ms: now_ms(),
            client_ip: Some(client.to_string()),
            user_agent: header_str(&s.headers, header::USER_AGENT),
            fingerprint: understood.fingerprint.clone(),
            categories: understood.categories.clone(),
        };
        let topic = topic_name(&intake.config.topic_prefix, project_id);
        let out = Outgoing { topic: &topic, key: event_id, value, headers: &record };
        match intake.store.store(out).await {
            Ok(durability) => fate = Fate::Processed(durability),
            Err(e) => {
                tracing::error!(error = %e, topic, event_id, "event not stored");
                // Not stored: give its flood slot back, so that the SDK's retry is not dropped for it.
                if let Some(fingerprint) = &understood.fingerprint {
                    intake.flood.refund(project_id, fingerprint).await;
                }
                return Err(match e {
                    StoreFailure::Kafka(_) => StoreError::Unavailable,
                    StoreFailure::Spool { spool: SpoolError::Full { .. }, .. } => StoreError::SpoolFull,
                    StoreFailure::Spool { .. } => StoreError::SpoolFailed,
                });
            }
        }
        intake.stats.processed(project_id);
        metrics::counter!(crate::metrics::ACCEPTED).increment(1);
    }
    Ok(answer(kind, &understood, fate, count))
}

/// An empty envelope is not stored; sampling next (it costs nothing), then
/// the flood filter for submissions that carry an error event.
async fn decide(intake: &Intake, project_id: u64, understood: &Understood) -> (Fate, u64) {
    if understood.empty {
        return ignored(intake, project_id, "empty", 0);
    }
    let percent = intake.config.sampling.percent_for(project_id);
    if percent > 0.0 && fastrand::f64() * 100.0 < percent {
        return ignored(intake, project_id, "sampled", 0);
    }
    let Some(fingerprint) = &understood.fingerprint else { return (Fate::Processed(Durability::Kafka), 0) };
    match intake.flood.check(project_id, fingerprint).await {
        Verdict::Pass { count } => (Fate::Processed(Durability::Kafka), count),
        Verdict::Drop { count } => ignored(intake, project_id, "flood", count),
    }
}

/// Adds a dropped event to `/floods`; its host is its `server_name`, else the client's address.
fn report_flood(intake: &Intake, project_id: u64, understood: &Understood, headers: &HeaderMap, peer: SocketAddr) {
    let (Some(fingerprint), Some(summary)) = (&understood.fingerprint, &understood.summary) else { return };
    let client;
    let host = match &summary.server_name {
        Some(name) => name.as_str(),
        None => {
            client = client_ip(intake.config.trust_forwarded_for, headers, peer).to_string();
            client.as_str()
        }
    };
    let sample = Sample { title: &summary.title, release: summary.release.as_deref(), host };
    intake.floods.dropped(project_id, fingerprint, &sample, now_ms());
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ignored(intake: &Intake, project_id: u64, reason: &'static str, count: u64) -> (Fate, u64) {
    intake.stats.ignored(project_id, reason);
    metrics::counter!(crate::metrics::IGNORED, "reason" => reason).increment(1);
    (Fate::Ignored(reason), count)
}

fn answer(kind: Kind, understood: &Understood, fate: Fate, count: u64) -> Response {
    let mut response = match kind {
        Kind::Beacon => ([(header::CONTENT_TYPE, "image/gif")], PIXEL_GIF).into_response(),
        _ if understood.has_event => axum::Json(serde_json::json!({ "id": understood.event_id })).into_response(),
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
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_trusted() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().expect("addr");
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, 10.0.0.1"));
        assert_eq!(client_ip(false, &headers, peer), "10.0.0.9".parse::<IpAddr>().expect("ip"));
        assert_eq!(client_ip(true, &headers, peer), "203.0.113.7".parse::<IpAddr>().expect("ip"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(
            client_ip(true, &headers, peer),
            "10.0.0.9".parse::<IpAddr>().expect("ip"),
            "an unparsable header falls back to the peer"
        );
        assert_eq!(client_ip(true, &HeaderMap::new(), peer), "10.0.0.9".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn project_ids_must_be_canonical() {
        assert_eq!(parse_project("42"), Some(42));
        for bad in ["", "0", "042", "+42", "-1", "4a", "%34%32", "99999999999999999999"] {
            assert_eq!(parse_project(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_pixel_is_sentrys_26_byte_gif() {
        assert_eq!(PIXEL_GIF.len(), 26);
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
    }
}
