//! A Kafka record's headers as the forwarder reads and replays them. Input:
//! `name:value` pairs separated by NUL bytes (values may hold any other
//! byte). Whatever a record says, a replayed request goes to the configured
//! Sentry, to a normalized intake path, never elsewhere.
#![no_main]

use cyclops_common::record::RecordHeaders;
use cyclops_forwarder::contract::{check, replay_url};
use libfuzzer_sys::fuzz_target;
use rdkafka::message::{Header, OwnedHeaders};

const BASE: &str = "http://sentry.invalid:9000/prefix";

fuzz_target!(|data: &[u8]| {
    let mut headers = OwnedHeaders::new();
    for pair in data.split(|&b| b == 0) {
        let Some(colon) = pair.iter().position(|&b| b == b':') else { continue };
        let Ok(key) = std::str::from_utf8(&pair[..colon]) else { continue };
        headers = headers.insert(Header { key, value: Some(&pair[colon + 1..]) });
    }
    let Ok(record) = RecordHeaders::from_kafka(Some(&headers)) else { return };
    let Ok(replay) = check(&record) else { return };
    let (_, url) = replay_url(BASE, &record).expect("checked once, checked twice");
    let url = url::Url::parse(&url).expect("a replay URL parses");
    assert_eq!(url.host_str(), Some("sentry.invalid"), "{url}");
    assert_eq!(url.port(), Some(9000), "{url}");
    assert_eq!(url.path(), format!("/prefix{}", replay.path), "{url}");
    assert!(url.fragment().is_none(), "{url}");
    let rest = replay.path.strip_prefix("/api/").expect("an intake path");
    assert!(rest.ends_with("/store/") || rest.ends_with("/envelope/") || rest == "store/", "{url}");
});
