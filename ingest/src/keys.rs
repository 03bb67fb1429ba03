//! The DSN keys ingest accepts: the static `[[projects]]` list plus, when
//! configured, the active keys of Sentry's own `sentry_projectkey` table,
//! reloaded in the background (see [`crate::keys_refresh`]). Lookups never
//! wait on the database: they read the last good set.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use cyclops_common::config::ProjectKey;
use cyclops_common::ids::ProjectId;

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

    /// The project the key `public_key` (with `secret`, when the client sent
    /// one) may send to. `path_project` is the id in the URL (none on the
    /// legacy `/api/store/`). A known key must belong to that project and,
    /// when both sides have a secret, match it; an unknown key is refused
    /// unless access is unrestricted.
    pub fn resolve(
        &self,
        public_key: &str,
        secret: Option<&str>,
        path_project: Option<ProjectId>,
    ) -> Result<ProjectId, Refused> {
        match self.find(public_key) {
            Found::Disabled => Err(Refused::Disabled),
            Found::Active(key) => {
                let project = ProjectId::new(key.id);
                if path_project.is_some_and(|p| p != project) {
                    return Err(Refused::OtherProject);
                }
                if let (Some(given), Some(expected)) = (secret, &key.secret_key)
                    && given != expected.expose()
                {
                    return Err(Refused::WrongSecret);
                }
                Ok(project)
            }
            Found::Unknown if self.restrict => Err(Refused::Unknown),
            // Unrestricted: any key, but the project must come from the path.
            Found::Unknown => path_project.ok_or(Refused::NoProject),
        }
    }
}

/// Why the store refuses a key. Sentry answers all of them alike (403); the
/// reason is for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the key is disabled")]
    Disabled,
    #[error("the key belongs to another project")]
    OtherProject,
    #[error("the secret does not match the key's")]
    WrongSecret,
    #[error("the key is unknown")]
    Unknown,
    #[error("an unknown key may send only to a project named in the path")]
    NoProject,
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

    fn p(id: u64) -> ProjectId {
        ProjectId::new(id)
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
        assert_eq!(keys.resolve("abc", None, Some(p(1))), Ok(p(1)));
        assert_eq!(keys.resolve("abc", Some("s"), Some(p(1))), Ok(p(1)));
        assert_eq!(keys.resolve("second", None, Some(p(1))), Ok(p(1)), "a project may have several keys");
        assert_eq!(keys.resolve("abc", None, None), Ok(p(1)), "the legacy path takes the key's project");
        assert_eq!(keys.resolve("abc", Some("x"), Some(p(1))), Err(Refused::WrongSecret));
        assert_eq!(keys.resolve("abc", None, Some(p(2))), Err(Refused::OtherProject));
        assert_eq!(keys.resolve("zzz", None, Some(p(1))), Err(Refused::Unknown));
    }

    #[test]
    fn unrestricted_access_takes_unknown_keys_for_the_path_project() {
        let keys = store(false);
        assert_eq!(keys.resolve("zzz", None, Some(p(9))), Ok(p(9)));
        assert_eq!(keys.resolve("zzz", None, None), Err(Refused::NoProject), "no project to send to");
        assert_eq!(keys.resolve("abc", None, Some(p(2))), Err(Refused::OtherProject), "known keys stay bound");
    }

    #[test]
    fn loaded_keys_are_replaced_as_a_whole() {
        let keys = store(true);
        keys.replace_loaded(vec![ProjectKey { id: 5, public_key: "db1".into(), secret_key: None }], Vec::new());
        assert_eq!(keys.resolve("db1", None, Some(p(5))), Ok(p(5)));
        keys.replace_loaded(vec![ProjectKey { id: 6, public_key: "db2".into(), secret_key: None }], Vec::new());
        assert_eq!(keys.resolve("db1", None, Some(p(5))), Err(Refused::Unknown), "a key gone from the table is gone");
        assert_eq!(keys.resolve("db2", None, Some(p(6))), Ok(p(6)));
        assert_eq!(keys.loaded_len(), 1);
    }

    #[test]
    fn disabled_keys_are_refused_even_when_access_is_unrestricted() {
        let keys = store(false);
        keys.replace_loaded(Vec::new(), vec!["off".into()]);
        assert_eq!(keys.resolve("off", None, Some(p(5))), Err(Refused::Disabled));
        assert_eq!(keys.resolve("other", None, Some(p(5))), Ok(p(5)), "unknown keys still pass");
        keys.replace_loaded(vec![ProjectKey { id: 5, public_key: "off".into(), secret_key: None }], Vec::new());
        assert_eq!(keys.resolve("off", None, Some(p(5))), Ok(p(5)), "enabled again");
    }
}
