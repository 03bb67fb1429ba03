//! The `Content-Encoding` decoders under their size limit: the first byte
//! picks the encoding, the rest is the body. What comes out is never more
//! than the limit, and an envelope's header line read alone is a prefix of
//! the whole decoding.
#![no_main]

use cyclops_common::encoding::{DecodeError, Encoding, decode, first_line};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;
const LINE_MAX: usize = 64 << 10;
const ENCODINGS: [Encoding; 5] =
    [Encoding::Identity, Encoding::Gzip, Encoding::Deflate, Encoding::Brotli, Encoding::Zstd];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let encoding = ENCODINGS[usize::from(pick) % ENCODINGS.len()];
    let whole = decode(encoding, body, LIMIT);
    if let Ok(plain) = &whole {
        assert!(plain.len() <= LIMIT);
    }
    let line = first_line(encoding, body, LINE_MAX);
    if let Ok(line) = &line {
        assert!(line.len() <= LINE_MAX);
        match &whole {
            Ok(plain) => assert!(plain.starts_with(line), "the header line is where the body starts"),
            // The line may end before the corruption or the excess does.
            Err(DecodeError::Invalid(_) | DecodeError::TooLarge { .. }) => {}
            Err(e) => panic!("{e}: decoding failed where the line's did not"),
        }
    }
});
