//! Names of ingest's metrics.

cyclops_common::metric_names! {
    /// Counter of requests. Labels: `endpoint` (`store`, `envelope`, `beacon`), `status` (HTTP code).
    REQUESTS = "cyclops_ingest_requests_total";
    /// Counter of events stored (in Kafka, or in the spool). Labels: none.
    ACCEPTED = "cyclops_ingest_accepted_total";
    /// Counter of events dropped on purpose with a 200. Labels: `reason` (`flood`, `sampled`, `empty`: an envelope with no items).
    IGNORED = "cyclops_ingest_ignored_total";
    /// Counter of refused submissions. Labels: `reason` (see `StoreError::reason`).
    REJECTED = "cyclops_ingest_rejected_total";
    /// Histogram of Kafka acknowledgement times, seconds. Labels: none.
    PRODUCE_SECONDS = "cyclops_ingest_produce_seconds";
    /// Gauge of events handed to the producer and not yet acknowledged.
    IN_FLIGHT = "cyclops_ingest_in_flight";
    /// Counter of events answered 200 under `ingest.ack = "enqueue"` that Kafka then did not take.
    LOST_AFTER_ENQUEUE = "cyclops_ingest_lost_after_enqueue_total";
    /// Counter of acknowledgements Kafka did not confirm (no offset; see
    /// `cyclops_common::kafka::written`): the event is sent again, or with `ack = "enqueue"` may be lost.
    UNCONFIRMED = "cyclops_ingest_unconfirmed_acks_total";
    /// Counter of Kafka topics ingest created. Labels: none.
    TOPICS_CREATED = "cyclops_ingest_topics_created_total";
    /// Gauge of keys loaded from Sentry's database.
    KEYS_LOADED = "cyclops_ingest_keys_loaded";
    /// Counter of failed key reloads from Sentry's database.
    KEY_REFRESH_FAILURES = "cyclops_ingest_key_refresh_failures_total";

    /// Gauge of open client connections.
    CONNECTIONS = "cyclops_ingest_connections";
    /// Counter of client-facing limits hit. Labels: `limit` (`max_connections`,
    /// `accept_error`, `request_head_timeout`, `keepalive_idle_timeout`,
    /// `body_timeout`, `in_flight_wait`, `in_flight_client_share`).
    LIMIT_HITS = "cyclops_ingest_limit_hits_total";

    /// Counter of bytes produced by undoing bodies' `Content-Encoding`.
    DECODED_BYTES = "cyclops_ingest_decoded_bytes_total";

    /// Gauge of records in the spool.
    SPOOL_RECORDS = "cyclops_ingest_spool_records";
    /// Gauge of the spool's record bytes (what `ingest.spool.max_bytes` bounds).
    SPOOL_BYTES = "cyclops_ingest_spool_bytes";
    /// Gauge of the age of the oldest spooled record, seconds (0 when empty).
    SPOOL_OLDEST_AGE = "cyclops_ingest_spool_oldest_age_seconds";
    /// Counter of records made durable in the spool.
    SPOOL_APPENDED = "cyclops_ingest_spool_appended_total";
    /// Counter of spooled records Kafka acknowledged (and the spool deleted).
    SPOOL_DRAINED = "cyclops_ingest_spool_drained_total";
    /// Counter of corrupt spool records skipped (and corrupt databases moved aside).
    SPOOL_CORRUPT = "cyclops_ingest_spool_corrupt_total";
    /// Histogram of one spool commit (one fsync for a batch of records), seconds.
    SPOOL_FSYNC_SECONDS = "cyclops_ingest_spool_fsync_seconds";
    /// Gauge, 1 while Kafka is not taking events (they go to the spool).
    KAFKA_DOWN = "cyclops_ingest_kafka_down";
    /// Counter of Redis failures (errors and timeouts) in the flood filter.
    FLOOD_REDIS_ERRORS = "cyclops_flood_redis_errors_total";
    /// Gauge, 1 while the flood filter counts in process because Redis failed.
    FLOOD_FALLBACK_ACTIVE = "cyclops_flood_fallback_active";
}

pub(crate) fn describe() {
    metrics::describe_gauge!(SPOOL_RECORDS, "Records in the spool.");
    metrics::describe_gauge!(SPOOL_BYTES, metrics::Unit::Bytes, "Bytes of records in the spool.");
    metrics::describe_gauge!(SPOOL_OLDEST_AGE, metrics::Unit::Seconds, "Age of the oldest spooled record.");
    metrics::describe_counter!(SPOOL_APPENDED, "Records made durable in the spool.");
    metrics::describe_counter!(SPOOL_DRAINED, "Spooled records delivered to Kafka.");
    metrics::describe_counter!(SPOOL_CORRUPT, "Corrupt spool records skipped, and corrupt spool files moved aside.");
    metrics::describe_histogram!(SPOOL_FSYNC_SECONDS, metrics::Unit::Seconds, "One spool commit (one fsync).");
    metrics::describe_gauge!(KAFKA_DOWN, "1 while Kafka is not taking events and they are spooled.");
    metrics::describe_gauge!(CONNECTIONS, "Open client connections.");
    metrics::describe_counter!(LIMIT_HITS, "Client-facing limits hit (deadlines, connection cap, memory budget).");
    metrics::describe_counter!(DECODED_BYTES, metrics::Unit::Bytes, "Bytes produced by decompressing bodies.");
    metrics::describe_counter!(REQUESTS, "Intake requests, by endpoint and HTTP status.");
    metrics::describe_counter!(ACCEPTED, "Events acknowledged by Kafka (or queued, with ingest.ack = enqueue).");
    metrics::describe_counter!(
        IGNORED,
        "Events dropped on purpose (flood filter, sampling, empty envelopes), answered 200."
    );
    metrics::describe_counter!(REJECTED, "Submissions refused, by reason.");
    metrics::describe_histogram!(PRODUCE_SECONDS, metrics::Unit::Seconds, "Time for Kafka to acknowledge an event.");
    metrics::describe_gauge!(IN_FLIGHT, "Events handed to the producer and not yet acknowledged.");
    metrics::describe_counter!(LOST_AFTER_ENQUEUE, "Events answered 200 with ack = enqueue that Kafka did not take.");
    metrics::describe_counter!(
        UNCONFIRMED,
        "Acknowledgements of events without an offset (inferred by the producer, not confirmed by Kafka)."
    );
    metrics::describe_counter!(TOPICS_CREATED, "Project topics created by this instance.");
    metrics::describe_gauge!(KEYS_LOADED, "Project keys loaded from Sentry's database.");
    metrics::describe_counter!(KEY_REFRESH_FAILURES, "Failed reloads of project keys from Sentry's database.");
    metrics::describe_counter!(FLOOD_REDIS_ERRORS, "Redis failures in the flood filter.");
    metrics::describe_gauge!(FLOOD_FALLBACK_ACTIVE, "1 while the flood filter counts in process.");
}
