//! The Kafka side of the contract between ingest and forwarder.
//!
//! Ingest writes one record per accepted event to the project's topic; the
//! forwarder replays it to Sentry. The record layout itself (headers and
//! value) is described in `schemas/` at the repository root.

/// Version of the record layout; a header of every record carries it so that a
/// forwarder can refuse records it does not understand.
pub const CONTRACT_VERSION: u32 = 1;

/// The topic that holds `project_id`'s events: `{prefix}{project_id}`.
pub fn topic_name(prefix: &str, project_id: u64) -> String {
    format!("{prefix}{project_id}")
}

/// The project id of a topic named by [`topic_name`], or `None` for any
/// other topic (the dead-letter topic, foreign topics that share the prefix).
pub fn project_of_topic(prefix: &str, topic: &str) -> Option<u64> {
    let id = topic.strip_prefix(prefix)?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip() {
        let t = topic_name("cyclops-events-", 42);
        assert_eq!(t, "cyclops-events-42");
        assert_eq!(project_of_topic("cyclops-events-", &t), Some(42));
    }

    #[test]
    fn foreign_topics_have_no_project() {
        for t in ["cyclops-events-deadletter", "cyclops-events-", "cyclops-events-007", "other-1", "cyclops-events-1x"]
        {
            assert_eq!(project_of_topic("cyclops-events-", t), None, "{t}");
        }
    }
}
