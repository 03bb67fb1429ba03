//! `cyclops-ingest`: parses flags, loads the configuration, runs the service.

use clap::{Parser, Subcommand};
use cyclops_common::cli::{EXIT_CONFIG, EXIT_FAILURE, ServiceArgs};
use cyclops_common::config::Service;

/// Sentry-compatible intake in front of Sentry: drops floods, stores every
/// accepted event in Kafka.
#[derive(Debug, Parser)]
#[command(name = "cyclops-ingest", version)]
struct Cli {
    #[command(flatten)]
    args: ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

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
    let cli = Cli::parse();
    cyclops_common::telemetry::init_tracing(cli.args.verbose);
    if let Some(Command::Init { path }) = cli.command {
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
    let config = match cli.args.load_config(Service::Ingest) {
        Ok(c) => c,
        Err(e) => {
            cyclops_common::say!("cyclops-ingest: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
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
