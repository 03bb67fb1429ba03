//! The Kafka side of the contract between ingest and forwarder.
//!
//! Ingest writes one record per accepted event to its project's topic
//! (`{kafka.topic_prefix}{project_id}`): the key is the event id, the value is
//! the request body exactly as received (compressed stays compressed), and
//! the headers below carry what the forwarder needs to replay the request
//! and what operators need to account for it. The forwarder reads them back
//! with [`RecordHeaders::from_kafka`]; a record whose contract version it does
//! not know is refused, not guessed at.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::ids::{EventId, Fingerprint, ProjectId};

/// Version of the record layout ingest writes, carried by every record.
/// Version 2 added `cyclops-fingerprint` and `cyclops-categories`.
pub const CONTRACT_VERSION: u32 = 2;

/// The oldest version this build still reads: a version-1 record (written by
/// an older ingest) reads with no fingerprint and unknown categories.
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// Header names: fixed, lowercase, part of the contract.
pub mod header {
    /// Contract version (decimal).
    pub const CONTRACT: &str = "cyclops-contract";
    /// HTTP method of the original request.
    pub const METHOD: &str = "cyclops-method";
    /// Path of the original request, e.g. `/api/1/envelope/`.
    pub const PATH: &str = "cyclops-path";
    /// Raw query string of the original request, without `?`; absent when empty.
    pub const QUERY: &str = "cyclops-query";
    /// `Content-Type` of the original request; absent when it had none.
    pub const CONTENT_TYPE: &str = "cyclops-content-type";
    /// `Content-Encoding` of the original request (the value is still encoded); absent when none.
    pub const CONTENT_ENCODING: &str = "cyclops-content-encoding";
    /// The `X-Sentry-Auth` value to send upstream; absent when the auth travels in the query or the body.
    pub const AUTH: &str = "cyclops-auth";
    /// Event id, 32 lowercase hex characters.
    pub const EVENT_ID: &str = "cyclops-event-id";
    /// Project id (decimal).
    pub const PROJECT_ID: &str = "cyclops-project-id";
    /// When ingest received the request, Unix milliseconds (decimal).
    pub const RECEIVED_AT_MS: &str = "cyclops-received-at-ms";
    /// The client's IP address as ingest saw it.
    pub const CLIENT_IP: &str = "cyclops-client-ip";
    /// `User-Agent` of the original request; absent when it had none.
    pub const USER_AGENT: &str = "cyclops-user-agent";
    /// The flood filter's fingerprint (version 2) of the event the record
    /// carries (an error or a transaction); absent when it carries none (a
    /// session update, a client report).
    pub const FINGERPRINT: &str = "cyclops-fingerprint";
    /// Sentry's data categories of what the record carries (version 2),
    /// comma-separated, e.g. `error,attachment`: what a rate limit of Sentry
    /// (`X-Sentry-Rate-Limits`) is matched against.
    pub const CATEGORIES: &str = "cyclops-categories";
}

/// The topic that holds `project_id`'s events: `{prefix}{project_id}`.
pub fn topic_name(prefix: &str, project_id: ProjectId) -> String {
    format!("{prefix}{project_id}")
}

/// The project id of a topic named by [`topic_name`], or `None` for any
/// other topic (a dead-letter topic, foreign topics that share the prefix).
pub fn project_of_topic(prefix: &str, topic: &str) -> Option<ProjectId> {
    ProjectId::parse_canonical(topic.strip_prefix(prefix)?)
}

/// The headers of one record, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeaders {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub auth: Option<String>,
    pub event_id: EventId,
    pub project_id: ProjectId,
    pub received_at_ms: u64,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub fingerprint: Option<Fingerprint>,
    /// Sentry's data categories of the record's items; empty when unknown
    /// (a version-1 record).
    pub categories: Vec<String>,
}

/// Why a record's headers cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("header {name} has an invalid value {value:?}")]
    Invalid { name: &'static str, value: String },
    #[error(
        "record contract version {0} is not supported (this build reads {OLDEST_READABLE_VERSION} to {CONTRACT_VERSION})"
    )]
    UnsupportedVersion(u32),
}

impl RecordHeaders {
    /// The Kafka headers for this record.
    pub fn to_kafka(&self) -> OwnedHeaders {
        let contract = CONTRACT_VERSION.to_string();
        let project = self.project_id.to_string();
        let received = self.received_at_ms.to_string();
        let categories = (!self.categories.is_empty()).then(|| self.categories.join(","));
        let mut pairs: Vec<(&str, &str)> = vec![
            (header::CONTRACT, &contract),
            (header::METHOD, &self.method),
            (header::PATH, &self.path),
            (header::EVENT_ID, self.event_id.as_str()),
            (header::PROJECT_ID, &project),
            (header::RECEIVED_AT_MS, &received),
        ];
        let optional = [
            (header::QUERY, self.query.as_deref()),
            (header::CONTENT_TYPE, self.content_type.as_deref()),
            (header::CONTENT_ENCODING, self.content_encoding.as_deref()),
            (header::AUTH, self.auth.as_deref()),
            (header::CLIENT_IP, self.client_ip.as_deref()),
            (header::USER_AGENT, self.user_agent.as_deref()),
            (header::FINGERPRINT, self.fingerprint.as_ref().map(Fingerprint::as_str)),
            (header::CATEGORIES, categories.as_deref()),
        ];
        pairs.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        pairs.into_iter().fold(OwnedHeaders::new_with_capacity(14), |h, (key, value)| {
            h.insert(Header { key, value: Some(value.as_bytes()) })
        })
    }

