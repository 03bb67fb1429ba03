//! Sentry envelopes: a JSON header line, then items, each a JSON header line
//! and a payload that is either `length` bytes long or runs to the next
//! newline. Parsed only as far as ingest needs (framing, the event item, the
//! header's `event_id` and `dsn`); unknown item types are kept, since the
//! body is stored as received.

use serde_json::{Map, Value};

use super::StoreError;

/// One item: its type, its header, and where its payload is.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    pub kind: String,
    pub payload: &'a [u8],
}

/// A parsed envelope, borrowing its payloads from the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    pub header: Map<String, Value>,
    /// The header line as sent, and where the items start.
    pub items_start: usize,
    pub items: Vec<Item<'a>>,
}

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidEnvelope(reason.into())
}

/// The line starting at `pos`, without its newline, and where the next one starts.
fn line(body: &[u8], pos: usize) -> (&[u8], usize) {
    match body[pos..].iter().position(|b| *b == b'\n') {
        Some(n) => (&body[pos..pos + n], pos + n + 1),
        None => (&body[pos..], body.len()),
    }
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, StoreError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(format!("{what} is not a JSON object"))),
        Err(e) => Err(invalid(format!("{what}: {e}"))),
    }
}

/// The `dsn` of an envelope's header line (with or without its newline);
/// `None` when the line is not a JSON object with a string `dsn`.
pub fn header_dsn(header_line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Header {
        dsn: Option<String>,
    }
    let (line, _) = line(header_line, 0);
    serde_json::from_slice::<Header>(line).ok()?.dsn
}

/// Parses the framing of `body`; every item must be well formed.
pub fn parse(body: &[u8]) -> Result<Envelope<'_>, StoreError> {
    let (header_line, mut pos) = line(body, 0);
    let header = json_object(header_line, "envelope header")?;
    let items_start = pos;
    let mut items = Vec::new();
    while pos < body.len() {
        let (item_line, next) = line(body, pos);
        if item_line.is_empty() {
            // Trailing newlines close the envelope; an empty line before more data is an error.
            if body[pos..].iter().all(|b| *b == b'\n') {
                break;
            }
            return Err(invalid(format!("empty item header at byte {pos}")));
        }
        let item_header = json_object(item_line, "item header")?;
        let kind = match item_header.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => return Err(invalid(format!("item header without a type at byte {pos}"))),
        };
        pos = next;
        let payload = match item_header.get("length") {
            Some(length) => {
                let length = length
                    .as_u64()
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| invalid(format!("{kind} item has an invalid length")))?;
                let end = pos.checked_add(length).filter(|end| *end <= body.len()).ok_or_else(|| {
                    invalid(format!("{kind} item is {length} bytes but only {} remain", body.len() - pos))
                })?;
                let payload = &body[pos..end];
                match body.get(end) {
                    None => pos = end,
                    Some(b'\n') => pos = end + 1,
                    Some(_) => return Err(invalid(format!("{kind} item payload is not followed by a newline"))),
                }
                payload
            }
            None => {
                let (payload, next) = line(body, pos);
                pos = next;
                payload
            }
        };
        items.push(Item { kind, payload });
    }
    Ok(Envelope { header, items_start, items })
}

impl Envelope<'_> {
    /// The error event carried by this envelope, if any.
    pub fn event(&self) -> Option<&Item<'_>> {
        self.items.iter().find(|i| i.kind == "event")
    }

    /// Whether the envelope carries anything that Sentry keys by event id.
    pub fn needs_event_id(&self) -> bool {
        self.items.iter().any(|i| matches!(i.kind.as_str(), "event" | "transaction" | "attachment" | "user_report"))
    }

    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }
}

/// `body` with its envelope header replaced by `header` (the items are kept byte for byte).
pub fn with_header(body: &[u8], items_start: usize, header: &Map<String, Value>) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out.extend_from_slice(&body[items_start.min(body.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_newline_framed_items_and_keeps_unknown_types() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n\
{\"type\":\"attachment\",\"length\":10}\nhelloworld\n\
{\"type\":\"event\"}\n{\"message\":\"x\"}\n\
{\"type\":\"future_thing\",\"length\":3}\na\nb\n";
        let envelope = parse(body).expect("valid");
        let kinds: Vec<&str> = envelope.items.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["attachment", "event", "future_thing"]);
        assert_eq!(envelope.items[0].payload, b"helloworld");
        assert_eq!(envelope.event().expect("event").payload, br#"{"message":"x"}"#);
        assert_eq!(envelope.items[2].payload, b"a\nb", "length wins over newlines");
        assert_eq!(envelope.header_str("event_id"), Some("9ec79c33ec9942ab8353589fcb2e04dc"));
    }

    #[test]
    fn header_only_and_trailing_newlines_are_fine() {
        assert!(parse(b"{}").expect("header only").items.is_empty());
        assert_eq!(parse(b"{}\n{\"type\":\"session\"}\n{}\n\n").expect("valid").items.len(), 1);
        let last = parse(b"{}\n{\"type\":\"event\",\"length\":2}\n{}").expect("payload to EOF");
        assert_eq!(last.items[0].payload, b"{}");
    }

    #[test]
    fn the_dsn_comes_from_the_header_line_alone() {
        assert_eq!(header_dsn(b"{\"dsn\":\"https://k@h/1\",\"sdk\":{}}\n"), Some("https://k@h/1".into()));
        assert_eq!(header_dsn(b"{\"dsn\":\"https://k@h/1\"}"), Some("https://k@h/1".into()));
        assert_eq!(header_dsn(b"{\"event_id\":null}\n"), None);
        assert_eq!(header_dsn(b"{\"dsn\":7}\n"), None);
        assert_eq!(header_dsn(b"not json\n"), None);
    }

    #[test]
    fn broken_framing_is_invalid() {
        for body in [
            &b"not json\n"[..],
            b"[1]\n",
            b"{}\n{\"length\":2}\nab\n",
            b"{}\n{\"type\":\"event\",\"length\":50}\nshort\n",
            b"{}\n{\"type\":\"event\",\"length\":2}\nabc\n",
            b"{}\n{\"type\":\"event\",\"length\":-1}\n\n",
            b"{}\n\n{\"type\":\"event\"}\n{}\n",
            b"{}\n{not json}\n",
        ] {
            assert!(matches!(parse(body), Err(StoreError::InvalidEnvelope(_))), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn replacing_the_header_keeps_items_byte_for_byte() {
        let body = b"{\"dsn\":\"x\"}\n{\"type\":\"event\",\"length\":2}\n{}\n";
        let envelope = parse(body).expect("valid");
        let mut header = envelope.header.clone();
        header.insert("event_id".into(), Value::String("ab".into()));
        let rewritten = with_header(body, envelope.items_start, &header);
        assert!(rewritten.ends_with(b"\n{\"type\":\"event\",\"length\":2}\n{}\n"));
        assert_eq!(parse(&rewritten).expect("valid").header_str("event_id"), Some("ab"));
    }
}
