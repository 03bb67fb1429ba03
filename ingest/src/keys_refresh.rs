//! Loading keys from Sentry's own database: the rows of
//! `sentry_projectkey` (active ones accepted, the others refused), every `ingest.update_period_secs`. A failed load is
//! logged and counted and keeps the last good keys.

use std::sync::Arc;
use std::time::Duration;

use cyclops_common::config::ProjectKey;
use cyclops_common::secret::Secret;
use cyclops_common::shutdown::CancellationToken;

use crate::keys::KeyStore;

/// Sentry's `ProjectKeyStatus.ACTIVE`.
const ACTIVE: i32 = 0;
/// Longest a connection and query may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What one load read: the active keys, and the public keys of the others
/// (refused even when `ingest.restrict_api_access` is off: a disabled key
/// is not an unknown one).
#[derive(Debug, Default)]
pub struct Loaded {
    pub active: Vec<ProjectKey>,
    pub disabled: Vec<String>,
}

/// The keys in the database at `url`.
pub async fn load(url: &Secret) -> Result<Loaded, LoadError> {
    let work = async {
        let (client, connection) = tokio_postgres::connect(url.expose(), tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let rows = client.query("SELECT project_id, public_key, secret_key, status FROM sentry_projectkey", &[]).await;
        drop(client);
        driver.abort();
        let mut loaded = Loaded::default();
        for row in rows? {
            let Ok(public_key) = row.try_get::<_, String>(1) else { continue };
            let (Ok(id), Ok(secret_key), Ok(status)) =
                (row.try_get::<_, i64>(0), row.try_get::<_, Option<String>>(2), row.try_get::<_, i32>(3))
            else {
                continue;
            };
            match u64::try_from(id) {
                Ok(id) if status == ACTIVE => {
                    loaded.active.push(ProjectKey { id, public_key, secret_key: secret_key.map(Secret::from) });
                }
                _ => loaded.disabled.push(public_key),
            }
        }
        Ok(loaded)
    };
    tokio::time::timeout(LOAD_TIMEOUT, work).await.unwrap_or(Err(LoadError::Timeout(LOAD_TIMEOUT)))
}

/// Until the first load succeeds, retries come at least this often: until
/// then the database's keys are refused.
const FIRST_LOAD_RETRY: Duration = Duration::from_secs(5);

/// Loads once now, then every `period` until `shutdown`.
pub async fn run(url: Secret, keys: Arc<KeyStore>, period: Duration, shutdown: CancellationToken) {
    loop {
        match load(&url).await {
            Ok(loaded) => {
                tracing::info!(
                    keys = loaded.active.len(),
                    disabled = loaded.disabled.len(),
                    "loaded project keys from sentry's database"
                );
                metrics::gauge!(crate::metrics::KEYS_LOADED).set(loaded.active.len() as f64);
                keys.replace_loaded(loaded.active, loaded.disabled);
            }
            Err(e) => {
                metrics::counter!(crate::metrics::KEY_REFRESH_FAILURES).increment(1);
                tracing::error!(error = %e, kept = keys.loaded_len(), "cannot load project keys; keeping the last good ones");
                keys.reload_failed(e.to_string());
            }
        }
        let pause = if keys.loaded_once() { period } else { period.min(FIRST_LOAD_RETRY) };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
