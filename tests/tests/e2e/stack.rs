//! The stack is real: Kafka takes, serves and commits; Redis answers.

use std::time::Duration;

use cyclops_tests::{kafka_brokers, redis_url, unique};
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().expect("admin client")
}

fn consumer(group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer")
}

#[tokio::test]
async fn kafka_produces_consumes_and_commits_for_a_group() {
    let topic = unique("stack-roundtrip");
    let group = unique("stack-group");
    let admin = admin();
    let created = admin
        .create_topics(&[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create_topics request");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for i in 0..6 {
        let payload = format!("event-{i}");
        let headers = OwnedHeaders::new().insert(Header { key: "n", value: Some(&i.to_string()) });
        let key = format!("k{i}");
        let record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
        producer.send(record, TIMEOUT).await.expect("acknowledged by Kafka");
    }

    let consumer = consumer(&group);
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = Vec::new();
    let mut stream = consumer.stream();
    while seen.len() < 6 {
        let message = tokio::time::timeout(TIMEOUT, stream.next()).await.expect("a message in time").expect("stream");
        let message = message.expect("no consume error");
        let n =
            message.headers().and_then(|h| h.iter().find(|h| h.key == "n")).and_then(|h| h.value).map(<[u8]>::to_vec);
        let payload = String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf8");
        assert_eq!(payload, format!("event-{}", String::from_utf8(n.expect("header n")).expect("utf8")));
        seen.push(payload);
        consumer.store_offset_from_message(&message).ok();
        consumer.commit_message(&message, CommitMode::Sync).expect("commit");
    }
    drop(stream);
    seen.sort();
    assert_eq!(seen, (0..6).map(|i| format!("event-{i}")).collect::<Vec<_>>());

    // Read the group's committed offsets back through a fresh member.
    let reader = self::consumer(&group);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    wanted.add_partition(&topic, 1);
    let committed = reader.committed_offsets(wanted, TIMEOUT).expect("committed offsets");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!("partition {} has no commit: {other:?}", e.partition()),
        })
        .sum();
    assert_eq!(total, 6, "the commits of all six records were stored for the group");

    admin.delete_topics(&[&topic], &AdminOptions::new()).await.expect("delete topic");
}

/// Tests read topics that the services create (the dead-letter topic, say),
/// and may subscribe first: the reader must wait for the topic, not give up
/// on the broker's "unknown topic" answer.
#[tokio::test]
async fn a_reader_waits_for_a_topic_created_after_it_subscribed() {
    let topic = unique("stack-late-topic");
    let reader = tokio::spawn({
        let topic = topic.clone();
        async move { cyclops_tests::kafka::read_records(&topic, 1, TIMEOUT).await }
    });
    // Long enough for the reader's first metadata answer to say "unknown".
    // A sleep, not a poll: nothing outside the reader shows that moment (a
    // consumer subscribed to a missing topic joins no group; a poll for its
    // member was tried and never saw one).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cyclops_tests::kafka::holds_no_records(&topic).await, "the topic does not exist yet");
    cyclops_tests::kafka::create_topic(&topic, 1).await.expect("topic");
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().expect("producer");
    producer.send(FutureRecord::to(&topic).key("k").payload("late"), Duration::from_secs(10)).await.expect("produced");
    let records = reader.await.expect("reader task");
    assert_eq!(records.len(), 1, "the record written after the topic appeared is read");
    assert_eq!(records[0].payload, b"late");
}

/// The "nothing was stored" checks of other tests count records by
/// watermarks: they must see a record as soon as Kafka acknowledged it.
#[tokio::test]
async fn record_count_sees_every_acknowledged_record_at_once() {
    use cyclops_tests::kafka::{create_topic, holds_no_records, record_count};
    let topic = unique("stack-count");
    assert!(holds_no_records(&topic).await, "a topic that does not exist holds nothing");
    create_topic(&topic, 2).await.expect("topic");
    // A new topic's partitions answer once their leader has them.
    let empty = cyclops_tests::wait_for(TIMEOUT, "the new topic's watermarks", || async {
        (record_count(&topic).await == Some(0)).then_some(())
    })
    .await;
    assert!(empty.is_ok(), "{empty:?}");
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).set("acks", "all").create().expect("producer");
    for partition in [0, 1, 1] {
        let record = FutureRecord::to(&topic).key("k").payload("v").partition(partition);
        producer.send(record, TIMEOUT).await.expect("acknowledged");
    }
    assert_eq!(record_count(&topic).await, Some(3));
    assert!(!holds_no_records(&topic).await);
}

#[tokio::test]
async fn redis_round_trips_with_expiry() {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis connects");
    let key = unique("stack-redis");
    let () = redis::cmd("SET").arg(&key).arg("value").arg("PX").arg(60_000).query_async(&mut conn).await.expect("SET");
    let value: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.expect("GET");
    assert_eq!(value, "value");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 60_000, "expiry set: {ttl}");
    let deleted: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.expect("DEL");
    assert_eq!(deleted, 1);
    let exists: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.expect("EXISTS");
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn postgres_answers_and_keeps_a_row() {
    let (client, connection) = tokio_postgres::connect(&cyclops_tests::postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("postgres connects");
    tokio::spawn(connection);
    let table = unique("stack_pg").replace('-', "_");
    client.batch_execute(&format!("CREATE TEMP TABLE {table} (id int primary key, name text)")).await.expect("create");
    client.execute(&format!("INSERT INTO {table} VALUES ($1, $2)"), &[&1_i32, &"cyclops"]).await.expect("insert");
    let row = client.query_one(&format!("SELECT name FROM {table} WHERE id = $1"), &[&1_i32]).await.expect("select");
    assert_eq!(row.get::<_, String>(0), "cyclops");
}
