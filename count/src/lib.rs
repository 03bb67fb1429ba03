//! `cyclops-count`: how a farm of ingest and forwarder instances is doing,
//! summed from each instance's `/count`, printed as Cyclops's report; and,
//! with `--floods`, what is flooding, merged from each ingest's `/floods`.
//!
//! Fetching is the only I/O here ([`fetch_all`]); the report and the merge
//! are pure functions of what the instances answered, so that they are
//! tested without a farm.

mod floods;
mod report;
mod targets;

pub use floods::{MergedFlood, merge_floods, render_floods};
pub use report::{FarmReport, Reply, Role, render_text};
pub use targets::{TargetError, targets};

use std::time::Duration;

/// Asks every instance for `path` at once, each within `timeout`. An
/// instance that does not answer, or answers with something other than a
/// JSON 200, gives an error saying why; the others are unaffected.
pub async fn fetch_all(
    client: &reqwest::Client,
    instances: &[String],
    path: &str,
    timeout: Duration,
) -> Vec<Result<serde_json::Value, String>> {
    let asks = instances.iter().map(|base| async move {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let response = client.get(&url).timeout(timeout).send().await.map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        response.json::<serde_json::Value>().await.map_err(|e| format!("not JSON: {e}"))
    });
    futures::future::join_all(asks).await
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection refused".into()
    } else {
        error.to_string()
    }
}
