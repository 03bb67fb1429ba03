//! Credentials, as ingest finds them: `X-Sentry-Auth`, `Authorization`, the
//! query, and an envelope header's `dsn`. Input: the two header values and
//! the query, one per line; the whole input is also read as a DSN. A header
//! ingest accepts is stored as the record's auth, so it must pass the
//! forwarder's replay contract: ingest never writes what the forwarder refuses.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use cyclops_common::ids::{EventId, ProjectId};
use cyclops_common::record::RecordHeaders;
use cyclops_ingest::intake::auth::{Dsn, from_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (sentry, authorization, query) = (parts.next(), parts.next(), parts.next());
    let mut headers = HeaderMap::new();
    for (name, value) in [("x-sentry-auth", sentry), ("authorization", authorization)] {
        if let Some(value) = value.filter(|v| !v.is_empty()).and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
    if let Ok(Some(auth)) = from_request(&headers, query) {
        assert!(!auth.public_key.is_empty());
        if let Some(forwarded) = auth.forward_header {
            let record = RecordHeaders {
                method: "POST".into(),
                path: "/api/1/envelope/".into(),
                query: None,
                content_type: None,
                content_encoding: None,
                auth: Some(forwarded),
                event_id: EventId::new("0".repeat(32)),
                project_id: ProjectId::new(1),
                received_at_ms: 0,
                client_ip: None,
                user_agent: None,
                fingerprint: None,
                categories: Vec::new(),
            };
            let replay = cyclops_forwarder::contract::check(&record);
            assert!(replay.is_ok(), "stored auth {:?} breaks the contract: {replay:?}", record.auth);
        }
    }
    if let Some(Ok(auth)) = Dsn::parse(&text).map(Dsn::auth) {
        assert!(!auth.public_key.is_empty());
    }
});
