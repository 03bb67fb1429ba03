//! Envelopes delivered late keep their event times. Sentry treats the gap
//! between an envelope's `sent_at` and its arrival as the SDK's clock drift
//! and shifts the event's timestamps by it (once it passes 55 minutes), so
//! an envelope replayed an hour after ingest took it would be moved an hour
//! forward. Before sending, `sent_at` is moved forward by the time the
//! envelope waited in Kafka: the SDK's own clock offset is kept, the wait
//! is not counted as drift.

use std::time::Duration;

use cyclops_common::encoding::{Encoding, decode};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Waits shorter than this are left alone: they cannot matter.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// The envelope `body` (with its `Content-Encoding`) with `sent_at` moved
/// forward by `waited`, uncompressed; `None` when there is nothing to change
/// or the body cannot be read (it is then sent as stored).
pub fn rewrite(body: &[u8], content_encoding: Option<&str>, waited: Duration, limit: usize) -> Option<Vec<u8>> {
    if waited < MIN_WAIT {
        return None;
    }
    let encoding = Encoding::from_header(content_encoding).ok()?;
    let plain = decode(encoding, body, limit).ok()?;
    let split = plain.iter().position(|&b| b == b'\n').unwrap_or(plain.len());
    let mut header: Map<String, Value> = serde_json::from_slice(&plain[..split]).ok()?;
    let sent_at = OffsetDateTime::parse(header.get("sent_at")?.as_str()?, &Rfc3339).ok()?;
    let moved = sent_at.checked_add(time::Duration::try_from(waited).ok()?)?;
    header.insert("sent_at".into(), Value::String(moved.format(&Rfc3339).ok()?));
    let mut out = serde_json::to_vec(&header).ok()?;
    out.extend_from_slice(&plain[split..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const ITEMS: &str = "\n{\"type\":\"event\"}\n{\"message\":\"late\"}\n";

    fn envelope(sent_at: &str) -> Vec<u8> {
        format!("{{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"sent_at\":\"{sent_at}\"}}{ITEMS}").into_bytes()
    }

    fn sent_at_of(body: &[u8]) -> String {
        let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
        let header: Value = serde_json::from_slice(line).expect("json header");
        header["sent_at"].as_str().expect("sent_at").to_owned()
    }

    #[test]
    fn moves_sent_at_forward_by_the_wait_and_keeps_the_items() {
        let hour = Duration::from_secs(3600);
        let out = rewrite(&envelope("2026-11-22T10:00:00.5Z"), None, hour, 1 << 20).expect("rewritten");
        assert_eq!(sent_at_of(&out), "2026-11-22T11:00:00.5Z");
        assert!(String::from_utf8_lossy(&out).ends_with(ITEMS), "items as they were");
        let offset = rewrite(&envelope("2026-11-22T10:00:00+02:00"), None, hour, 1 << 20).expect("offset");
        assert_eq!(sent_at_of(&offset), "2026-11-22T11:00:00+02:00");
    }

    #[test]
    fn compressed_envelopes_are_sent_uncompressed() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&envelope("2026-11-22T10:00:00Z")).expect("write");
        let body = gz.finish().expect("gzip");
        let out = rewrite(&body, Some("gzip"), Duration::from_secs(60), 1 << 20).expect("rewritten");
        assert_eq!(sent_at_of(&out), "2026-11-22T10:01:00Z");
    }

    #[test]
    fn leaves_alone_what_it_need_not_or_cannot_change() {
        let body = envelope("2026-11-22T10:00:00Z");
        assert_eq!(rewrite(&body, None, Duration::from_millis(10), 1 << 20), None, "no real wait");
        let no_sent_at = format!("{{\"event_id\":\"x\"}}{ITEMS}").into_bytes();
        assert_eq!(rewrite(&no_sent_at, None, Duration::from_secs(60), 1 << 20), None);
        assert_eq!(rewrite(b"not an envelope", None, Duration::from_secs(60), 1 << 20), None);
        assert_eq!(rewrite(&envelope("yesterday"), None, Duration::from_secs(60), 1 << 20), None);
        assert_eq!(rewrite(&body, Some("compress"), Duration::from_secs(60), 1 << 20), None);
        assert_eq!(rewrite(&body, None, Duration::from_secs(60), 8), None, "over the limit");
    }
}
