//! The store reader (JSON events, the legacy base64 of zlib, fingerprints,
//! the flood report's summary) on a decoded body, and the same bytes as a
//! browser beacon's `sentry_data`. An accepted event has a canonical id.
#![no_main]

use cyclops_ingest::intake::decode::Encoding;
use cyclops_ingest::intake::payload::{Kind, Limits, understand};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits { event_bytes: 64 << 10, envelope_bytes: 256 << 10 };

fuzz_target!(|data: &[u8]| {
    let store = understand(Kind::Store, Encoding::Identity, data, "/api/1/store/", None, LIMITS);
    if let Ok(read) = &store {
        assert!(is_canonical(read.event_id.as_str()), "event id {:?}", read.event_id);
        assert!(read.has_event && !read.empty);
    }
    let sentry_data: String = url::form_urlencoded::byte_serialize(data).collect();
    let query = format!("sentry_key=k&sentry_version=7&sentry_data={sentry_data}");
    if let Ok(read) = understand(Kind::Beacon, Encoding::Identity, b"", "/api/1/store/", Some(&query), LIMITS) {
        assert!(is_canonical(read.event_id.as_str()), "beacon event id {:?}", read.event_id);
    }
});

fn is_canonical(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
