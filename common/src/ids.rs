//! The identifiers a record carries, each its own type so that a project id
//! is never passed where a count is meant, nor an event id where a
//! fingerprint is: [`ProjectId`], [`EventId`], [`Fingerprint`].
//!
//! They are as strict as the side that makes them needs: ingest parses a
//! project id from a URL ([`ProjectId::parse_canonical`]) and makes event ids
//! canonical before it writes them; reading a record back takes what the
//! record says (the forwarder replays, it does not judge).

use std::fmt;

/// A Sentry project id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ProjectId(u64);

impl ProjectId {
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// A project id as Sentry writes one in a path or a topic name: decimal
    /// digits, no sign, no leading zero, nothing percent-encoded, and at
    /// most 19 digits (Sentry's ids are signed 64-bit, so never longer;
    /// `[[projects]]` is held to `i64::MAX` exactly).
    pub fn parse_canonical(text: &str) -> Option<Self> {
        let digits = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
        if !digits || text.starts_with('0') {
            return None;
        }
        text.parse().ok().map(Self)
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event's id; ingest writes 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// An id as given; ingest makes ids canonical before it builds one.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The flood filter's name for "the same error": events with one
/// fingerprint share one count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn new(fingerprint: impl Into<String>) -> Self {
        Self(fingerprint.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ids and fingerprints compare with their text (tests and lookups by text).
macro_rules! text_eq {
    ($t:ty) => {
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}
text_eq!(EventId);
text_eq!(Fingerprint);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_must_be_canonical() {
        assert_eq!(ProjectId::parse_canonical("42"), Some(ProjectId::new(42)));
        assert_eq!(ProjectId::parse_canonical("9999999999999999999"), Some(ProjectId::new(9_999_999_999_999_999_999)));
        for bad in ["", "0", "042", "+42", "-1", "4a", "%34%32", "10000000000000000000", "99999999999999999999"] {
            assert_eq!(ProjectId::parse_canonical(bad), None, "{bad}");
        }
    }
}
