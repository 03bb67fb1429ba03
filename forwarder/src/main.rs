//! `cyclops-forwarder`: parses flags, loads the configuration, runs the service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::{Parser, Subcommand};
use cyclops_common::cli::{EXIT_CONFIG, EXIT_FAILURE, ServiceArgs};
use cyclops_common::config::{Config, Service};

/// Delivers the events stored in Kafka to Sentry at the pace Sentry can take.
#[derive(Debug, Parser)]
#[command(name = "cyclops-forwarder", version)]
struct Cli {
    #[command(flatten)]
    args: ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a stand-in for Sentry that prints what would have reached it (for demos; stores nothing).
    DemoSink {
        /// Address to listen on.
        #[arg(long = "sink-bind", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
        bind: IpAddr,
        /// Port to listen on.
        #[arg(long = "sink-port", default_value_t = 9000)]
        port: u16,
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
    let result = match cli.command {
        Some(Command::DemoSink { bind, port }) => demo_sink(SocketAddr::new(bind, port)).await,
        None => match cli.args.load_config(Service::Forwarder) {
            Ok(config) => run(config).await,
            Err(e) => {
                eprintln!("cyclops-forwarder: {e}");
                std::process::exit(EXIT_CONFIG);
            }
        },
    };
    if let Err(e) = result {
        eprintln!("cyclops-forwarder: {e:#}");
        std::process::exit(EXIT_FAILURE);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = cyclops_common::shutdown::on_signals()?;
    let forwarder = cyclops_forwarder::Forwarder::build(config, shutdown).await?;
    eprintln!("cyclops-forwarder status endpoints on http://{}", forwarder.local_addr());
    forwarder.run().await?;
    Ok(())
}

async fn demo_sink(addr: SocketAddr) -> anyhow::Result<()> {
    let shutdown = cyclops_common::shutdown::on_signals()?;
    let listener =
        cyclops_forwarder::demo_sink::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    eprintln!(
        "DEMO SINK listening on http://{addr} — a stand-in for Sentry that prints what it receives and stores nothing"
    );
    cyclops_forwarder::demo_sink::serve(listener, shutdown).await?;
    Ok(())
}
