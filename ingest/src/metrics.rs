//! Names of ingest's metrics.

/// Counter of events stored in Kafka. Labels: none.
pub const ACCEPTED: &str = "cyclops_ingest_accepted_total";
/// Counter of refused submissions. Labels: `reason` (see `StoreError::reason`).
pub const REJECTED: &str = "cyclops_ingest_rejected_total";
/// Counter of Kafka topics ingest created. Labels: none.
pub const TOPICS_CREATED: &str = "cyclops_ingest_topics_created_total";

pub(crate) fn describe() {
    metrics::describe_counter!(ACCEPTED, "Events acknowledged by Kafka.");
    metrics::describe_counter!(REJECTED, "Submissions refused, by reason.");
    metrics::describe_counter!(TOPICS_CREATED, "Project topics created by this instance.");
}
