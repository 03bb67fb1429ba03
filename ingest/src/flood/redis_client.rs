//! The Redis client, made from `[redis]`: a password in `redis.url` and
//! `rediss://` (TLS, with `redis.tls_ca_location` for a private CA) work
//! wherever ingest talks to Redis; and `/ready`'s probe of it.

use std::time::Duration;

use cyclops_common::config::RedisConfig;
use cyclops_common::status::Probe;

/// Why the Redis client could not be made. Never shows the URL's password.
#[derive(Debug, thiserror::Error)]
pub enum RedisClientError {
    #[error("invalid redis.url {url}: {source}")]
    Url { url: String, source: redis::RedisError },
    #[error("cannot read redis.tls_ca_location {path:?}: {source}")]
    Ca { path: String, source: std::io::Error },
}

/// The client for `redis.url`, or `None` when it is unset. Connects lazily.
pub fn client(config: &RedisConfig) -> Result<Option<redis::Client>, RedisClientError> {
    let Some(url) = &config.url else { return Ok(None) };
    let url_error = |source| RedisClientError::Url { url: url.redacted_url(), source };
    let client = match &config.tls_ca_location {
        Some(path) => {
            let root_cert =
                std::fs::read(path).map_err(|source| RedisClientError::Ca { path: path.clone(), source })?;
            let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
            redis::Client::build_with_tls(url.expose(), certificates).map_err(url_error)?
        }
        None => redis::Client::open(url.expose()).map_err(url_error)?,
    };
    Ok(Some(client))
}

/// Longest wait for Redis to answer `/ready`'s PING. Its own bound: the
/// flood filter's per-event deadline (`redis.timeout_ms`) is tuned for the
/// request path, and Kafka's metadata timeout is Kafka's.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `/ready`'s Redis check: PING, within [`PING_TIMEOUT`]. Redis is never
/// critical (the flood filter counts in process without it), so a failure
/// only degrades `/ready`: taking every ingest out of rotation for it would
/// lose every event.
pub fn probe(client: redis::Client) -> Probe {
    Box::new(move || {
        let client = client.clone();
        Box::pin(async move {
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            match tokio::time::timeout(PING_TIMEOUT, ping).await {
                Ok(Ok(pong)) => Ok(pong),
                Ok(Err(e)) => Err(format!("PING failed: {e}")),
                Err(_) => Err(format!("no answer to PING within {} ms", PING_TIMEOUT.as_millis())),
            }
        })
    })
}
