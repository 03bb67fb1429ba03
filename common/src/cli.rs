//! The command line both services share, Cyclops-style: [`ServiceCli`]
//! with its flags ([`ServiceArgs`]) and each service's own subcommands.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::{Config, ConfigError, Overrides, Service};

/// `--conf`, `--port`, `--bind`, `-v…`: the flags of a running service.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Path to the configuration file (TOML); without it, defaults and
    /// CYCLOPS__SECTION__KEY environment variables apply.
    #[arg(short = 'c', long = "conf", global = true, value_name = "PATH")]
    pub conf: Option<PathBuf>,
    /// Port to listen on (overrides the service's `port` key).
    #[arg(short = 'p', long, global = true)]
    pub port: Option<u16>,
    /// Address to bind to (overrides the service's `bind` key).
    #[arg(short = 'b', long, global = true)]
    pub bind: Option<IpAddr>,
    /// Log level: -v warning, -vv info, -vvv debug (RUST_LOG wins when set).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl ServiceArgs {
    /// Loads the configuration these flags point at, with the process
    /// environment as the middle layer.
    pub fn load_config(&self, service: Service) -> Result<Config, ConfigError> {
        let flags = Overrides { bind: self.bind, port: self.port };
        crate::config::load(self.conf.as_deref(), std::env::vars(), service, &flags)
    }
}

/// A service's command line: the flags of [`ServiceArgs`], and the
/// subcommands `C` of its own (ingest's `init`, the forwarder's `replay`).
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct ServiceCli<C: clap::Subcommand> {
    #[command(flatten)]
    pub args: ServiceArgs,
    #[command(subcommand)]
    pub command: Option<C>,
}

impl<C: clap::Subcommand> ServiceCli<C> {
    /// Parses the process's arguments for the binary `name`, which `about`
    /// describes in `--help`; exits with clap's message on bad flags.
    pub fn parse_for(name: &'static str, about: &'static str) -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().name(name).bin_name(name).about(about).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The configuration, or exit [`EXIT_CONFIG`] with a line naming the bad key.
    pub fn config_or_exit(&self, service: Service) -> Config {
        self.args.load_config(service).unwrap_or_else(|e| {
            crate::say!("{}: {e}", service.binary());
            std::process::exit(EXIT_CONFIG);
        })
    }
}

/// Exit code for a configuration that cannot be used (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code for a failure while starting or running.
pub const EXIT_FAILURE: i32 = 1;

/// Writes a line to stderr like `eprintln!`, but never panics: a service's
/// banner or last words must not kill it when its log pipe is closed (a
/// `| tee` or a log shipper that died).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ignored = writeln!(std::io::stderr(), $($arg)*);
    }};
}
