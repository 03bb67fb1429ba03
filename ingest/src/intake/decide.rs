//! What becomes of an understood submission: an empty envelope is answered
//! and not stored; sampling is next (it costs nothing); then the flood
//! filter, for submissions that carry an error event (or a transaction). A dropped event is counted
//! by reason and, when the flood filter dropped it, shown in `/floods`.
//!
//! Dropped events are answered 200 like stored ones: a 429 would make the
//! SDK hold back all of its errors, not only the flooding one.

use std::net::IpAddr;

use cyclops_common::ids::ProjectId;

use super::Intake;
use super::payload::Understood;
use crate::durable::Durability;
use crate::flood::Verdict;
use crate::flood::report::Sample;

/// What became of an accepted submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// To be stored; then where it was stored.
    Processed(Durability),
    /// Dropped on purpose, for this reason (`empty`, `sampled`, `flood`).
    Ignored(&'static str),
}

/// The fate of `understood`, and its fingerprint's count in the flood
/// filter's window (0 when it was not counted).
pub async fn decide(intake: &Intake, project: ProjectId, understood: &Understood, client: IpAddr) -> (Fate, u64) {
    if understood.empty {
        return ignored(intake, project, "empty", 0);
    }
    let percent = intake.config.sampling.percent_for(project.get());
    if percent > 0.0 && fastrand::f64() * 100.0 < percent {
        return ignored(intake, project, "sampled", 0);
    }
    let Some(fingerprint) = &understood.fingerprint else { return (Fate::Processed(Durability::Kafka), 0) };
    match intake.flood.check(project, fingerprint).await {
        Verdict::Pass { count } => (Fate::Processed(Durability::Kafka), count),
        Verdict::Drop { count } => {
            report_flood(intake, project, understood, client);
            ignored(intake, project, "flood", count)
        }
    }
}

/// Adds a dropped event to `/floods`; its host is its `server_name`, else the client's address.
fn report_flood(intake: &Intake, project: ProjectId, understood: &Understood, client: IpAddr) {
    let (Some(fingerprint), Some(summary)) = (&understood.fingerprint, &understood.summary) else { return };
    let client_text;
    let host = match &summary.server_name {
        Some(name) => name.as_str(),
        None => {
            client_text = client.to_string();
            client_text.as_str()
        }
    };
    let sample = Sample { title: &summary.title, release: summary.release.as_deref(), host };
    intake.floods.dropped(project, fingerprint, &sample, super::now_ms());
}

fn ignored(intake: &Intake, project: ProjectId, reason: &'static str, count: u64) -> (Fate, u64) {
    intake.stats.ignored(project, reason);
    metrics::counter!(crate::metrics::IGNORED, "reason" => reason).increment(1);
    (Fate::Ignored(reason), count)
}