    /// Reads the headers of a consumed record.
    pub fn from_kafka(headers: Option<&impl Headers>) -> Result<Self, RecordError> {
        let get = |name: &'static str| -> Result<Option<String>, RecordError> {
            let Some(headers) = headers else { return Ok(None) };
            match headers.iter().find(|h| h.key == name).and_then(|h| h.value) {
                None => Ok(None),
                Some(bytes) => String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| RecordError::NotUtf8(name)),
            }
        };
        let required = |name: &'static str| get(name)?.ok_or(RecordError::Missing(name));
        let number = |name: &'static str| -> Result<u64, RecordError> {
            let value = required(name)?;
            value.parse().map_err(|_| RecordError::Invalid { name, value })
        };
        let version = number(header::CONTRACT)?;
        if !(u64::from(OLDEST_READABLE_VERSION)..=u64::from(CONTRACT_VERSION)).contains(&version) {
            return Err(RecordError::UnsupportedVersion(u32::try_from(version).unwrap_or(u32::MAX)));
        }
        Ok(Self {
            method: required(header::METHOD)?,
            path: required(header::PATH)?,
            query: get(header::QUERY)?,
            content_type: get(header::CONTENT_TYPE)?,
            content_encoding: get(header::CONTENT_ENCODING)?,
            auth: get(header::AUTH)?,
            event_id: EventId::new(required(header::EVENT_ID)?),
            project_id: ProjectId::new(number(header::PROJECT_ID)?),
            received_at_ms: number(header::RECEIVED_AT_MS)?,
            client_ip: get(header::CLIENT_IP)?,
            user_agent: get(header::USER_AGENT)?,
            // Not needed to replay the record: unreadable is as good as absent.
            fingerprint: get(header::FINGERPRINT).ok().flatten().map(Fingerprint::new),
            categories: get(header::CATEGORIES)?
                .map(|c| c.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordHeaders {
        RecordHeaders {
            method: "POST".into(),
            path: "/api/7/envelope/".into(),
            query: Some("sentry_key=abc&sentry_version=7".into()),
            content_type: Some("application/x-sentry-envelope".into()),
            content_encoding: Some("gzip".into()),
            auth: None,
            event_id: EventId::new("0123456789abcdef0123456789abcdef"),
            project_id: ProjectId::new(7),
            received_at_ms: 1_700_000_000_000,
            client_ip: Some("10.0.0.1".into()),
            user_agent: None,
            fingerprint: Some(Fingerprint::new("0f1e2d3c4b5a69788796a5b4c3d2e1f0")),
            categories: vec!["error".into(), "attachment".into()],
        }
    }

    #[test]
    fn headers_round_trip_through_kafka_headers() {
        let headers = sample();
        assert_eq!(RecordHeaders::from_kafka(Some(&headers.to_kafka())), Ok(headers));
    }

    #[test]
    fn a_missing_required_header_is_named() {
        let bare = OwnedHeaders::new().insert(Header { key: header::CONTRACT, value: Some("1") });
        assert_eq!(RecordHeaders::from_kafka(Some(&bare)), Err(RecordError::Missing(header::METHOD)));
        assert_eq!(RecordHeaders::from_kafka(None::<&OwnedHeaders>), Err(RecordError::Missing(header::CONTRACT)));
    }

    #[test]
    fn an_unknown_contract_version_is_refused() {
        let future = OwnedHeaders::new().insert(Header { key: header::CONTRACT, value: Some("3") });
        assert_eq!(RecordHeaders::from_kafka(Some(&future)), Err(RecordError::UnsupportedVersion(3)));
    }

    #[test]
    fn a_version_1_record_reads_with_unknown_categories() {
        let v1 = [
            (header::CONTRACT, "1"),
            (header::METHOD, "POST"),
            (header::PATH, "/api/7/store/"),
            (header::EVENT_ID, "0123456789abcdef0123456789abcdef"),
            (header::PROJECT_ID, "7"),
            (header::RECEIVED_AT_MS, "1700000000000"),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }));
        let read = RecordHeaders::from_kafka(Some(&v1)).expect("version 1 is read");
        assert_eq!((read.fingerprint, read.categories), (None, Vec::<String>::new()));
    }

    #[test]
    fn topic_names_round_trip() {
        let t = topic_name("cyclops-events-", ProjectId::new(42));
        assert_eq!(t, "cyclops-events-42");
        assert_eq!(project_of_topic("cyclops-events-", &t), Some(ProjectId::new(42)));
    }

    #[test]
    fn foreign_topics_have_no_project() {
        for t in ["cyclops-events-deadletter", "cyclops-events-", "cyclops-events-007", "other-1", "cyclops-events-1x"]
        {
            assert_eq!(project_of_topic("cyclops-events-", t), None, "{t}");
        }
    }
}
