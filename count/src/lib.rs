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

pub use cyclops_api::count::{Service, Summary};
pub use floods::{MergedFlood, merge_floods, render_floods};
pub use report::{FarmReport, render_text};
pub use targets::{TargetError, targets};

use std::time::Duration;

use serde::de::DeserializeOwned;

/// Why an instance gave no document.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("connection refused")]
    Refused,
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// The instance does not serve the path (a forwarder has no `/floods`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status(status) if *status == reqwest::StatusCode::NOT_FOUND)
    }
}

/// Asks every instance for `path` at once, each within `timeout`, and reads
/// the answer as a `T`. An instance that does not answer, or answers with
/// something other than a 200 that reads as a `T`, gives an error saying
/// why; the others are unaffected.
pub async fn fetch_all<T: DeserializeOwned>(
    client: &reqwest::Client,
    instances: &[String],
    path: &str,
    timeout: Duration,
) -> Vec<Result<T, FetchError>> {
    let asks = instances.iter().map(|base| async move {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let response = client.get(&url).timeout(timeout).send().await.map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        // Read, then parsed with its path: the message names the field that
        // is wrong, where reqwest's would say only that decoding failed.
        let body = response.bytes().await.map_err(|e| describe(&e))?;
        let document = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize::<_, T>(document).map_err(|e| FetchError::NotJson(e.to_string()))
    });
    futures::future::join_all(asks).await
}

fn describe(error: &reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else if error.is_connect() {
        FetchError::Refused
    } else {
        FetchError::Other(error.to_string())
    }
}
