//! Envelopes delivered late keep their event times. Sentry treats the gap
//! between an envelope's `sent_at` and its arrival as the SDK's clock drift
//! and shifts the event's timestamps by it (once it passes 55 minutes), so
//! an envelope replayed an hour after ingest took it would be moved an hour
//! forward. Before sending, `sent_at` is moved forward by the time the
//! envelope waited in Kafka: the SDK's own clock offset is kept, the wait
//! is not counted as drift.
//!
//! The rewritten envelope goes out in its original `Content-Encoding`,
//! compressed again at a fast level: a backlog drains into a Sentry that is
//! already struggling, and sending it uncompressed would multiply the bytes
//! (2.4× for gzip, 2.7× for brotli on SDK envelopes) exactly then.

use std::io::Write;
use std::time::Duration;

use cyclops_common::encoding::{Encoding, decode};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Waits shorter than this are left alone: they cannot matter.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// The envelope `body` (with its `Content-Encoding`) with `sent_at` moved
/// forward by `waited`, in the same encoding; `None` when there is nothing
/// to change or the body cannot be read (it is then sent as stored).
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
    encode(encoding, out).ok()
}

/// `plain` compressed in `encoding` at a fast level (the cost is measured by
/// `make bench-forwarder`). Deflate is written zlib-wrapped, as RFC 9110
/// defines it, whichever form the SDK sent: Sentry reads both.
fn encode(encoding: Encoding, plain: Vec<u8>) -> std::io::Result<Vec<u8>> {
    // About 4:1 on JSON: one allocation for a typical envelope.
    let out = Vec::with_capacity(plain.len() / 3 + 64);
    match encoding {
        Encoding::Identity => Ok(plain),
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            gz.write_all(&plain)?;
            gz.finish()
        }
        Encoding::Deflate => {
            let mut zlib = flate2::write::ZlibEncoder::new(out, flate2::Compression::fast());
            zlib.write_all(&plain)?;
            zlib.finish()
        }
        Encoding::Brotli => {
            // Quality 1 and a 4 MiB window (lgwin 22, brotli's default).
            let mut br = brotli::CompressorWriter::new(out, 4096, 1, 22);
            br.write_all(&plain)?;
            br.flush()?;
            Ok(br.into_inner())
        }
        Encoding::Zstd => zstd::bulk::compress(&plain, 1),
    }
}

#[cfg(test)]
mod tests {
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
    fn compressed_envelopes_keep_their_encoding() {
        // A larger envelope, so that compression visibly pays.
        let mut plain = envelope("2026-11-22T10:00:00Z");
        for n in 0..200 {
            plain.extend_from_slice(format!("{{\"type\":\"event\"}}\n{{\"message\":\"late {n}\"}}\n").as_bytes());
        }
        let stored: [(&str, Vec<u8>); 5] = [
            ("gzip", gzip(&plain)),
            ("x-gzip", gzip(&plain)),
            ("deflate", raw_deflate(&plain)),
            ("br", encode(Encoding::Brotli, plain.clone()).expect("br")),
            ("zstd", zstd::bulk::compress(&plain, 3).expect("zstd")),
        ];
        for (name, body) in stored {
            let out = rewrite(&body, Some(name), Duration::from_secs(60), 1 << 20).expect("rewritten");
            assert!(out.len() < plain.len() / 2, "{name}: {} bytes sent for {} plain", out.len(), plain.len());
            let encoding = Encoding::from_header(Some(name)).expect("known");
            let decoded = decode(encoding, &out, 1 << 20).expect("decodes in its own encoding");
            assert_eq!(sent_at_of(&decoded), "2026-11-22T10:01:00Z", "{name}");
            assert_eq!(decoded.len(), plain.len(), "{name}: items as they were");
        }
    }

    fn gzip(plain: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(plain).expect("write");
        gz.finish().expect("gzip")
    }

    fn raw_deflate(plain: &[u8]) -> Vec<u8> {
        let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflate.write_all(plain).expect("write");
        deflate.finish().expect("deflate")
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
