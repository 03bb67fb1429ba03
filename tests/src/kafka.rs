//! Reading what ingest stored, straight from Kafka.

use cyclops_common::ids::{EventId, ProjectId};
use std::time::Duration;

use cyclops_common::record::RecordHeaders;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;

use crate::{kafka_brokers, unique};

/// One stored record.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: RecordHeaders,
    /// The headers exactly as written: name, value (lossy UTF-8), in order.
    pub raw_headers: Vec<(String, String)>,
}

/// Reads records from `topic` (from its start) until `n` arrived or
/// `deadline` passed; returns what it got. A record whose headers break the
/// contract is returned too, with `headers` defaulted, so that a test sees it.
pub async fn read_records(topic: &str, n: usize, deadline: Duration) -> Vec<Stored> {
    read_records_from(&kafka_brokers(), topic, n, deadline).await
}

/// [`read_records`] from the cluster at `brokers` (a test's own broker).
pub async fn read_records_from(brokers: &str, topic: &str, n: usize, deadline: Duration) -> Vec<Stored> {
    read_until(brokers, topic, deadline, |out| out.len() >= n).await
}

/// The keys read from `topic` at `brokers` until every one of `want` is
/// among them or `deadline` passed. Duplicates are allowed (a spooled event
/// Kafka also took late), so a count of records cannot say this.
pub async fn read_keys_until(
    brokers: &str,
    topic: &str,
    want: &std::collections::HashSet<String>,
    deadline: Duration,
) -> std::collections::HashSet<String> {
    let key = |r: &Stored| String::from_utf8_lossy(&r.key).into_owned();
    let mut seen = std::collections::HashSet::new();
    let records = read_until(brokers, topic, deadline, |out| {
        if let Some(last) = out.last() {
            seen.insert(key(last));
        }
        want.is_subset(&seen)
    })
    .await;
    records.iter().map(key).collect()
}

/// Reads from the start of `topic` until `done` says so, or `deadline`.
async fn read_until(
    brokers: &str,
    topic: &str,
    deadline: Duration,
    mut done: impl FnMut(&[Stored]) -> bool,
) -> Vec<Stored> {
    let Ok(consumer) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // A topic created after the subscription (the dead-letter topic,
        // say) is noticed within this.
        .set("topic.metadata.refresh.interval.ms", "500")
        .create::<StreamConsumer>()
    else {
        return Vec::new();
    };
    if consumer.subscribe(&[topic]).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    while !done(&out) {
        let message = match tokio::time::timeout_at(end, consumer.recv()).await {
            Ok(Ok(message)) => message,
            // "Unknown topic" while the topic is being created, a broker
            // reconnecting: transient, and the deadline bounds the wait.
            Ok(Err(_)) => continue,
            Err(_) => break,
        };
        use rdkafka::message::Headers;
        let raw_headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let headers = RecordHeaders::from_kafka(message.headers()).unwrap_or_else(|_| RecordHeaders {
            method: String::new(),
            path: String::new(),
            query: None,
            content_type: None,
            content_encoding: None,
            auth: None,
            event_id: EventId::new(""),
            project_id: ProjectId::new(0),
            received_at_ms: 0,
            client_ip: None,
            user_agent: None,
            fingerprint: None,
            categories: Vec::new(),
        });
        out.push(Stored {
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
            raw_headers,
        });
    }
    out
}

/// How many records `topic` holds: the sum over its partitions of high
/// minus low watermark (0 for a topic that does not exist; `None` when
/// Kafka cannot be asked). Exact at once for events ingest answered (it
/// answers after Kafka acknowledged them), where reading "for a while"
/// would pass whenever the reader was slow to join its group.
pub async fn record_count(topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().ok()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).ok()?;
    let found = metadata.topics().first()?;
    match found.error() {
        None => {}
        // A topic nothing was ever written to; any other error is not "empty".
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Some(0),
        Some(_) => return None,
    }
    let mut count = 0;
    for partition in found.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10)).ok()?;
        count += high - low;
    }
    Some(count)
}

/// Whether `topic` holds no record (see [`record_count`]).
pub async fn holds_no_records(topic: &str) -> bool {
    record_count(topic).await == Some(0)
}

