//! Reading the event id (and, for envelopes, the `dsn`) from a body without
//! parsing more than needed.

use serde::Deserialize;

use super::StoreError;

/// What the body says about itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Normalised to 32 lowercase hex characters.
    pub event_id: Option<String>,
    /// The envelope header's DSN, when present.
    pub dsn: Option<String>,
}

#[derive(Deserialize)]
struct Minimal {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    dsn: Option<String>,
}

/// A new event id: a random UUID as 32 lowercase hex characters.
pub fn new() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn normalise(id: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(id).map(|u| u.simple().to_string()).map_err(|e| format!("invalid event_id {id:?}: {e}"))
}

/// A store body: JSON with an optional `event_id`. Bodies that are not JSON
/// (old clients' base64 of zlib) are stored as they came.
pub fn from_store_body(body: &[u8]) -> Result<Found, StoreError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(Found::default());
    }
    let minimal: Minimal = serde_json::from_slice(body).map_err(|e| StoreError::InvalidJson(e.to_string()))?;
    let event_id = minimal.event_id.as_deref().map(normalise).transpose().map_err(StoreError::InvalidJson)?;
    Ok(Found { event_id, dsn: None })
}

/// An envelope: its first line is a JSON header with optional `event_id` and `dsn`.
pub fn from_envelope(body: &[u8]) -> Result<Found, StoreError> {
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let header: Minimal = serde_json::from_slice(first).map_err(|e| StoreError::InvalidEnvelope(e.to_string()))?;
    let event_id = header.event_id.as_deref().map(normalise).transpose().map_err(StoreError::InvalidEnvelope)?;
    Ok(Found { event_id, dsn: header.dsn })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_bodies() {
        let found =
            from_store_body(br#"{"event_id":"FC6D8C0C-43FC-4630-AD85-0D9B4B1C2F3A","message":"x"}"#).expect("ok");
        assert_eq!(found.event_id.as_deref(), Some("fc6d8c0c43fc4630ad850d9b4b1c2f3a"));
        assert_eq!(from_store_body(br#"{"message":"x"}"#).expect("ok").event_id, None);
        assert_eq!(from_store_body(b"eJzLSM3JyVcozy/KSQEAGgQEXQ==").expect("legacy"), Found::default());
        assert!(matches!(from_store_body(b"{not json"), Err(StoreError::InvalidJson(_))));
        assert!(matches!(from_store_body(br#"{"event_id":"nope"}"#), Err(StoreError::InvalidJson(_))));
    }

    #[test]
    fn envelope_headers() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"dsn\":\"https://k@h/1\"}\n{\"type\":\"event\"}\n{}\n";
        let found = from_envelope(body).expect("ok");
        assert_eq!(found.event_id.as_deref(), Some("9ec79c33ec9942ab8353589fcb2e04dc"));
        assert_eq!(found.dsn.as_deref(), Some("https://k@h/1"));
        assert_eq!(from_envelope(b"{}\n{\"type\":\"session\"}\n{}").expect("ok"), Found::default());
        assert!(matches!(from_envelope(b"garbage\n"), Err(StoreError::InvalidEnvelope(_))));
    }
}
