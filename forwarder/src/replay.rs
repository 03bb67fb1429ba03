//! `cyclops-forwarder replay`: rewinds the forwarders' committed offsets so
//! that a backlog already delivered is delivered again (after a Sentry lost
//! data, say). The records are still in Kafka for as long as its retention
//! keeps them; this only moves where the group resumes.
//!
//! It refuses while the group has live members: a running forwarder would
//! overwrite the new offsets with its own at its next commit. Stop the
//! forwarders, replay, start them again.

use std::sync::Arc;
use std::time::Duration;

use cyclops_common::config::Config;
use cyclops_common::ids::ProjectId;
use cyclops_common::kafka::{self, ClientBuilder};
use cyclops_common::record::project_of_topic;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Where to move each partition's committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The first record at or after this time, Unix milliseconds (the end
    /// when there is none).
    Datetime(i64),
    /// The oldest record Kafka still has.
    Earliest,
    /// The committed offset plus this, which is at most 0 (see
    /// [`Target::shift_by`]), as Kafka's own `kafka-consumer-groups.sh --shift-by`.
    ShiftBy(i64),
}

impl Target {
    /// `--shift-by`: back (negative) or nowhere, never forward.
    pub fn shift_by(n: i64) -> Result<Self, ReplayError> {
        if n > 0 { Err(ReplayError::Forward(n)) } else { Ok(Self::ShiftBy(n)) }
    }

    /// Parses `--to-datetime`: RFC 3339 (`2026-11-22T10:00:00Z`), or Kafka's
    /// tool's form without a zone (`2026-11-22T10:00:00.000`), taken as UTC.
    pub fn datetime(text: &str) -> Result<Self, ReplayError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .or_else(|_| OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339))
            .map_err(|_| ReplayError::BadDatetime(text.to_owned()))?;
        let ms = parsed.unix_timestamp_nanos() / 1_000_000;
        Ok(Self::Datetime(i64::try_from(ms).map_err(|_| ReplayError::BadDatetime(text.to_owned()))?))
    }
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub group: String,
    pub target: Target,
    /// Only this project's topic; all project topics when `None`.
    pub project: Option<u64>,
    pub dry_run: bool,
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset now (`None`: never committed).
    pub current: Option<i64>,
    pub target: i64,
    /// Records between the target and the end of the partition.
    pub to_deliver: i64,
    /// The group's committed offset read back after the commit (`None` on a
    /// dry run): the result, as Kafka now has it.
    pub committed: Option<i64>,
}

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("not a date and time: {0:?} (use RFC 3339, e.g. 2026-11-22T10:00:00Z)")]
    BadDatetime(String),
    #[error("group {group} has {members} live member(s): stop its forwarders first")]
    GroupActive { group: String, members: usize },
    #[error("--shift-by {0} moves forward: replay only rewinds (a forward move would skip events never delivered)")]
    Forward(i64),
    #[error("no project topic matches")]
    NoTopics,
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the replay task failed: {0}")]
    Task(String),
    /// Every partition whose offset read back is not the planned one (the
    /// others did move).
    #[error("{} partition(s) not committed as planned: {}", .0.len(), describe_misses(.0))]
    NotCommitted(Vec<PartitionPlan>),
}

fn describe_misses(plans: &[PartitionPlan]) -> String {
    let misses: Vec<String> = plans
        .iter()
        .map(|p| {
            let found = p.committed.map_or_else(|| "nothing".to_owned(), |c| c.to_string());
            format!("{} partition {} has {found}, not {}", p.topic, p.partition, p.target)
        })
        .collect();
    misses.join("; ")
}

