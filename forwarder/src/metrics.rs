//! Names of the forwarder's metrics.

/// Counter of events Sentry accepted (2xx). Labels: none.
pub const DELIVERED: &str = "cyclops_forwarder_delivered_total";
/// Counter of events Sentry refused for good (400/401/403/413). Labels: `status`.
pub const REJECTED: &str = "cyclops_forwarder_rejected_total";
/// Counter of attempts that will be retried (429, 5xx, timeouts, connection errors). Labels: `reason`.
pub const RETRIED: &str = "cyclops_forwarder_retried_total";
/// Counter of records that cannot be replayed (bad headers or path). Labels: none.
pub const MALFORMED: &str = "cyclops_forwarder_malformed_total";
/// Counter of errors from the Kafka consumer. Labels: none.
pub const CONSUMER_ERRORS: &str = "cyclops_forwarder_consumer_errors_total";

pub(crate) fn describe() {
    metrics::describe_counter!(DELIVERED, "Events Sentry accepted.");
    metrics::describe_counter!(REJECTED, "Events Sentry refused for good, by HTTP status.");
    metrics::describe_counter!(RETRIED, "Delivery attempts to be retried, by reason.");
    metrics::describe_counter!(MALFORMED, "Records that cannot be replayed to Sentry.");
    metrics::describe_counter!(CONSUMER_ERRORS, "Errors reported by the Kafka consumer.");
}
