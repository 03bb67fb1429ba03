//! `cyclops-ingest`: parses flags, loads the configuration, runs the service.

use clap::Subcommand;
use cyclops_common::cli::{EXIT_FAILURE, ServiceCli};
use cyclops_common::config::Service;

/// `--help`'s description.
const ABOUT: &str = "Sentry-compatible intake in front of Sentry: drops floods, stores every accepted event in Kafka.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a complete, commented default configuration to PATH (like cyclops-init).
    Init {
        /// Where to write it; refuses to overwrite an existing file.
        path: std::path::PathBuf,
    },
}

/// mimalloc: the request path allocates many small objects (parsed JSON,
/// headers); the system allocator cost about 15% of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut cli = ServiceCli::<Command>::parse_for(Service::Ingest.binary(), ABOUT);
    cyclops_common::telemetry::init_tracing(cli.args.verbose);
    if let Some(Command::Init { path }) = cli.command.take() {
        std::process::exit(cyclops_common::config::write_default(&path).map_or_else(
            |e| {
                cyclops_common::say!("cyclops-ingest: {e}");
                EXIT_FAILURE
            },
            |()| {
                cyclops_common::say!("wrote the default configuration to {}", path.display());
                0
            },
        ));
    }
    let config = cli.config_or_exit(Service::Ingest);
    if let Err(e) = run(config).await {
        cyclops_common::say!("cyclops-ingest: {e}");
        std::process::exit(EXIT_FAILURE);
    }
}

async fn run(config: cyclops_common::config::Config) -> anyhow::Result<()> {
    let shutdown = cyclops_common::shutdown::on_signals()?;
    let ingest = cyclops_ingest::Ingest::build(config, shutdown).await?;
    cyclops_common::say!("cyclops-ingest listening on http://{}", ingest.local_addr());
    ingest.run().await?;
    Ok(())
}
