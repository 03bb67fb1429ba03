//! What a submission says about itself: decoded, framed and parsed just far
//! enough to know its event id, its fingerprint and its envelope `dsn`.
//!
//! Every submission Sentry keys by event id leaves here with one. When the
//! SDK sent none, ingest assigns it and the stored request carries it (in
//! the store JSON, the envelope header, or the beacon's `sentry_data`), so a
//! copy delivered twice is deduplicated by Sentry; such a rewritten body is
//! stored decoded.

use serde_json::Value;

use super::StoreError;
use super::decode::{self, Encoding};
use super::envelope;
use crate::flood::fingerprint::{self, EventId as ScannedId, EventView};
use cyclops_common::category;
use cyclops_common::ids::{EventId, Fingerprint};

/// Which Sentry form a submission has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON event (store endpoint, POST).
    Store,
    /// An envelope (envelope endpoint, or store with an envelope content type).
    Envelope,
    /// A browser beacon: the event in the `sentry_data` query parameter (store endpoint, GET).
    Beacon,
}

/// Size limits after decompression.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub event_bytes: usize,
    pub envelope_bytes: usize,
}

/// A submission ready to be counted and stored.
#[derive(Debug, PartialEq)]
pub struct Understood {
    /// As sent, or assigned by ingest.
    pub event_id: EventId,
    /// False for envelopes with nothing Sentry keys by event id (sessions,
    /// client reports): Sentry answers those with `{}`.
    pub has_event: bool,
    /// The flood filter's key; `None` when there is no error event to count.
    pub fingerprint: Option<Fingerprint>,
    /// The envelope header's `dsn`, checked against the sender's key and project.
    pub dsn: Option<String>,
    /// The request to store instead of the one received, when ingest had to
    /// assign the event id.
    pub rewritten: Option<Rewritten>,
    /// What the flood report shows of the event; `None` without an event.
    pub summary: Option<Summary>,
    /// Sentry's data categories of what it carries ([`category`]).
    pub categories: Vec<String>,
    /// An envelope with no items: answered, never stored (as Relay does).
    pub empty: bool,
}

/// An event's title, release and host, for the flood report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub title: String,
    pub release: Option<String>,
    pub server_name: Option<String>,
}

impl Summary {
    fn of(view: &EventView) -> Self {
        Self {
            title: view.title(),
            release: view.release.as_deref().map(str::to_owned),
            server_name: view.server_name.as_deref().map(str::to_owned),
        }
    }
}

/// A request rewritten to carry its event id; its body is not encoded.
#[derive(Debug, PartialEq)]
pub struct Rewritten {
    pub body: Vec<u8>,
    pub query: Option<String>,
}

/// A new event id: a random UUID as 32 lowercase hex characters.
pub fn new_event_id() -> EventId {
    EventId::new(uuid::Uuid::new_v4().simple().to_string())
}

fn normalise(id: &Value, bad: fn(String) -> StoreError) -> Result<EventId, StoreError> {
    let text = id.as_str().ok_or_else(|| bad(format!("event_id must be a string, got {id}")))?;
    uuid::Uuid::parse_str(text)
        .map(|u| EventId::new(u.simple().to_string()))
        .map_err(|e| bad(format!("invalid event_id {text:?}: {e}")))
}

