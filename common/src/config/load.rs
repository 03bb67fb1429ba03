//! Loading and validating [`Config`]: file, then environment, then flags.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};

use super::Config;

/// Prefix of the environment variables that override keys:
/// `CYCLOPS__SECTION__KEY`.
pub const ENV_PREFIX: &str = "CYCLOPS";

/// Why a configuration was refused. Each variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable or not valid TOML.
    #[error("cannot read configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    /// A key is unknown, has the wrong type, or fails validation.
    #[error("invalid configuration key `{key}`: {message}")]
    Key { key: String, message: String },
    /// The layers could not be merged (for example an environment variable
    /// that is not valid for its key).
    #[error("invalid configuration: {0}")]
    Merge(String),
}

/// Which service is reading the configuration; flags apply to its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingest,
    Forwarder,
}

impl Service {
    /// Its binary's name, which starts its error lines.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Ingest => "cyclops-ingest",
            Self::Forwarder => "cyclops-forwarder",
        }
    }
}

/// Command-line flags, the highest layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind`: `{service}.bind`.
    pub bind: Option<IpAddr>,
    /// `--port`: `{service}.port`.
    pub port: Option<u16>,
}

/// Loads the configuration for `service`: defaults, then the TOML file at
/// `path` (when given), then the `CYCLOPS__…` entries of `env`, then `flags`.
///
/// `env` is passed in rather than read here so that tests never touch the
/// process environment; `main` passes `std::env::vars()`.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    service: Service,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let file = match path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?,
        ),
        None => None,
    };
    let mut config = merge(file.as_deref(), path, env)?;
    apply_flags(&mut config, service, flags);
    validate(&config)?;
    Ok(config)
}

/// Loads a configuration from TOML text alone (no environment, no flags).
pub fn load_from_str(toml: &str) -> Result<Config, ConfigError> {
    let config = merge(Some(toml), None, std::iter::empty())?;
    validate(&config)?;
    Ok(config)
}

fn merge(
    file: Option<&str>,
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.map_or_else(|| PathBuf::from("<text>"), Path::to_owned),
        message,
    };
    // Parse the file ourselves first: the `config` crate's TOML errors lose
    // the line number.
    if let Some(text) = file {
        toml::from_str::<toml::Table>(text).map_err(|e| file_error(e.to_string()))?;
    }
    let env: HashMap<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__"))).collect();
    let mut builder = config::Config::builder();
    if let Some(text) = file {
        builder = builder.add_source(File::from_str(text, FileFormat::Toml));
    }
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX).prefix_separator("__").separator("__").try_parsing(true).source(Some(env)),
    );
    let merged = builder.build().map_err(|e| ConfigError::Merge(e.to_string()))?;
    // serde_path_to_error names the exact key of a bad or unknown field; the
    // config crate's own deserializer turns the environment's strings into
    // numbers where a key wants one, and numbers back into strings.
    serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Key { key, message: e.inner().to_string() }
    })
}

fn apply_flags(config: &mut Config, service: Service, flags: &Overrides) {
    let (bind, port) = match service {
        Service::Ingest => (&mut config.ingest.bind, &mut config.ingest.port),
        Service::Forwarder => (&mut config.forwarder.bind, &mut config.forwarder.port),
    };
    if let Some(b) = flags.bind {
        *bind = b;
    }
    if let Some(p) = flags.port {
        *port = p;
    }
}

pub(super) fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.into(), message: message.into() }
}

/// Checks what types alone cannot: each section its own keys, then what
/// spans sections.
fn validate(config: &Config) -> Result<(), ConfigError> {
    super::kafka::validate(&config.kafka)?;
    config.redis.validate()?;
    config.ingest.validate()?;
    config.sentry.validate()?;
    super::validate_projects(&config.projects)?;
    config.forwarder.validate()?;
    Ok(())
}
