//! HTTP `Content-Encoding` (gzip, x-gzip, deflate, br, zstd): undoing it
//! always against a size limit enforced while decompressing, so that a small
//! bomb never becomes a large allocation. Ingest reads bodies with it; the
//! forwarder reads an envelope's header with it.

use std::borrow::Cow;
use std::io::Read;

/// Why a body cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content encoding {0:?}")]
    Unsupported(String),
    #[error("invalid compressed body: {0}")]
    Invalid(String),
    #[error("body larger than {limit} bytes once decoded")]
    TooLarge { limit: usize },
}

/// A body's HTTP content encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    /// Reads a `Content-Encoding` header. Empty values and `UTF-8` (sent by
    /// some SDKs) mean no encoding, as in Relay; anything unknown is 415.
    pub fn from_header(value: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = value.map(str::trim) else { return Ok(Self::Identity) };
        match value.to_ascii_lowercase().as_str() {
            "" | "identity" | "utf-8" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "deflate" => Ok(Self::Deflate),
            "br" => Ok(Self::Brotli),
            "zstd" => Ok(Self::Zstd),
            _ => Err(DecodeError::Unsupported(value.to_owned())),
        }
    }

    /// The header value to store, `None` for identity.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some("gzip"),
            Self::Deflate => Some("deflate"),
            Self::Brotli => Some("br"),
            Self::Zstd => Some("zstd"),
        }
    }
}

/// Reads all of `reader`, failing once more than `limit` bytes come out.
/// `compressed_len` sizes the first allocation (JSON compresses about 4:1),
/// so that a typical body is read without growing the buffer.
pub fn read_bounded(
    reader: impl Read,
    limit: usize,
    compressed_len: usize,
    what: &str,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).saturating_add(64).min(limit.saturating_add(1)));
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| DecodeError::Invalid(format!("{what}: {e}")))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

/// The body with its `Content-Encoding` undone, at most `limit` bytes.
pub fn decode(encoding: Encoding, body: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, DecodeError> {
    match reader(encoding, body)? {
        None if body.len() > limit => Err(DecodeError::TooLarge { limit }),
        None => Ok(Cow::Borrowed(body)),
        Some(decoder) => Ok(Cow::Owned(read_bounded(decoder, limit, body.len(), encoding_name(encoding))?)),
    }
}

fn encoding_name(encoding: Encoding) -> &'static str {
    encoding.name().unwrap_or("identity")
}

/// A decoder of `body`, read step by step by whoever must bound or account
/// for what it produces; `None` for identity (the body is its own decoding).
pub fn reader(encoding: Encoding, body: &[u8]) -> Result<Option<Box<dyn Read + Send + '_>>, DecodeError> {
    // The body is in memory: the `bufread` decoders read it in place,
    // without the 32 KiB zeroed buffer a `read` decoder adds per request.
    Ok(Some(match encoding {
        Encoding::Identity => return Ok(None),
        Encoding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(body)),
        // RFC 9110's deflate is zlib-wrapped; some clients send raw deflate.
        Encoding::Deflate if looks_like_zlib(body) => Box::new(flate2::bufread::ZlibDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::bufread::DeflateDecoder::new(body)),
        Encoding::Brotli => Box::new(brotli_decompressor::Decompressor::new(body, 4096)),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(body).map_err(|e| DecodeError::Invalid(format!("zstd: {e}")))?,
        ),
    }))
}

/// The decoded body up to and including its first `\n` (all of it when it
/// has none), decompressing no further than that: an envelope's header line
/// read before anything else of it. Fails past `max` bytes without one.
pub fn first_line(encoding: Encoding, body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let Some(mut decoder) = reader(encoding, body)? else {
        let end = body.iter().position(|&b| b == b'\n').map_or(body.len(), |i| i + 1);
        if end > max {
            return Err(DecodeError::TooLarge { limit: max });
        }
        return Ok(body[..end].to_vec());
    };
    let mut line = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    loop {
        let n =
            decoder.read(&mut chunk).map_err(|e| DecodeError::Invalid(format!("{}: {e}", encoding_name(encoding))))?;
        let got = &chunk[..n];
        if let Some(i) = got.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&got[..=i]);
        } else {
            line.extend_from_slice(got);
        }
        if line.len() > max {
            return Err(DecodeError::TooLarge { limit: max });
        }
        if n == 0 || line.last() == Some(&b'\n') {
            return Ok(line);
        }
    }
}

