//! Names of the forwarder's metrics.

cyclops_common::metric_names! {
    /// Counter of events Sentry accepted (2xx). Labels: `project`.
    DELIVERED = "cyclops_forwarder_delivered_total";
    /// Counter of events Sentry refused for good (`forwarder.dead_letter_statuses`). Labels: `status`.
    REJECTED = "cyclops_forwarder_rejected_total";
    /// Counter of attempts to be retried (5xx, timeouts, connection errors, bare 429s). Labels: `reason`.
    RETRIED = "cyclops_forwarder_retried_total";
    /// Counter of rate-limit holds Sentry imposed. Labels: `project`, `kind` (`quota`, `retry_after`).
    HELD = "cyclops_forwarder_held_total";
    /// Gauge of projects held by a rate limit now.
    HOLDS_ACTIVE = "cyclops_forwarder_holds_active";
    PARKED = "cyclops_forwarder_parked_total";
    /// Counter of records written to the dead-letter topic. Labels: none.
    DEAD_LETTERED = "cyclops_forwarder_dead_lettered_total";
    /// Counter of records that break the replay contract (dead-lettered, never
    /// sent). Labels: `reason` (`path`, `project`, `method`, `auth`,
    /// `control_character`, `encoding`).
    MALFORMED = "cyclops_forwarder_malformed_total";
    /// Counter of errors from the Kafka consumer. Labels: none.
    CONSUMER_ERRORS = "cyclops_forwarder_consumer_errors_total";
    /// Counter of records read that were already done (delivered before a restart or rebalance).
    SKIPPED_DONE = "cyclops_forwarder_skipped_done_total";
    /// Counter of rebalance events. Labels: `kind` (`assign`, `revoke`, `lost`).
    REBALANCES = "cyclops_forwarder_rebalances_total";
    /// Counter of offset commits. Labels: `result` (`ok`, `error`).
    COMMITS = "cyclops_forwarder_commits_total";
    /// Histogram of Sentry's response times, seconds. Labels: none.
    UPSTREAM_SECONDS = "cyclops_forwarder_upstream_seconds";
    /// Gauge of requests allowed in flight (the adaptive limit; 1 with cyclops pacing).
    CONCURRENCY_LIMIT = "cyclops_forwarder_concurrency_limit";
    /// Gauge of requests in flight.
    IN_FLIGHT = "cyclops_forwarder_in_flight";
    /// Gauge of the outage breaker: 0 closed, 1 probing, 2 open.
    BREAKER_STATE = "cyclops_forwarder_breaker_state";
    /// Counter of times the outage breaker opened.
    BREAKER_OPENINGS = "cyclops_forwarder_breaker_openings_total";
    /// Gauge of events not delivered yet per owned partition. Labels: `topic`, `partition`.
    LAG_EVENTS = "cyclops_forwarder_lag_events";
    /// Gauge of the age of the oldest event read and not delivered, seconds. Labels: `topic`, `partition`.
    LAG_SECONDS = "cyclops_forwarder_lag_seconds";
    /// Gauge of events read ahead and waiting in memory.
    BUFFERED = "cyclops_forwarder_buffered_events";
    /// Gauge of partitions this instance owns.
    ASSIGNED_PARTITIONS = "cyclops_forwarder_assigned_partitions";
}

pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(DELIVERED, "Events Sentry accepted, by project.");
    describe_counter!(REJECTED, "Events Sentry refused for good, by HTTP status.");
    describe_counter!(RETRIED, "Delivery attempts to be retried, by reason.");
    describe_counter!(HELD, "Rate-limit holds imposed by Sentry, by project and kind (quota, retry_after).");
    describe_counter!(PARKED, "Events put back unsent because Sentry holds one of their categories, by project.");
    describe_gauge!(HOLDS_ACTIVE, "Rate-limit holds in force now: whole projects and single categories of a project.");
    describe_counter!(DEAD_LETTERED, "Records written to the dead-letter topic.");
    describe_counter!(MALFORMED, "Records that break the replay contract, dead-lettered unsent.");
    describe_counter!(CONSUMER_ERRORS, "Errors reported by the Kafka consumer.");
    describe_counter!(SKIPPED_DONE, "Records read that were delivered before (restart, rebalance).");
    describe_counter!(REBALANCES, "Consumer-group rebalance events, by kind.");
    describe_counter!(COMMITS, "Offset commits, by result.");
    describe_histogram!(UPSTREAM_SECONDS, metrics::Unit::Seconds, "Sentry's response times.");
    describe_gauge!(CONCURRENCY_LIMIT, "Requests allowed in flight to Sentry.");
    describe_gauge!(IN_FLIGHT, "Requests in flight to Sentry.");
    describe_gauge!(BREAKER_STATE, "Outage breaker: 0 closed, 1 probing, 2 open.");
    describe_counter!(BREAKER_OPENINGS, "Times the outage breaker opened.");
    describe_gauge!(LAG_EVENTS, "Events not yet delivered, per owned partition.");
    describe_gauge!(LAG_SECONDS, "Age of the oldest event read and not yet delivered, per owned partition.");
    describe_gauge!(BUFFERED, "Events read ahead and waiting in memory.");
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions this instance owns.");
}
