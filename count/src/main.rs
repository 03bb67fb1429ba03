//! `cyclops-count`: see the crate docs and the README's "Operating a farm".

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use cyclops_count::{FarmReport, fetch_all, merge_floods, render_floods, render_text, targets};

/// How a Cyclops farm is doing: asks every instance's /count (or /floods) at
/// once and prints the farm's totals.
#[derive(Debug, Parser)]
#[command(name = "cyclops-count", version)]
struct Args {
    /// Base URL of the instances given by --ports (Cyclops's -b).
    #[arg(short = 'b', long = "base")]
    base: Option<String>,
    /// Ports of the instances on --base: 9000-9004, 9000,9002 or a mix (Cyclops's -p).
    #[arg(short = 'p', long = "ports")]
    ports: Option<String>,
    /// More instances, as URLs (http://host:port).
    urls: Vec<String>,
    /// Print JSON for machines instead of the report.
    #[arg(long)]
    json: bool,
    /// Refresh the report every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
    /// Show the top flooding errors across the farm (from each ingest's /floods).
    #[arg(long)]
    floods: bool,
    /// How many floods --floods shows.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// How long each instance may take to answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let instances = match targets(args.base.as_deref(), args.ports.as_deref(), &args.urls) {
        Ok(instances) => instances,
        Err(e) => {
            eprintln!("cyclops-count: {e}");
            return ExitCode::from(2);
        }
    };
    let client = reqwest::Client::new();
    let timeout = Duration::from_millis(args.timeout_ms);
    loop {
        let (text, all_answered) = once(&args, &client, &instances, timeout).await;
        if let Some(secs) = args.watch {
            // Clear the terminal and draw again, like `watch`.
            print!("\x1b[2J\x1b[H{text}");
            std::io::stdout().flush().ok();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs.max(1))) => continue,
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            }
        }
        print!("{text}");
        // Some instance did not answer: say so in the exit code too, for scripts.
        return if all_answered { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
}

async fn once(args: &Args, client: &reqwest::Client, instances: &[String], timeout: Duration) -> (String, bool) {
    if args.floods {
        // Every instance's whole list: an error just below one instance's
        // top N may still be in the farm's top N once the lists add up.
        let replies = fetch_all::<serde_json::Value>(client, instances, "/floods?limit=1000", timeout).await;
        let mut docs = Vec::new();
        let mut missing = String::new();
        for (url, reply) in instances.iter().zip(replies) {
            match reply {
                Ok(doc) => docs.push(doc),
                // Forwarders have no /floods: only ingest reports floods.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    missing += &format!("{} not found ({e})\n", url.split_once("://").map_or(url.as_str(), |(_, r)| r))
                }
            }
        }
        let floods = merge_floods(&docs, args.top);
        let text = if args.json {
            serde_json::to_string_pretty(&floods).unwrap_or_default() + "\n"
        } else if docs.is_empty() {
            format!("{missing}No ingest instance answered /floods.\n")
        } else {
            format!("{missing}{}", render_floods(&floods, now_ms()))
        };
        return (text, missing.is_empty() && !docs.is_empty());
    }
    let replies = fetch_all(client, instances, "/count", timeout).await;
    let report = FarmReport::new(instances, replies);
    let all = report.not_found == 0;
    let text =
        if args.json { serde_json::to_string_pretty(&report).unwrap_or_default() + "\n" } else { render_text(&report) };
    (text, all)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
