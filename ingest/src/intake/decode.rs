//! Turning a request body into the bytes an SDK meant: HTTP
//! `Content-Encoding` ([`cyclops_common::encoding`]) and the store
//! endpoint's legacy base64-of-zlib form, always against a size limit that is
//! enforced while decompressing.

use std::borrow::Cow;
use std::io::Read;

use base64::Engine;
use cyclops_common::encoding::read_bounded;
pub use cyclops_common::encoding::{DecodeError, Encoding, decode, first_line};

use super::StoreError;
use super::budget::{Charge, STEP_BYTES};

/// The body with its `Content-Encoding` undone, at most `limit` bytes, each
/// step of decoding charged to `charge` before it is produced: what a bomb
/// can make ingest hold is what the memory budget grants, not what it
/// declares or compresses to.
pub async fn decode_charged<'a>(
    encoding: Encoding,
    body: &'a [u8],
    limit: usize,
    charge: &mut Charge,
) -> Result<Cow<'a, [u8]>, StoreError> {
    let Some(mut decoder) = cyclops_common::encoding::reader(encoding, body)? else {
        if body.len() > limit {
            return Err(StoreError::TooLarge { limit });
        }
        return Ok(Cow::Borrowed(body));
    };
    let what = encoding.name().unwrap_or("identity");
    // Decoded in fixed steps, each charged before it is produced, rather
    // than into one growing buffer: a growing buffer's reallocations hold
    // the old and the new copy at once, uncharged.
    let mut steps: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    for count in 1usize.. {
        // A 20 MiB decode is hundreds of steps: let other requests run between some.
        if count % 16 == 0 {
            tokio::task::yield_now().await;
        }
        charge.add(STEP_BYTES).await.map_err(StoreError::Budget)?;
        let mut step = Vec::with_capacity(STEP_BYTES);
        let read = (&mut decoder).take(STEP_BYTES as u64).read_to_end(&mut step);
        let n = read.map_err(|e| StoreError::InvalidCompression(format!("{what}: {e}")))?;
        metrics::counter!(crate::metrics::DECODED_BYTES).increment(n as u64);
        total += n;
        if total > limit {
            return Err(StoreError::TooLarge { limit });
        }
        if n == 0 {
            charge.release(STEP_BYTES);
            break;
        }
        steps.push(step);
    }
    let held = steps.len() * STEP_BYTES;
    if steps.len() == 1 {
        return Ok(Cow::Owned(steps.pop().unwrap_or_default()));
    }
    // One contiguous copy for the parsers, charged before it is made; the
    // steps are freed as they are copied.
    charge.add(total).await.map_err(StoreError::Budget)?;
    let mut out = Vec::with_capacity(total);
    for step in steps {
        out.extend_from_slice(&step);
    }
    charge.release(held);
    Ok(Cow::Owned(out))
}

impl From<DecodeError> for StoreError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Unsupported(v) => StoreError::UnsupportedEncoding(v),
            DecodeError::Invalid(v) => StoreError::InvalidCompression(v),
            DecodeError::TooLarge { limit } => StoreError::TooLarge { limit },
        }
    }
}

/// A store body as an SDK meant it: JSON as is, or the legacy form of old
/// raven clients (base64, of JSON or of zlib-compressed JSON), at most
/// `limit` bytes once decoded.
pub fn legacy_store_body(body: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, StoreError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    if body.get(start) == Some(&b'{') {
        return Ok(Cow::Borrowed(body));
    }
    let text: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|e| StoreError::InvalidCompression(format!("bad base64: {e}")))?;
    if decoded.first() == Some(&b'{') {
        if decoded.len() > limit {
            return Err(StoreError::TooLarge { limit });
        }
        return Ok(Cow::Owned(decoded));
    }
    Ok(Cow::Owned(read_bounded(flate2::bufread::ZlibDecoder::new(decoded.as_slice()), limit, decoded.len(), "zlib")?))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const EVENT: &[u8] = br#"{"message":"hello","level":"error"}"#;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn legacy_store_bodies() {
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d).into_bytes();
        assert_eq!(legacy_store_body(EVENT, 1024).expect("json").as_ref(), EVENT);
        assert_eq!(legacy_store_body(&b64(EVENT), 1024).expect("base64 json").as_ref(), EVENT);
        assert_eq!(legacy_store_body(&b64(&zlib(EVENT)), 1024).expect("base64 zlib").as_ref(), EVENT);
        assert!(matches!(legacy_store_body(b"!!not base64!!", 1024), Err(StoreError::InvalidCompression(_))));
        assert!(matches!(legacy_store_body(&b64(b"garbage"), 1024), Err(StoreError::InvalidCompression(_))));
        assert_eq!(legacy_store_body(&b64(&zlib(&vec![b' '; 4096])), 1024), Err(StoreError::TooLarge { limit: 1024 }));
    }
}
