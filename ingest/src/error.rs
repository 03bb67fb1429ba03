//! Errors that stop ingest from starting or running.

use std::net::SocketAddr;

/// Why ingest could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Redis(#[from] crate::flood::redis_client::RedisClientError),
    #[error(transparent)]
    Status(#[from] cyclops_common::status::StatusError),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error(transparent)]
    Task(#[from] cyclops_common::supervise::TaskFailed),
}