/// Parses a JSON object; the result is always `Value::Object`.
fn json_object(bytes: &[u8], bad: fn(String) -> StoreError) -> Result<Value, StoreError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(_) => Err(bad("the event is not a JSON object".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// What ingest reads of an event payload.
struct EventFacts {
    /// The top-level `event_id` unless absent or `null`, not yet checked.
    id: Option<Value>,
    fingerprint: Fingerprint,
    summary: Summary,
    /// Its data category, by its `type`.
    category: &'static str,
    /// The parsed event, when reading it needed the full parse.
    parsed: Option<Value>,
}

/// Reads an event payload: in one pass over its text when that pass is
/// exact, else through a full `serde_json::Value` parse, which also words
/// the errors.
fn read_event(json: &[u8], bad: fn(String) -> StoreError) -> Result<EventFacts, StoreError> {
    if let Some(facts) = scan(json) {
        return Ok(facts);
    }
    let event = json_object(json, bad)?;
    let id = event.get("event_id").filter(|v| !v.is_null()).cloned();
    let view = EventView::of_value(&event);
    let (fingerprint, summary) = (Fingerprint::new(fingerprint::of_view(&view)), Summary::of(&view));
    let category = category::of_event(view.ty.as_deref());
    Ok(EventFacts { id, fingerprint, summary, category, parsed: Some(event) })
}

/// The one-pass read, or `None` for the full parse to decide (and word the
/// error): on invalid UTF-8 or JSON, and a non-string event id. It checks
/// what it skips as the full parse would (nesting, number range, escapes).
fn scan(json: &[u8]) -> Option<EventFacts> {
    let text = std::str::from_utf8(json).ok()?;
    let view = EventView::of_text(text).ok()?;
    let id = match &view.event_id {
        ScannedId::Missing => None,
        ScannedId::Text(id) => Some(Value::String(id.as_ref().to_owned())),
        ScannedId::Invalid => return None,
    };
    Some(EventFacts {
        id,
        fingerprint: Fingerprint::new(fingerprint::of_view(&view)),
        summary: Summary::of(&view),
        category: category::of_event(view.ty.as_deref()),
        parsed: None,
    })
}

/// Sets `event_id` in a JSON object.
fn insert_event_id(event: &mut Value, id: &EventId) {
    if let Value::Object(map) = event {
        map.insert("event_id".into(), Value::String(id.as_str().to_owned()));
    }
}

/// Reads a submission. `body` is the request body as received (empty for
/// beacons), `query` the raw query string. The request path decodes with
/// [`super::decode::decode_charged`] and calls [`understand_decoded`]; this
/// is both in one call, for tests and fuzzing.
pub fn understand(
    kind: Kind,
    encoding: Encoding,
    body: &[u8],
    path: &str,
    query: Option<&str>,
    limits: Limits,
) -> Result<Understood, StoreError> {
    let decoded = decode::decode(encoding, body, limits.decoded(kind))?;
    understand_decoded(kind, &decoded, path, query, limits)
}

impl Limits {
    /// The most a body of `kind` may decode to.
    pub fn decoded(self, kind: Kind) -> usize {
        match kind {
            Kind::Envelope => self.envelope_bytes,
            Kind::Store | Kind::Beacon => self.event_bytes,
        }
    }
}

/// [`understand`] of a body whose `Content-Encoding` is undone already.
pub fn understand_decoded(
    kind: Kind,
    decoded: &[u8],
    path: &str,
    query: Option<&str>,
    limits: Limits,
) -> Result<Understood, StoreError> {
    match kind {
        Kind::Store => read_store(decoded, limits),
        Kind::Envelope => read_envelope(decoded, limits),
        Kind::Beacon => read_beacon(path, query.unwrap_or_default(), limits),
    }
}

fn read_store(decoded: &[u8], limits: Limits) -> Result<Understood, StoreError> {
    let json = decode::legacy_store_body(decoded, limits.event_bytes)?;
    let facts = read_event(&json, StoreError::InvalidJson)?;
    let (fingerprint, summary) = (Some(facts.fingerprint), Some(facts.summary));
    let categories = vec![facts.category.to_owned()];
    let (event_id, rewritten) = match facts.id {
        Some(id) => (normalise(&id, StoreError::InvalidJson)?, None),
        None => {
            let id = new_event_id();
            let mut event = match facts.parsed {
                Some(event) => event,
                None => json_object(&json, StoreError::InvalidJson)?,
            };
            insert_event_id(&mut event, &id);
            let body = serde_json::to_vec(&event).map_err(|e| StoreError::InvalidJson(e.to_string()))?;
            (id, Some(Rewritten { body, query: None }))
        }
    };
    Ok(Understood { event_id, has_event: true, fingerprint, dsn: None, rewritten, summary, categories, empty: false })
}

fn read_envelope(decoded: &[u8], limits: Limits) -> Result<Understood, StoreError> {
    let parsed = envelope::parse(decoded)?;
    let bad = StoreError::InvalidEnvelope;
    let event = match parsed.event() {
        Some(item) if item.payload.len() > limits.event_bytes => {
            return Err(StoreError::TooLarge { limit: limits.event_bytes });
        }
        Some(item) => Some(read_event(item.payload, |e| StoreError::InvalidEnvelope(format!("event item: {e}")))?),
        None => None,
    };
    let mut categories = Vec::new();
    for item in &parsed.items {
        match (item.kind.as_str(), &event) {
            ("event", Some(event)) => category::add(&mut categories, event.category),
            (kind, _) => category::of_item(kind).into_iter().for_each(|c| category::add(&mut categories, c)),
        }
    }
    let dsn = parsed.header_str("dsn").map(str::to_owned);
    // Sentry answers with the id when the header has one, whatever the items.
    let has_event = parsed.needs_event_id() || parsed.header.get("event_id").is_some_and(|v| !v.is_null());
    // The header's id wins over the event item's, as in Sentry.
    let given =
        match (parsed.header.get("event_id").filter(|v| !v.is_null()), event.as_ref().and_then(|e| e.id.as_ref())) {
            (Some(id), _) | (None, Some(id)) => Some(normalise(id, bad)?),
            _ => None,
        };
    let (fingerprint, summary) = event.map(|e| (e.fingerprint, e.summary)).unzip();
    let (event_id, rewritten) = match given {
        Some(id) => (id, None),
        // Nothing keyed by event id: the id only keys the Kafka record.
        None if !has_event => (new_event_id(), None),
        None => {
            let id = new_event_id();
            let mut header = parsed.header.clone();
            header.insert("event_id".into(), Value::String(id.as_str().to_owned()));
            let body = envelope::with_header(decoded, parsed.items_start, &header);
            (id, Some(Rewritten { body, query: None }))
        }
    };
    let empty = parsed.items.is_empty();
    Ok(Understood { event_id, has_event, fingerprint, dsn, rewritten, summary, categories, empty })
}

fn read_beacon(path: &str, query: &str, limits: Limits) -> Result<Understood, StoreError> {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let data = params
        .iter()
        .find(|(k, _)| k == "sentry_data")
        .map(|(_, v)| v.as_bytes())
        .ok_or_else(|| StoreError::InvalidJson("missing sentry_data query parameter".into()))?;
    let json = decode::legacy_store_body(data, limits.event_bytes)?;
    let mut event = json_object(&json, StoreError::InvalidJson)?;
    let fingerprint = Some(Fingerprint::new(fingerprint::of_beacon(path, query, Some(&event))));
    let view = EventView::of_value(&event);
    let (summary, categories) = (Some(Summary::of(&view)), vec![category::of_event(view.ty.as_deref()).to_owned()]);
    let (event_id, rewritten) = match event.get("event_id").filter(|v| !v.is_null()) {
        Some(id) => (normalise(id, StoreError::InvalidJson)?, None),
        None => {
            let id = new_event_id();
            insert_event_id(&mut event, &id);
            let data = event.to_string();
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &params {
                query.append_pair(k, if k == "sentry_data" { &data } else { v });
            }
            (id, Some(Rewritten { body: Vec::new(), query: Some(query.finish()) }))
        }
    };
    Ok(Understood { event_id, has_event: true, fingerprint, dsn: None, rewritten, summary, categories, empty: false })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LIMITS: Limits = Limits { event_bytes: 4096, envelope_bytes: 65536 };
    const ID: &str = "9ec79c33ec9942ab8353589fcb2e04dc";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn a_store_event_keeps_its_id_and_body() {
        let body = format!(r#"{{"event_id":"{}","message":"x"}}"#, ID.to_uppercase());
        let u =
            understand(Kind::Store, Encoding::Identity, body.as_bytes(), "/api/1/store/", None, LIMITS).expect("ok");
        assert_eq!(u.event_id, ID);
        assert!(u.has_event && u.rewritten.is_none());
        assert!(u.fingerprint.expect("fingerprint").as_str().starts_with("message:"));
    }

    #[test]
    fn a_store_event_without_id_is_given_one_in_the_stored_body() {
        let body = gzip(br#"{"message":"x"}"#);
        let u = understand(Kind::Store, Encoding::Gzip, &body, "/api/1/store/", None, LIMITS).expect("ok");
        let rewritten = u.rewritten.expect("rewritten");
        let stored: Value = serde_json::from_slice(&rewritten.body).expect("plain JSON");
        assert_eq!(stored["event_id"], u.event_id.as_str());
        assert_eq!(stored["message"], "x");
    }

    #[test]
    fn envelopes_take_the_header_id_then_the_event_id() {
        let with_header =
            format!("{{\"event_id\":\"{ID}\"}}\n{{\"type\":\"event\"}}\n{{\"event_id\":\"{}\"}}\n", "1".repeat(32));
        let u = understand(Kind::Envelope, Encoding::Identity, with_header.as_bytes(), "/", None, LIMITS).expect("ok");
        assert_eq!(u.event_id, ID);
        let in_item = format!("{{}}\n{{\"type\":\"event\"}}\n{{\"event_id\":\"{ID}\",\"message\":\"m\"}}\n");
        let u = understand(Kind::Envelope, Encoding::Identity, in_item.as_bytes(), "/", None, LIMITS).expect("ok");
        assert_eq!((u.event_id.as_str(), u.rewritten.is_none()), (ID, true));
    }

    #[test]
    fn an_envelope_event_floods_with_the_same_event_sent_to_store() {
        let event = r#"{"exception":{"values":[{"type":"KeyError","value":"'id'","stacktrace":{"frames":[{"filename":"app.py","function":"view","lineno":12}]}}]},"timestamp":1}"#;
        let store = understand(Kind::Store, Encoding::Identity, event.as_bytes(), "/api/1/store/", None, LIMITS)
            .expect("store");
        let later = event.replace(r#""timestamp":1"#, r#""timestamp":2"#);
        let envelope = format!("{{\"event_id\":\"{ID}\"}}\n{{\"type\":\"event\"}}\n{later}\n");
        let enveloped =
            understand(Kind::Envelope, Encoding::Identity, envelope.as_bytes(), "/", None, LIMITS).expect("envelope");
        let fingerprint = store.fingerprint.expect("a store event has one");
        assert!(fingerprint.as_str().starts_with("exc-frames:"), "{fingerprint}");
        assert_eq!(enveloped.fingerprint.as_ref(), Some(&fingerprint), "same error, same fingerprint");
        let other = envelope.replace("lineno\":12", "lineno\":13");
        let moved = understand(Kind::Envelope, Encoding::Identity, other.as_bytes(), "/", None, LIMITS).expect("ok");
        assert_ne!(moved.fingerprint.as_ref(), Some(&fingerprint), "another line, another error");
        let no_event = format!("{{\"event_id\":\"{ID}\"}}\n{{\"type\":\"session\"}}\n{{}}\n");
        let session =
            understand(Kind::Envelope, Encoding::Identity, no_event.as_bytes(), "/", None, LIMITS).expect("ok");
        assert_eq!(session.fingerprint, None, "nothing to flood-filter without an event");
    }

    #[test]
    fn an_envelope_event_without_id_gets_one_in_its_header() {
        let body = gzip(b"{\"dsn\":\"https://k@h/1\"}\n{\"type\":\"event\"}\n{\"message\":\"m\"}\n");
        let u = understand(Kind::Envelope, Encoding::Gzip, &body, "/", None, LIMITS).expect("ok");
        assert_eq!(u.dsn.as_deref(), Some("https://k@h/1"));
        let stored = u.rewritten.expect("rewritten").body;
        let reparsed = envelope::parse(&stored).expect("still an envelope");
        assert_eq!(reparsed.header_str("event_id"), Some(u.event_id.as_str()));
        assert_eq!(reparsed.event().expect("event").payload, br#"{"message":"m"}"#);
    }

    #[test]
    fn the_one_pass_read_agrees_with_the_full_parse() {
        let body = format!(
            r#"{{"event_id":"{ID}","exception":{{"values":[{{"type":"E","stacktrace":{{"frames":[{{"filename":"a.py","lineno":3,"vars":{{"x":[1,{{}}]}}}}]}}}}]}}}}"#
        );
        let fast = scan(body.as_bytes()).expect("the one-pass read applies");
        let full: Value = serde_json::from_str(&body).expect("json");
        assert!(fast.parsed.is_none());
        assert_eq!(fast.fingerprint, fingerprint::of_event(&full));
        assert_eq!(fast.id.as_ref(), full.get("event_id"));
        assert!(scan(br#"{"event_id":7}"#).is_none(), "a bad id is worded by the full parse");
    }

    #[test]
    fn what_the_one_pass_read_skips_is_still_checked_as_the_full_parse_checks_it() {
        // With an event id, so that the one-pass read would otherwise take them.
        let lone_surrogate = format!(r#"{{"event_id":"{ID}","extra":{{"note":"\ud800"}}}}"#).into_bytes();
        let mut bad_utf8 = format!(r#"{{"event_id":"{ID}","extra":"?"}}"#).into_bytes();
        let at = bad_utf8.iter().position(|&b| b == b'?').expect("placeholder");
        bad_utf8[at] = 0xff;
        let huge_number = format!(r#"{{"event_id":"{ID}","extra":{{"n":1e400}}}}"#).into_bytes();
        let too_deep = format!(r#"{{"event_id":"{ID}","extra":{}{}}}"#, "[".repeat(200), "]".repeat(200)).into_bytes();
        for body in [&lone_surrogate, &bad_utf8, &huge_number, &too_deep] {
            let err = understand(Kind::Store, Encoding::Identity, body, "/", None, LIMITS).expect_err("rejected");
            assert!(matches!(err, StoreError::InvalidJson(_)), "{err:?}");
        }
        let pair = br#"{"message":"\ud83d\ude00"}"#;
        assert!(
            understand(Kind::Store, Encoding::Identity, pair, "/", None, LIMITS).is_ok(),
            "a surrogate pair is fine"
        );
    }

    #[test]
    fn an_envelope_without_events_has_no_event_and_no_fingerprint() {
        let body = b"{}\n{\"type\":\"session\"}\n{\"sid\":\"x\"}\n";
        let u = understand(Kind::Envelope, Encoding::Identity, body, "/", None, LIMITS).expect("ok");
        assert!(!u.has_event && u.fingerprint.is_none() && u.rewritten.is_none());
        assert_eq!(u.event_id.as_str().len(), 32);
    }

    #[test]
    fn an_envelope_without_items_is_empty_and_keeps_its_id() {
        let id = "9ec79c33ec9942ab8353589fcb2e04dc";
        let body = format!("{{\"event_id\":\"{id}\"}}\n");
        let u = understand(Kind::Envelope, Encoding::Identity, body.as_bytes(), "/", None, LIMITS).expect("ok");
        assert!(u.empty && u.has_event && u.event_id == id && u.rewritten.is_none(), "{u:?}");
        let bare = understand(Kind::Envelope, Encoding::Identity, b"{}", "/", None, LIMITS).expect("ok");
        assert!(bare.empty && !bare.has_event);
        let session = b"{}\n{\"type\":\"session\"}\n{}\n";
        assert!(!understand(Kind::Envelope, Encoding::Identity, session, "/", None, LIMITS).expect("ok").empty);
    }

    #[test]
    fn an_oversized_event_item_is_413() {
        let big = format!("{{}}\n{{\"type\":\"event\"}}\n{{\"message\":\"{}\"}}\n", "x".repeat(5000));
        let err =
            understand(Kind::Envelope, Encoding::Identity, big.as_bytes(), "/", None, LIMITS).expect_err("too big");
        assert!(matches!(err, StoreError::TooLarge { limit: 4096 }), "{err:?}");
    }

    #[test]
    fn bad_payloads_are_400() {
        let cases: [(Kind, &[u8]); 5] = [
            (Kind::Store, b"{nope"),
            (Kind::Store, b"[1,2]"),
            (Kind::Store, br#"{"event_id":"not-a-uuid"}"#),
            (Kind::Envelope, b"{}\n{\"type\":\"event\"}\n{broken\n"),
            (Kind::Envelope, b"{\"event_id\":42}\n"),
        ];
        for (kind, body) in cases {
            let err = understand(kind, Encoding::Identity, body, "/", None, LIMITS).expect_err("bad");
            let is_400 = matches!(
                err,
                StoreError::InvalidJson(_) | StoreError::InvalidEnvelope(_) | StoreError::InvalidCompression(_)
            );
            assert!(is_400, "{err:?}");
        }
    }

    #[test]
    fn beacons_read_sentry_data_and_carry_an_assigned_id_in_it() {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sentry_key", "k")
            .append_pair("sentry_data", r#"{"message":"from a browser"}"#)
            .finish();
        let u = understand(Kind::Beacon, Encoding::Identity, b"", "/api/1/store/", Some(&query), LIMITS).expect("ok");
        let rewritten_query = u.rewritten.expect("rewritten").query.expect("query");
        let data: String = url::form_urlencoded::parse(rewritten_query.as_bytes())
            .find(|(k, _)| k == "sentry_data")
            .map(|(_, v)| v.into_owned())
            .expect("sentry_data kept");
        let event: Value = serde_json::from_str(&data).expect("json");
        assert_eq!(event["event_id"], u.event_id.as_str());
        assert!(rewritten_query.contains("sentry_key=k"));
        let missing = understand(Kind::Beacon, Encoding::Identity, b"", "/", Some("sentry_key=k"), LIMITS);
        assert!(matches!(missing, Err(StoreError::InvalidJson(_))));
    }
}
