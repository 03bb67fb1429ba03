//! Turning a request body into the bytes an SDK meant: HTTP
//! `Content-Encoding` ([`cyclops_common::encoding`]) and the store
//! endpoint's legacy base64-of-zlib form, always against a size limit that is
//! enforced while decompressing.

use std::borrow::Cow;

use base64::Engine;
use cyclops_common::encoding::read_bounded;
pub use cyclops_common::encoding::{DecodeError, Encoding, decode};

use super::StoreError;

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