/// A zlib stream starts with CMF/FLG bytes whose 16-bit value is a multiple of 31.
fn looks_like_zlib(body: &[u8]) -> bool {
    matches!(body, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const EVENT: &[u8] = br#"{"message":"hello","level":"error"}"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).expect("write");
        }
        out
    }

    #[test]
    fn encodings_are_read_from_the_header() {
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        for (h, e) in [
            ("", Encoding::Identity),
            ("UTF-8", Encoding::Identity),
            ("GZIP", Encoding::Gzip),
            ("x-gzip", Encoding::Gzip),
            ("deflate", Encoding::Deflate),
            ("br", Encoding::Brotli),
            ("zstd", Encoding::Zstd),
        ] {
            assert_eq!(Encoding::from_header(Some(h)), Ok(e), "{h}");
        }
        assert_eq!(Encoding::from_header(Some("compress")), Err(DecodeError::Unsupported("compress".into())));
    }

    #[test]
    fn every_encoding_decodes() {
        let zstd_body = zstd::encode_all(EVENT, 3).expect("zstd");
        for (encoding, body) in [
            (Encoding::Identity, EVENT.to_vec()),
            (Encoding::Gzip, gzip(EVENT)),
            (Encoding::Deflate, zlib(EVENT)),
            (Encoding::Deflate, raw_deflate(EVENT)),
            (Encoding::Brotli, brotli(EVENT)),
            (Encoding::Zstd, zstd_body),
        ] {
            assert_eq!(decode(encoding, &body, 1024).expect("decodes").as_ref(), EVENT, "{encoding:?}");
        }
    }

    #[test]
    fn the_limit_holds_while_decompressing() {
        // 10 MiB of zeros compress to about 10 KiB: a small bomb.
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(decode(Encoding::Gzip, &bomb, 1 << 20), Err(DecodeError::TooLarge { limit: 1 << 20 }));
        let zstd_bomb = zstd::encode_all(vec![0u8; 10 << 20].as_slice(), 3).expect("zstd");
        assert_eq!(decode(Encoding::Zstd, &zstd_bomb, 1 << 20), Err(DecodeError::TooLarge { limit: 1 << 20 }));
        assert_eq!(decode(Encoding::Identity, EVENT, 4), Err(DecodeError::TooLarge { limit: 4 }));
    }

    #[test]
    fn the_first_line_is_read_without_decoding_the_rest() {
        let mut envelope = br#"{"dsn":"https://k@h/1"}"#.to_vec();
        envelope.push(b'\n');
        let header = envelope.clone();
        // A bomb after the header: reading the line must not decode it.
        envelope.extend(std::iter::repeat_n(b'x', 10 << 20));
        let body = gzip(&envelope);
        assert_eq!(first_line(Encoding::Gzip, &body, 4096), Ok(header.clone()));
        assert_eq!(first_line(Encoding::Identity, &envelope, 4096), Ok(header.clone()));
        assert_eq!(first_line(Encoding::Identity, b"no newline", 4096), Ok(b"no newline".to_vec()));
        assert_eq!(first_line(Encoding::Gzip, &gzip(&[b'x'; 5000]), 4096), Err(DecodeError::TooLarge { limit: 4096 }));
    }

    #[test]
    fn corrupt_and_truncated_bodies_are_invalid() {
        let g = gzip(EVENT);
        for (encoding, body) in [
            (Encoding::Gzip, g[..g.len() / 2].to_vec()),
            (Encoding::Gzip, b"not gzip at all".to_vec()),
            (Encoding::Deflate, b"\xff\xff\xff".to_vec()),
            (Encoding::Zstd, b"not zstd".to_vec()),
            (Encoding::Brotli, b"\xff\xff\xff\xff not brotli".to_vec()),
        ] {
            assert!(matches!(decode(encoding, &body, 1024), Err(DecodeError::Invalid(_))), "{encoding:?}");
        }
    }
}