/// Creates `topic` with `partitions` partitions (an existing one is fine).
pub async fn create_topic(topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics(&[new], &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => anyhow::bail!("cannot create {topic}: {code}"),
        }
    }
    Ok(())
}

/// The body of backlog event `n` of `project`: a store event whose message
/// names both, so that the fake Sentry's records tell them apart.
pub fn backlog_body(project: u64, n: usize) -> String {
    format!(r#"{{"event_id":"{}","message":"p{project}-n{n}-end"}}"#, crate::event_id())
}

/// Writes `count` store events of `project` straight to its topic
/// (`{prefix}{project}`, created with `partitions` partitions), as ingest
/// would have, spread round-robin over the partitions, event `n` with
/// [`backlog_body`]`(project, n)`. Returns the bodies in order.
pub async fn produce_backlog(
    prefix: &str,
    project: u64,
    key: &str,
    count: usize,
    partitions: i32,
) -> anyhow::Result<Vec<String>> {
    produce_backlog_range(prefix, project, key, 0..count, partitions, None).await
}

/// [`produce_backlog`] for the events numbered `range`, with Kafka
/// timestamps `timestamp_ms` (Unix ms) when given, else the time of writing.
pub async fn produce_backlog_range(
    prefix: &str,
    project: u64,
    key: &str,
    range: std::ops::Range<usize>,
    partitions: i32,
    timestamp_ms: Option<i64>,
) -> anyhow::Result<Vec<String>> {
    let count = range.len();
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topic = cyclops_common::record::topic_name(prefix, ProjectId::new(project));
    create_topic(&topic, partitions).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()?;
    // The body is made once (it holds a random event id): a record sent
    // again must be the same event.
    let record = |n: usize, event_id: &str| {
        let partition = i32::try_from(n).unwrap_or(0) % partitions;
        (partition, store_headers(project, key, event_id, "error").to_kafka())
    };
    let mut records = Vec::with_capacity(count);
    let mut sends = Vec::with_capacity(count);
    for n in range {
        let event_id = crate::event_id();
        let body = backlog_body(project, n);
        let (partition, headers) = record(n, &event_id);
        let mut out = FutureRecord::to(&topic).key(&event_id).payload(&body).partition(partition).headers(headers);
        if let Some(ms) = timestamp_ms {
            out = out.timestamp(ms);
        }
        sends.push(producer.send_result(out).map_err(|(e, _)| e)?);
        records.push((n, event_id, body));
    }
    for (send, (n, event_id, body)) in sends.into_iter().zip(&records) {
        let sent = send.await?.map_err(|(e, _)| e)?;
        // A fresh partition can lose a record librdkafka reports written
        // without an offset (`cyclops_common::kafka::written`): send it again.
        if !cyclops_common::kafka::written(&sent) {
            let (partition, headers) = record(*n, event_id);
            let mut out = FutureRecord::to(&topic).key(event_id).payload(body).partition(partition).headers(headers);
            if let Some(ms) = timestamp_ms {
                out = out.timestamp(ms);
            }
            let again = producer.send(out, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
            anyhow::ensure!(cyclops_common::kafka::written(&again), "kafka did not confirm a backlog record twice");
        }
    }
    let bodies = records.into_iter().map(|(_, _, body)| body).collect();
    Ok(bodies)
}

/// The headers ingest would write for a store event of `project`, sent
/// with `key`, of data `category`.
pub fn store_headers(project: u64, key: &str, event_id: &str, category: &str) -> RecordHeaders {
    RecordHeaders {
        method: "POST".into(),
        path: format!("/api/{project}/store/"),
        query: None,
        content_type: Some("application/json".into()),
        content_encoding: None,
        auth: Some(crate::sentry_auth(key)),
        event_id: EventId::new(event_id),
        project_id: ProjectId::new(project),
        received_at_ms: 0,
        client_ip: Some("127.0.0.1".into()),
        user_agent: Some("cyclops-tests".into()),
        fingerprint: None,
        categories: vec![category.into()],
    }
}

/// Writes one record with `headers` and `body` to `topic` (created if missing).
pub async fn produce_one(topic: &str, headers: &RecordHeaders, body: &[u8]) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    create_topic(topic, 1).await?;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create()?;
    let record = FutureRecord::to(topic).key(headers.event_id.as_str()).payload(body).headers(headers.to_kafka());
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
    Ok(())
}
