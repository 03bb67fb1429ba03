//! A load generator for the durability tests: distinct store events sent to
//! one ingest, each answer kept (status, durability, latency), and which of
//! them the fake Sentry received.
#![expect(clippy::disallowed_types, reason = "load measures wall-clock latencies")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::fake_sentry::Recorded;
use crate::{event_id, sentry_auth};

/// Where the events go: an ingest's base URL, a project and its key.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    pub project: u64,
    pub key: String,
}

/// One event sent: its id, status (0: no answer), durability and latency.
#[derive(Debug)]
pub struct Answer {
    pub id: String,
    pub status: u16,
    pub durability: Option<String>,
    pub sent_at: Instant,
    pub took: Duration,
}

/// How many of `answers` came from the spool, and over how long: from the
/// first spooled event sent to the last one answered.
pub fn spooled(answers: &[Answer]) -> (usize, Duration) {
    let spooled: Vec<&Answer> = answers.iter().filter(|a| a.durability.as_deref() == Some("spool")).collect();
    let first = spooled.iter().map(|a| a.sent_at).min();
    let last = spooled.iter().map(|a| a.sent_at + a.took).max();
    let span = first.zip(last).map_or(Duration::ZERO, |(first, last)| last.duration_since(first));
    (spooled.len(), span)
}

/// Sends one event padded to about `body_bytes`.
pub async fn send_one(client: &reqwest::Client, target: &Target, body_bytes: usize) -> Answer {
    let id = event_id();
    let padding = "x".repeat(body_bytes);
    let body = format!(r#"{{"event_id":"{id}","message":"stored? {id}","extra":{{"pad":"{padding}"}}}}"#);
    let started = Instant::now();
    let response = client
        .post(format!("{}/api/{}/store/", target.base, target.project))
        .header("x-sentry-auth", sentry_auth(&target.key))
        .body(body)
        .send()
        .await;
    let took = started.elapsed();
    match response {
        Ok(r) => {
            let durability = r.headers().get("x-cyclops-durability").and_then(|v| v.to_str().ok()).map(str::to_owned);
            Answer { id, status: r.status().as_u16(), durability, sent_at: started, took }
        }
        // The process was killed mid-request: not answered.
        Err(_) => Answer { id, status: 0, durability: None, sent_at: started, took },
    }
}

/// `n` events, `concurrency` at a time.
pub async fn load(target: &Target, n: usize, concurrency: usize) -> Vec<Answer> {
    let client = reqwest::Client::new();
    futures::stream::iter(0..n).map(|_| send_one(&client, target, 200)).buffer_unordered(concurrency).collect().await
}

/// Events `concurrency` at a time, each sender pausing `pace` after each
/// answer, until `stop` (at most `most`): a steady load to run faults
/// under, bounded in rate so that what it sends can be delivered in time.
pub async fn load_until(
    target: &Target,
    concurrency: usize,
    pace: Duration,
    most: usize,
    stop: CancellationToken,
) -> Vec<Answer> {
    let client = reqwest::Client::new();
    futures::stream::iter(0..most)
        .take_until(stop.cancelled_owned())
        .map(|_| async {
            let answer = send_one(&client, target, 200).await;
            tokio::time::sleep(pace).await;
            answer
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// The event ids (hex, no dashes) whose text is in what Sentry received.
pub fn delivered(requests: &[Recorded], ids: &HashSet<String>) -> HashSet<String> {
    let texts: Vec<String> = requests.iter().map(|r| r.decoded_text().replace('-', "")).collect();
    ids.iter().filter(|id| texts.iter().any(|t| t.contains(id.as_str()))).cloned().collect()
}

/// How many of the requests Sentry received carry each of `ids`: more than
/// one is a duplicate delivery.
pub fn duplicates(requests: &[Recorded], ids: &HashSet<String>) -> usize {
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for r in requests {
        let text = r.text().replace('-', "");
        if let Some(id) = ids.iter().find(|id| text.contains(id.as_str())) {
            *seen.entry(id.as_str()).or_default() += 1;
        }
    }
    seen.values().map(|n| n - 1).sum()
}
