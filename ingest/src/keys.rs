//! The DSN keys ingest accepts: the static `[[projects]]` list plus, when
//! configured, the active keys of Sentry's own `sentry_projectkey` table,
//! reloaded in the background (see [`crate::keys_refresh`]). Lookups never
//! wait on the database: they read the last good set.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use cyclops_common::config::ProjectKey;

use crate::intake::{SentryAuth, StoreError};

/// Keys by public key.
type KeyMap = HashMap<String, ProjectKey>;

/// What was loaded from Sentry's database, replaced as a whole.
#[derive(Debug, Default)]
struct LoadedKeys {
    active: KeyMap,
    /// Public keys of rows that are not active.
    disabled: HashSet<String>,
}

/// Every key ingest knows, and whether unknown ones are refused.
#[derive(Debug)]
pub struct KeyStore {
    configured: KeyMap,
    loaded: RwLock<Arc<LoadedKeys>>,
    restrict: bool,
    /// The last reload's failure, `None` after a success.
    last_error: RwLock<Option<String>>,
    loaded_once: std::sync::atomic::AtomicBool,
}

impl KeyStore {
    /// `restrict` is `ingest.restrict_api_access`.
    pub fn new(projects: &[ProjectKey], restrict: bool) -> Self {
        Self {
            configured: projects.iter().map(|p| (p.public_key.clone(), p.clone())).collect(),
            loaded: RwLock::new(Arc::new(LoadedKeys::default())),
            restrict,
            last_error: RwLock::new(None),
            loaded_once: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Replaces the keys loaded from Sentry's database: the active ones and
    /// the public keys of the disabled ones.
    pub fn replace_loaded(&self, active: Vec<ProjectKey>, disabled: Vec<String>) {
        let active: KeyMap = active.into_iter().map(|k| (k.public_key.clone(), k)).collect();
        let keys = LoadedKeys { active, disabled: disabled.into_iter().collect() };
        if let Ok(mut loaded) = self.loaded.write() {
            *loaded = Arc::new(keys);
        }
        self.loaded_once.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.write() {
            *e = None;
        }
    }

    /// Records a failed reload (the loaded keys stay).
    pub fn reload_failed(&self, error: String) {
        if let Ok(mut e) = self.last_error.write() {
            *e = Some(error);
        }
    }

    /// Whether keys were ever loaded from the database.
    pub fn loaded_once(&self) -> bool {
        self.loaded_once.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last reload's failure, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok()?.clone()
    }

    /// How many keys are loaded from the database.
    pub fn loaded_len(&self) -> usize {
        self.loaded.read().map(|l| l.active.len()).unwrap_or(0)
    }

    fn find(&self, public_key: &str) -> Found {
        if let Some(key) = self.configured.get(public_key) {
            return Found::Active(key.clone());
        }
        let Some(loaded) = self.loaded.read().ok().map(|l| l.clone()) else { return Found::Unknown };
        match loaded.active.get(public_key) {
            Some(key) => Found::Active(key.clone()),
            None if loaded.disabled.contains(public_key) => Found::Disabled,
            None => Found::Unknown,
        }
    }

    /// The project `auth` may send to. `path_project` is the id in the URL
    /// (none on the legacy `/api/store/`). A known key must belong to that
    /// project and, when both sides have a secret, match it; an unknown key
    /// is refused unless access is unrestricted.
    pub fn resolve(&self, auth: &SentryAuth, path_project: Option<u64>) -> Result<u64, StoreError> {
        match self.find(&auth.public_key) {
            Found::Disabled => Err(StoreError::Rejected),
            Found::Active(key) => {
                if path_project.is_some_and(|p| p != key.id) {
                    return Err(StoreError::Rejected);
                }
                if let (Some(given), Some(expected)) = (&auth.secret_key, &key.secret_key)
                    && given != expected.expose()
                {
                    return Err(StoreError::Rejected);
                }
                Ok(key.id)
            }
            Found::Unknown if self.restrict => Err(StoreError::Rejected),
            // Unrestricted: any key, but the project must come from the path.
            Found::Unknown => path_project.ok_or(StoreError::Rejected),
        }
    }
}

/// What a public key is to this store.
enum Found {
    Active(ProjectKey),
    Disabled,
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(key: &str, secret: Option<&str>) -> SentryAuth {
        SentryAuth { public_key: key.into(), secret_key: secret.map(Into::into), forward_header: None }
    }

    fn store(restrict: bool) -> KeyStore {
        KeyStore::new(
            &[
                ProjectKey { id: 1, public_key: "abc".into(), secret_key: Some("s".into()) },
                ProjectKey { id: 1, public_key: "second".into(), secret_key: None },
            ],
            restrict,
        )
    }

    #[test]
    fn keys_belong_to_one_project_and_secrets_must_match() {
        let keys = store(true);
        assert_eq!(keys.resolve(&auth("abc", None), Some(1)), Ok(1));
        assert_eq!(keys.resolve(&auth("abc", Some("s")), Some(1)), Ok(1));
        assert_eq!(keys.resolve(&auth("second", None), Some(1)), Ok(1), "a project may have several keys");
        assert_eq!(keys.resolve(&auth("abc", None), None), Ok(1), "the legacy path takes the key's project");
        assert_eq!(keys.resolve(&auth("abc", Some("x")), Some(1)), Err(StoreError::Rejected));
        assert_eq!(keys.resolve(&auth("abc", None), Some(2)), Err(StoreError::Rejected));
        assert_eq!(keys.resolve(&auth("zzz", None), Some(1)), Err(StoreError::Rejected));
    }

    #[test]
    fn unrestricted_access_takes_unknown_keys_for_the_path_project() {
        let keys = store(false);
        assert_eq!(keys.resolve(&auth("zzz", None), Some(9)), Ok(9));
        assert_eq!(keys.resolve(&auth("zzz", None), None), Err(StoreError::Rejected), "no project to send to");
        assert_eq!(keys.resolve(&auth("abc", None), Some(2)), Err(StoreError::Rejected), "known keys stay bound");
    }

    #[test]
    fn loaded_keys_are_replaced_as_a_whole() {
        let keys = store(true);
        keys.replace_loaded(vec![ProjectKey { id: 5, public_key: "db1".into(), secret_key: None }], Vec::new());
        assert_eq!(keys.resolve(&auth("db1", None), Some(5)), Ok(5));
        keys.replace_loaded(vec![ProjectKey { id: 6, public_key: "db2".into(), secret_key: None }], Vec::new());
        assert_eq!(
            keys.resolve(&auth("db1", None), Some(5)),
            Err(StoreError::Rejected),
            "a key gone from the table is gone"
        );
        assert_eq!(keys.resolve(&auth("db2", None), Some(6)), Ok(6));
        assert_eq!(keys.loaded_len(), 1);
    }

    #[test]
    fn disabled_keys_are_refused_even_when_access_is_unrestricted() {
        let keys = store(false);
        keys.replace_loaded(Vec::new(), vec!["off".into()]);
        assert_eq!(keys.resolve(&auth("off", None), Some(5)), Err(StoreError::Rejected));
        assert_eq!(keys.resolve(&auth("other", None), Some(5)), Ok(5), "unknown keys still pass");
        keys.replace_loaded(vec![ProjectKey { id: 5, public_key: "off".into(), secret_key: None }], Vec::new());
        assert_eq!(keys.resolve(&auth("off", None), Some(5)), Ok(5), "enabled again");
    }
}
