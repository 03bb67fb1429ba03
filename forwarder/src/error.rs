//! Errors that stop the forwarder from starting or running.

use std::net::SocketAddr;

/// Why the forwarder could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create the Kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot create the HTTP client for Sentry: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Pacing(#[from] crate::pacing::InvalidPacing),
    #[error("cannot start the Kafka poll thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Status(#[from] cyclops_common::status::StatusError),
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
    #[error("the kafka poll thread stopped before shutdown: {0}")]
    PollStopped(String),
    #[error(transparent)]
    Task(#[from] cyclops_common::supervise::TaskFailed),
}
