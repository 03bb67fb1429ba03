//! The Redis client, made from `[redis]`: a password in `redis.url` and
//! `rediss://` (TLS, with `redis.tls_ca_location` for a private CA) work
//! wherever Cyclops talks to Redis.

use crate::config::RedisConfig;

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
