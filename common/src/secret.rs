//! [`Secret`]: a configured password, key or URL with credentials that never
//! prints.
//!
//! `Debug` and `Display` show `[redacted]`, so a secret cannot reach a log
//! line or an error message by formatting; code reaches the value through
//! [`Secret::expose`], at the one place that hands it to a client library.
//! `Serialize` writes the value: a configuration written back out (the tests
//! hand one to a service process that way) must still work, and nothing
//! serializes the configuration into a response or a log. Written here
//! rather than taken from `secrecy` because the configuration needs
//! equality (its tests compare whole configs) and serialization, which
//! `secrecy` leaves out on purpose.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints as.
pub const REDACTED: &str = "[redacted]";

/// A string that must not appear in logs, errors or `Debug` output.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the client library that needs it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// For a URL secret (`redis.url`, `ingest.sentry_database_url`): the URL
    /// with its password replaced, fit for a log line; `[redacted]` when it
    /// does not parse as a URL.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() && url.set_password(Some("redacted")).is_err() {
                    return REDACTED.to_owned();
                }
                url.to_string()
            }
            Err(_) => REDACTED.to_owned(),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// The value itself: for writing a configuration file, never for showing one.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An optional secret where `""` means absent, so that an environment
/// variable can unset a key the file sets.
pub(crate) fn empty_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()).map(Secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let secret = Secret::new("hunter2");
        let shown = [format!("{secret:?}"), format!("{secret}"), format!("{:?}", Some(&secret))];
        for s in shown {
            assert!(!s.contains("hunter2"), "{s}");
            assert!(s.contains(REDACTED), "{s}");
        }
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_url_shows_everything_but_its_password() {
        let url = Secret::new("redis://:hunter2@10.0.0.1:6380/2");
        assert_eq!(url.redacted_url(), "redis://:redacted@10.0.0.1:6380/2");
        let plain = Secret::new("postgres://sentry@db:5432/sentry");
        assert_eq!(plain.redacted_url(), "postgres://sentry@db:5432/sentry");
        assert_eq!(Secret::new("not a url hunter2").redacted_url(), REDACTED);
    }
}
