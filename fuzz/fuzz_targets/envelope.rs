//! The envelope reader (framing, item headers, the event item, ids,
//! categories) on a decoded body. Beyond not panicking: an accepted envelope
//! has a canonical event id, and one whose header ingest rewrote (to give it
//! an id) reads again as the same submission.
#![no_main]

use cyclops_ingest::intake::decode::Encoding;
use cyclops_ingest::intake::payload::{Kind, Limits, understand};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits { event_bytes: 64 << 10, envelope_bytes: 256 << 10 };

fuzz_target!(|data: &[u8]| {
    let Ok(read) = understand(Kind::Envelope, Encoding::Identity, data, "/api/1/envelope/", None, LIMITS) else {
        return;
    };
    assert!(is_canonical(read.event_id.as_str()), "event id {:?}", read.event_id);
    assert!(!read.empty || read.categories.is_empty(), "an empty envelope carries nothing");
    if let Some(rewritten) = &read.rewritten {
        let again = understand(Kind::Envelope, Encoding::Identity, &rewritten.body, "/api/1/envelope/", None, LIMITS)
            .expect("a rewritten envelope reads again");
        assert_eq!(again.event_id, read.event_id);
        assert_eq!(again.categories, read.categories);
        assert!(again.rewritten.is_none(), "the id is there now");
    }
});

fn is_canonical(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