/// Plans the move and, unless `dry_run`, commits it. Blocking: call it off
/// the async runtime. `progress` is told about each partition as it is planned.
pub fn replay(
    config: &Config,
    request: &ReplayRequest,
    mut progress: impl FnMut(&PartitionPlan),
) -> Result<Vec<PartitionPlan>, ReplayError> {
    let consumer: BaseConsumer<kafka::Context> = ClientBuilder::new(&config.kafka, "cyclops-replay")
        .set("group.id", &request.group)
        .set("enable.auto.commit", "false")
        .create()?;
    let groups = consumer.fetch_group_list(Some(&request.group), TIMEOUT)?;
    let members = groups.groups().iter().map(|g| g.members().len()).sum::<usize>();
    if members > 0 {
        return Err(ReplayError::GroupActive { group: request.group.clone(), members });
    }
    let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
    let mut partitions = TopicPartitionList::new();
    for topic in metadata.topics() {
        let Some(project) = project_of_topic(&config.kafka.topic_prefix, topic.name()).map(ProjectId::get) else {
            continue;
        };
        if request.project.is_some_and(|p| p != project) {
            continue;
        }
        for p in topic.partitions() {
            partitions.add_partition(topic.name(), p.id());
        }
    }
    if partitions.count() == 0 {
        return Err(ReplayError::NoTopics);
    }
    let committed = consumer.committed_offsets(partitions.clone(), TIMEOUT)?;
    let by_time = match request.target {
        Target::Datetime(ms) => {
            let mut query = partitions.clone();
            query.set_all_offsets(Offset::Offset(ms))?;
            Some(consumer.offsets_for_times(query, TIMEOUT)?)
        }
        _ => None,
    };
    let mut plans = Vec::new();
    let mut commits = TopicPartitionList::new();
    for elem in partitions.elements() {
        let (topic, partition) = (elem.topic(), elem.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        let current = committed.find_partition(topic, partition).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        let at_time = match by_time.as_ref().and_then(|t| t.find_partition(topic, partition)).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let target = new_offset(&request.target, current, (low, high), at_time);
        let plan = PartitionPlan {
            topic: topic.to_owned(),
            partition,
            current,
            target,
            to_deliver: high - target,
            committed: None,
        };
        progress(&plan);
        commits.add_partition_offset(topic, partition, Offset::Offset(target))?;
        plans.push(plan);
    }
    if !request.dry_run {
        consumer.commit(&commits, CommitMode::Sync)?;
        let now = consumer.committed_offsets(commits, TIMEOUT)?;
        for plan in &mut plans {
            plan.committed = match now.find_partition(&plan.topic, plan.partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
        }
        // Every partition is checked, so that the error names all that did not move.
        let misses: Vec<PartitionPlan> = plans.iter().filter(|p| p.committed != Some(p.target)).cloned().collect();
        if !misses.is_empty() {
            return Err(ReplayError::NotCommitted(misses));
        }
    }
    Ok(plans)
}

/// Where a partition resumes: `current` is the group's commit, `(low, high)`
/// the partition's watermarks, `at_time` the first offset at or after a
/// `Datetime` target. Never past where the group would resume anyway
/// (`current`, or `low` without a commit, as the forwarder reads from the
/// earliest): moving forward would skip events never delivered.
fn new_offset(target: &Target, current: Option<i64>, (low, high): (i64, i64), at_time: Option<i64>) -> i64 {
    // A commit outside the log (truncated, recreated topic) is not where the
    // forwarder resumes: it reads from the oldest record then.
    let resume = current.filter(|c| (low..=high).contains(c)).unwrap_or(low);
    let wanted = match target {
        Target::Earliest => low,
        Target::ShiftBy(n) => resume.saturating_add(*n),
        Target::Datetime(_) => at_time.unwrap_or(high),
    };
    wanted.min(resume).clamp(low, high)
}

/// Runs [`replay`] off the runtime, printing the plan and the result.
pub async fn run_and_print(config: Config, request: ReplayRequest) -> Result<(), ReplayError> {
    let config = Arc::new(config);
    let dry_run = request.dry_run;
    let printed = tokio::task::spawn_blocking(move || {
        println!("{:<40} {:>9} {:>12} {:>12} {:>12}", "topic", "partition", "committed", "new", "to deliver");
        replay(&config, &request, |p| {
            let current = p.current.map_or_else(|| "-".to_owned(), |c| c.to_string());
            println!("{:<40} {:>9} {:>12} {:>12} {:>12}", p.topic, p.partition, current, p.target, p.to_deliver);
        })
    })
    .await;
    let plans = printed.map_err(|e| ReplayError::Task(e.to_string()))??;
    let total: i64 = plans.iter().map(|p| p.to_deliver).sum();
    if dry_run {
        println!("dry run: nothing committed; {total} event(s) would be delivered from the new offsets");
    } else {
        println!("\nresult, read back from Kafka:");
        println!("{:<40} {:>9} {:>12}", "topic", "partition", "committed");
        for p in &plans {
            let committed = p.committed.map_or_else(|| "-".to_owned(), |c| c.to_string());
            println!("{:<40} {:>9} {:>12}", p.topic, p.partition, committed);
        }
        println!(
            "committed: {} partition(s); the forwarders deliver {total} event(s) from there once started",
            plans.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_in_rfc3339_or_kafkas_form() {
        assert_eq!(Target::datetime("1970-01-01T00:00:01Z").expect("rfc3339"), Target::Datetime(1000));
        assert_eq!(Target::datetime("1970-01-01T00:00:01.500").expect("kafka"), Target::Datetime(1500));
        assert_eq!(Target::datetime("1970-01-01T01:00:00+01:00").expect("offset"), Target::Datetime(0));
        assert!(Target::datetime("yesterday").is_err());
    }

    #[test]
    fn a_replay_never_moves_a_partition_forward() {
        let (low, high) = (10, 100);
        assert_eq!(new_offset(&Target::Earliest, Some(50), (low, high), None), 10);
        assert_eq!(new_offset(&Target::ShiftBy(-20), Some(50), (low, high), None), 30);
        assert_eq!(new_offset(&Target::ShiftBy(-90), Some(50), (low, high), None), 10, "not below the oldest");
        assert_eq!(new_offset(&Target::Datetime(0), Some(50), (low, high), Some(40)), 40);
        assert_eq!(new_offset(&Target::Datetime(0), Some(50), (low, high), Some(70)), 50, "backlog before T kept");
        assert_eq!(new_offset(&Target::Datetime(0), Some(50), (low, high), None), 50, "nothing after T: kept");
        assert_eq!(
            new_offset(&Target::Datetime(0), None, (low, high), Some(70)),
            10,
            "no commit reads from the oldest"
        );
        assert_eq!(new_offset(&Target::Earliest, Some(500), (low, high), None), 10, "a commit past the end");
        assert_eq!(new_offset(&Target::ShiftBy(-20), Some(500), (low, high), None), 10, "resumes at the oldest");
        assert_eq!(new_offset(&Target::Datetime(0), Some(500), (low, high), Some(70)), 10);
        assert!(matches!(Target::shift_by(5), Err(ReplayError::Forward(5))));
        assert_eq!(Target::shift_by(-5).expect("back"), Target::ShiftBy(-5));
    }

    #[test]
    fn a_failed_commit_names_every_partition_that_did_not_move() {
        let plan = |partition, committed| PartitionPlan {
            topic: "cyclops-events-7".into(),
            partition,
            current: Some(5),
            target: 2,
            to_deliver: 8,
            committed,
        };
        let error = ReplayError::NotCommitted(vec![plan(0, Some(5)), plan(3, None)]).to_string();
        assert_eq!(
            error,
            "2 partition(s) not committed as planned: cyclops-events-7 partition 0 has 5, not 2; \
             cyclops-events-7 partition 3 has nothing, not 2"
        );
    }
}
