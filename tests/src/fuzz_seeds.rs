//! Seeds for the fuzz targets (`fuzz/`), taken from what real SDKs sent in
//! the end-to-end tests: with `CYCLOPS_FUZZ_SEEDS` set to a directory
//! (`make fuzz-seeds` sets it to `fuzz/seeds`), each stored record is written
//! there in the input format of every target it can seed. Without it, nothing
//! is written.

use std::path::Path;

use cyclops_common::encoding::{Encoding, decode};

use crate::kafka::Stored;

/// Writes `record`'s seeds under `name` when `CYCLOPS_FUZZ_SEEDS` is set.
pub fn save(name: &str, record: &Stored) {
    let Some(dir) = std::env::var_os("CYCLOPS_FUZZ_SEEDS") else { return };
    let dir = Path::new(&dir);
    let headers = &record.headers;
    let write = |target: &str, bytes: &[u8], suffix: &str| {
        let target = dir.join(target);
        let file = if suffix.is_empty() { name.to_owned() } else { format!("{name}-{suffix}") };
        std::fs::create_dir_all(&target).and_then(|()| std::fs::write(target.join(file), bytes)).expect("seed written");
    };
    let encoding = Encoding::from_header(headers.content_encoding.as_deref()).expect("a stored encoding");
    let plain = decode(encoding, &record.payload, 64 << 20).expect("a stored body decodes");
    // The decoders target's first byte picks the encoding (its ENCODINGS
    // order); the SDK's body goes in as sent and in every other encoding.
    for (pick, name, encoded) in [
        (0u8, "identity", plain.to_vec()),
        (1, "gzip", crate::gzip(&plain)),
        (2, "deflate", deflate(&plain)),
        (3, "br", brotli(&plain)),
        (4, "zstd", zstd::encode_all(&plain[..], 3).expect("zstd")),
    ] {
        write("decoders", &[&[pick][..], &encoded].concat(), name);
    }
    let envelope = headers.path.ends_with("/envelope/")
        || headers.content_type.as_deref().is_some_and(|t| t.starts_with("application/x-sentry-envelope"));
    write(if envelope { "envelope" } else { "event" }, &plain, "");
    let auth =
        format!("{}\n\n{}", headers.auth.as_deref().unwrap_or_default(), headers.query.as_deref().unwrap_or_default());
    write("auth", auth.as_bytes(), "");
    let raw: Vec<String> = record.raw_headers.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    write("record_headers", raw.join("\0").as_bytes(), "");
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut zlib, data).expect("deflate");
    zlib.finish().expect("deflate")
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
    std::io::Write::write_all(&mut writer, data).expect("brotli");
    drop(writer);
    out
}
