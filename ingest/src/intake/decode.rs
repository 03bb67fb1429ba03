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

/// The smallest first step of a decoding.
const FIRST_STEP_MIN_BYTES: usize = 4 << 10;

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
    // Decoded in steps, each charged before it is produced, rather than
    // into one growing buffer: a growing buffer's reallocations hold the old
    // and the new copy at once, uncharged. The first step is sized from the
    // body (JSON compresses 4:1 to 10:1), so that a typical event is one
    // small step: a full step for each of a few hundred events in flight
    // was tens of MiB of RSS (`make bench`).
    let mut steps: Vec<Vec<u8>> = Vec::new();
    let (mut total, mut held) = (0usize, 0usize);
    let mut size = body.len().saturating_mul(8).clamp(FIRST_STEP_MIN_BYTES, STEP_BYTES);
    for count in 1usize.. {
        // A 20 MiB decode is hundreds of steps: let other requests run between some.
        if count % 16 == 0 {
            tokio::task::yield_now().await;
        }
        charge.add(size).await.map_err(StoreError::Budget)?;
        held += size;
        let mut step = Vec::with_capacity(size);
        let read = (&mut decoder).take(size as u64).read_to_end(&mut step);
        let n = read.map_err(|e| StoreError::InvalidCompression(format!("{what}: {e}")))?;
        metrics::counter!(crate::metrics::DECODED_BYTES).increment(n as u64);
        total += n;
        if total > limit {
            return Err(StoreError::TooLarge { limit });
        }
        if n > 0 {
            steps.push(step);
        }
        // A short step is the end of the decoding: no empty step to find it.
        if n < size {
            break;
        }
        size = STEP_BYTES;
    }
    match steps.len() {
        0 => {
            charge.release(held);
            return Ok(Cow::Owned(Vec::new()));
        }
        // Its charge is its capacity, held as long as the request.
        1 => return Ok(Cow::Owned(steps.pop().unwrap_or_default())),
        _ => {}
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

    #[tokio::test]
    async fn charged_decoding_gives_every_byte_back_at_every_step_boundary() {
        let budget = super::super::budget::MemoryBudget::new(64 << 20, 100, std::time::Duration::from_millis(10));
        let free = budget.available_kib();
        for len in [0, 1, 4095, 4096, 4097, STEP_BYTES - 1, STEP_BYTES, STEP_BYTES + 1, 3 * STEP_BYTES, 300_001] {
            // Incompressible enough that the first step is small and the body spans several.
            let plain: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&plain).expect("write");
            let body = gz.finish().expect("gzip");
            let mut charge = budget.charge(std::net::IpAddr::from([127, 0, 0, 1]));
            let decoded = decode_charged(Encoding::Gzip, &body, 1 << 20, &mut charge).await.expect("decodes");
            assert_eq!(decoded.as_ref(), plain.as_slice(), "{len} bytes");
            assert!(charge.bytes() >= decoded.len(), "{len}: what is held is charged");
            drop((decoded, charge));
            assert_eq!(budget.available_kib(), free, "{len}: all given back");
        }
    }

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
        let bomb = b64(&zlib(&vec![b' '; 4096]));
        assert!(matches!(legacy_store_body(&bomb, 1024), Err(StoreError::TooLarge { limit: 1024 })));
    }
}
