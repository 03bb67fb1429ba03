//! `cyclops-forwarder`: parses flags, loads the configuration, runs the service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Subcommand;
use cyclops_common::cli::{EXIT_FAILURE, ServiceCli};
use cyclops_common::config::{Config, Service};
use cyclops_forwarder::replay::{ReplayRequest, Target};

/// `--help`'s description.
const ABOUT: &str = "Delivers the events stored in Kafka to Sentry at the pace Sentry can take.";

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
    /// Rewind the group's committed offsets so that a backlog is delivered
    /// again (refused while the group has live members).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["to_datetime", "to_earliest", "shift_by"])))]
    Replay {
        /// Consumer group to rewind (defaults to forwarder.group_id).
        #[arg(long)]
        group: Option<String>,
        /// From the first event at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
        #[arg(long)]
        to_datetime: Option<String>,
        /// From the oldest event Kafka still has.
        #[arg(long)]
        to_earliest: bool,
        /// Move the committed offset back by -N (N is negative), per partition.
        #[arg(long, allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Only this project's topic.
        #[arg(long)]
        project: Option<u64>,
        /// Print the plan, commit nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// mimalloc: the request path allocates many small objects (parsed JSON,
/// headers); the system allocator cost about 15% of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut cli = ServiceCli::<Command>::parse_for(Service::Forwarder.binary(), ABOUT);
    cyclops_common::telemetry::init_tracing(cli.args.verbose);
    let result = match cli.command.take() {
        Some(Command::DemoSink { bind, port }) => demo_sink(SocketAddr::new(bind, port)).await,
        Some(Command::Replay { group, to_datetime, to_earliest, shift_by, project, dry_run }) => {
            let config = cli.config_or_exit(Service::Forwarder);
            let target = match (to_datetime, to_earliest, shift_by) {
                (Some(t), _, _) => Target::datetime(&t),
                (None, true, _) => Ok(Target::Earliest),
                (None, false, Some(n)) => Target::shift_by(n),
                (None, false, None) => Ok(Target::Earliest),
            };
            match target {
                Ok(target) => {
                    let group = group.unwrap_or_else(|| config.forwarder.group_id.clone());
                    let request = ReplayRequest { group, target, project, dry_run };
                    cyclops_forwarder::replay::run_and_print(config, request).await.map_err(anyhow::Error::from)
                }
                Err(e) => Err(e.into()),
            }
        }
        None => run(cli.config_or_exit(Service::Forwarder)).await,
    };
    if let Err(e) = result {
        cyclops_common::say!("cyclops-forwarder: {e:#}");
        std::process::exit(EXIT_FAILURE);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = cyclops_common::shutdown::on_signals()?;
    let forwarder = cyclops_forwarder::Forwarder::build(config, shutdown).await?;
    cyclops_common::say!("cyclops-forwarder status endpoints on http://{}", forwarder.local_addr());
    forwarder.run().await?;
    Ok(())
}

async fn demo_sink(addr: SocketAddr) -> anyhow::Result<()> {
    let shutdown = cyclops_common::shutdown::on_signals()?;
    let listener =
        cyclops_forwarder::demo_sink::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    cyclops_common::say!(
        "DEMO SINK listening on http://{addr} — a stand-in for Sentry that prints what it receives and stores nothing"
    );
    cyclops_forwarder::demo_sink::serve(listener, shutdown).await?;
    Ok(())
}
