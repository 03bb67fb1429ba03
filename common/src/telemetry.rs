//! Logging (tracing) and metrics (a Prometheus recorder) setup.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Buckets of every `*_seconds` histogram: 1 ms to 30 s.
const LATENCY_BUCKETS_SECS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Sets up logging to stderr. Verbosity follows Cyclops's `-v` flags:
/// none = errors only, `-v` = warnings, `-vv` = info, `-vvv` = debug.
/// `RUST_LOG`, when set, wins. Calling it twice is harmless.
pub fn init_tracing(verbosity: u8) {
    let level = match verbosity {
        0 => "error",
        1 => "warn",
        2 => "info",
        _ => "debug",
    };
    // librdkafka is chatty at debug; keep it one notch quieter than our code.
    let default = format!("{level},rdkafka=warn,h2=warn,hyper=warn");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // An error only means a subscriber is already set (tests start several services).
    // log_internal_errors(false): on a failed write the subscriber would
    // otherwise report it with `eprintln!`, which panics on a closed stderr —
    // inside whatever task was logging (the signal watcher, once).
    // Colours only on a terminal: a log collector reading a pipe or a file
    // would otherwise store escape codes inside every `key=value`.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    if subscriber.try_init().is_err() {
        tracing::debug!("tracing already initialised");
    }
}

static PROMETHEUS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process-wide Prometheus recorder on first use and returns a
/// handle that renders it. Metrics are per process: two services started in
/// one process (as the tests do) share one registry.
pub fn prometheus() -> Result<PrometheusHandle, MetricsError> {
    PROMETHEUS
        .get_or_init(|| {
            // Latencies as histograms with buckets, not per-process summaries:
            // a farm's percentile is `histogram_quantile` over the summed
            // buckets of every instance, which summaries cannot give.
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(MetricsError)
}

/// Defines metric names as `pub const`s, each with its doc comment, and
/// `ALL`, every one of them: a service's metrics module is one call, and
/// what the dashboard may chart is derived from it (no list kept by hand).
#[macro_export]
macro_rules! metric_names {
    ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
        $($(#[$doc])* pub const $name: &str = $value;)*
        /// Every metric name defined in this module.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

/// Names of the metrics defined here; each service documents its own.
pub mod names {
    crate::metric_names! {
        /// Gauge, always 1. Labels: `service`, `version`.
        BUILD_INFO = "cyclops_build_info";
        /// Counter of failed readiness checks. Labels: `service`, `check` (`kafka`, ingest's `redis`).
        READINESS_FAILURES = "cyclops_readiness_check_failures_total";
    }
}

fn describe() {
    metrics::describe_gauge!(names::BUILD_INFO, "Always 1; labels carry the service and its version.");
    metrics::describe_counter!(names::READINESS_FAILURES, "Readiness checks that failed, by service and check.");
}

/// Records `cyclops_build_info` for `service`.
pub fn record_build_info(service: &'static str) {
    metrics::gauge!(names::BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}
