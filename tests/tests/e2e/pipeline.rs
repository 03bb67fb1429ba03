//! SDK → ingest → Kafka → forwarder → Sentry, through the real stack.

use cyclops_common::ids::ProjectId;
use std::time::Duration;

use cyclops_common::config::{Config, ProjectKey};
use cyclops_common::record::{RecordHeaders, topic_name};
use cyclops_tests::fake_sentry::{FakeSentry, Recorded, Rule};
use cyclops_tests::{TestService, kafka_brokers, spawn_forwarder, spawn_ingest, test_config, unique, wait_for};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const PROJECT: u64 = 42;
const WAIT: Duration = Duration::from_secs(60);

fn config_with_project(sentry: Option<&FakeSentry>) -> Config {
    let mut config = test_config();
    config.projects.push(ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None });
    config.kafka.topic_partitions = 2;
    if let Some(sentry) = sentry {
        config.sentry.base_url = sentry.url();
    }
    config
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("write");
    encoder.finish().expect("finish")
}

fn auth_header(key: &str) -> String {
    format!("Sentry sentry_version=7, sentry_key={key}, sentry_client=cyclops-tests/1")
}

async fn post(ingest: &TestService, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(ingest.url(path)).body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.expect("request")
}

async fn wait_for_requests(sentry: &FakeSentry, n: usize) -> Vec<Recorded> {
    wait_for(WAIT, &format!("{n} request(s) at the fake Sentry"), || async {
        let got = sentry.requests();
        (got.len() >= n).then_some(got)
    })
    .await
    .expect("delivered")
}

#[tokio::test]
async fn accepted_events_reach_sentry_with_body_and_auth_intact() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let config = config_with_project(Some(&sentry));
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");

    let event_id = uuid::Uuid::new_v4().simple().to_string();
    let store_body = format!(r#"{{"event_id":"{event_id}","message":"boom","level":"error"}}"#).into_bytes();
    let auth = auth_header(KEY);
    let response = post(
        &ingest,
        &format!("/api/{PROJECT}/store/"),
        &[("x-sentry-auth", &auth), ("content-type", "application/json"), ("user-agent", "sentry.python/2.0")],
        store_body.clone(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cyclops-status"], "PROCESSED");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["id"], event_id.as_str());

    // A gzipped envelope authenticated in the query: stored and delivered compressed, as sent.
    let envelope_id = uuid::Uuid::new_v4().simple().to_string();
    let envelope_body = gzip(
        format!("{{\"event_id\":\"{envelope_id}\"}}\n{{\"type\":\"event\"}}\n{{\"message\":\"from an envelope\"}}\n")
            .as_bytes(),
    );
    let query = format!("sentry_key={KEY}&sentry_version=7");
    let response = post(
        &ingest,
        &format!("/api/{PROJECT}/envelope/?{query}"),
        &[("content-type", "application/x-sentry-envelope"), ("content-encoding", "gzip")],
        envelope_body.clone(),
    )
    .await;
    assert_eq!(response.status(), 200);

    let requests = wait_for_requests(&sentry, 2).await;
    let store = requests.iter().find(|r| r.path.ends_with("/store/")).expect("store delivered");
    assert_eq!(store.method, "POST");
    assert_eq!(store.path, format!("/api/{PROJECT}/store/"));
    assert_eq!(store.body.as_ref(), store_body.as_slice(), "body as sent");
    assert_eq!(store.header("x-sentry-auth"), Some(auth.as_str()));
    assert_eq!(store.header("content-type"), Some("application/json"));
    assert_eq!(store.header("user-agent"), Some("sentry.python/2.0"));
    assert_eq!(store.header("x-forwarded-for"), Some("127.0.0.1"));

    let envelope = requests.iter().find(|r| r.path.ends_with("/envelope/")).expect("envelope delivered");
    assert_eq!(envelope.body.as_ref(), envelope_body.as_slice(), "compressed body stays as it came");
    assert_eq!(envelope.query.as_deref(), Some(query.as_str()));
    assert_eq!(envelope.header("content-encoding"), Some("gzip"));
    assert_eq!(envelope.header("x-sentry-auth"), None, "query auth stays in the query");

    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn a_200_means_the_record_is_in_kafka() {
    let config = config_with_project(None);
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let body = br#"{"message":"no id given"}"#.to_vec();
    let response =
        post(&ingest, &format!("/api/{PROJECT}/store/"), &[("x-sentry-auth", &auth_header(KEY))], body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    let event_id = answer["id"].as_str().expect("an id is assigned").to_owned();
    assert_eq!(event_id.len(), 32);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = tokio::time::timeout(WAIT, consumer.recv()).await.expect("in time").expect("a record");
    assert_eq!(message.key(), Some(event_id.as_bytes()));
    // The SDK sent no id: the stored event carries the one ingest answered with,
    // so that Sentry deduplicates a copy delivered twice.
    let stored: Value = serde_json::from_slice(message.payload().expect("payload")).expect("json");
    assert_eq!(stored, serde_json::json!({"message": "no id given", "event_id": event_id}));
    let headers = RecordHeaders::from_kafka(message.headers()).expect("contract headers");
    assert_eq!(headers.event_id, event_id);
    assert_eq!(headers.project_id.get(), PROJECT);
    assert_eq!(headers.path, format!("/api/{PROJECT}/store/"));
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn bad_submissions_get_sentrys_answers() {
    let ingest = spawn_ingest(config_with_project(None)).await.expect("ingest");
    let store = format!("/api/{PROJECT}/store/");
    let good = auth_header(KEY);
    let other_key = auth_header("ffffffffffffffffffffffffffffffff");
    let event = br#"{"message":"x"}"#.to_vec();
    let query_store = format!("{store}?sentry_key={KEY}");
    // (what, path, headers, body, expected status)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("missing auth", store.clone(), vec![], event.clone(), 401),
        ("two auth sources", query_store, vec![("x-sentry-auth", &good)], event.clone(), 401),
        ("unknown key", store.clone(), vec![("x-sentry-auth", &other_key)], event.clone(), 403),
        ("key of another project", "/api/7/store/".into(), vec![("x-sentry-auth", &good)], event.clone(), 403),
        ("non-numeric project", "/api/abc/store/".into(), vec![("x-sentry-auth", &good)], event.clone(), 400),
        ("empty body", store.clone(), vec![("x-sentry-auth", &good)], vec![], 400),
        ("invalid json", store.clone(), vec![("x-sentry-auth", &good)], b"{nope".to_vec(), 400),
        (
            "invalid envelope",
            format!("/api/{PROJECT}/envelope/"),
            vec![("x-sentry-auth", &good)],
            b"nope\n".to_vec(),
            400,
        ),
    ];
    for (what, path, headers, body, status) in cases {
        let response = post(&ingest, &path, &headers, body).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        let detail: Value = response.json().await.expect("json body");
        assert!(detail["detail"].is_string(), "{what}: {detail}");
    }
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn an_envelope_authenticated_by_its_dsn_is_accepted() {
    let ingest = spawn_ingest(config_with_project(None)).await.expect("ingest");
    let body = format!("{{\"dsn\":\"http://{KEY}@example.com/{PROJECT}\"}}\n{{\"type\":\"session\"}}\n{{}}\n");
    let response = post(&ingest, &format!("/api/{PROJECT}/envelope/"), &[], body.into_bytes()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json"), serde_json::json!({}), "no event, no id");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn sentry_errors_are_retried_until_delivered() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.script(&[503, 502, 429]);
    let config = config_with_project(Some(&sentry));
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let body = br#"{"event_id":"5b3d24c53ebd4e489c3e10b3b3c09152","message":"retry me"}"#.to_vec();
    let response =
        post(&ingest, &format!("/api/{PROJECT}/store/"), &[("x-sentry-auth", &auth_header(KEY))], body.clone()).await;
    assert_eq!(response.status(), 200);
    let requests = wait_for_requests(&sentry, 4).await;
    assert!(requests.iter().all(|r| r.body.as_ref() == body.as_slice()), "the same event each time");
    // Once Sentry said 200, the event is done: nothing more is sent.
    let more =
        wait_for(Duration::from_secs(2), "a fifth request", || async { (sentry.requests().len() > 4).then_some(()) })
            .await;
    assert!(more.is_err(), "sent again after a 200");
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn without_kafka_and_with_the_spool_off_the_sdk_gets_503_and_retry_after_never_200() {
    let mut config = config_with_project(None);
    config.ingest.spool.enabled = false;
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    config.kafka.brokers = format!("127.0.0.1:{unused}");
    config.ingest.produce_timeout_ms = 500;
    let ingest = spawn_ingest(config).await.expect("ingest");
    let response =
        post(&ingest, &format!("/api/{PROJECT}/store/"), &[("x-sentry-auth", &auth_header(KEY))], b"{}".to_vec()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn a_restarted_forwarder_resumes_after_what_was_delivered() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let config = config_with_project(Some(&sentry));
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let store = format!("/api/{PROJECT}/store/");
    let auth = auth_header(KEY);

    let first = spawn_forwarder(config.clone()).await.expect("forwarder");
    assert_eq!(
        post(&ingest, &store, &[("x-sentry-auth", &auth)], br#"{"message":"one"}"#.to_vec()).await.status(),
        200
    );
    wait_for_requests(&sentry, 1).await;
    first.stop().await.expect("first forwarder stops");

    let second = spawn_forwarder(config).await.expect("second forwarder, same group");
    assert_eq!(
        post(&ingest, &store, &[("x-sentry-auth", &auth)], br#"{"message":"two"}"#.to_vec()).await.status(),
        200
    );
    let requests = wait_for_requests(&sentry, 2).await;
    let messages: Vec<Value> =
        requests.iter().map(|r| serde_json::from_slice::<Value>(&r.body).expect("json")["message"].clone()).collect();
    assert_eq!(messages, ["one", "two"]);
    // Give a wrongly re-sent "one" the time to show up behind "two".
    let resent =
        wait_for(Duration::from_secs(3), "a third request", || async { (sentry.requests().len() > 2).then_some(()) })
            .await;
    assert!(resent.is_err(), "the committed event was sent again: {:?}", sentry.requests().len());
    second.stop().await.expect("second forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn events_sentry_refuses_go_to_the_dead_letter_topic_and_the_rest_flows() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.rule(Rule::body("sentry says 400", 400));
    let config = config_with_project(Some(&sentry));
    let deadletter = config.deadletter_topic();
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config).await.expect("forwarder");
    let store = format!("/api/{PROJECT}/store/");
    let auth = auth_header(KEY);
    let refused = br#"{"event_id":"0badbadbadbadbadbadbadbadbadbad0","message":"sentry says 400"}"#.to_vec();
    assert_eq!(post(&ingest, &store, &[("x-sentry-auth", &auth)], refused.clone()).await.status(), 200);
    let fine = br#"{"event_id":"00000000000000000000000000000001","message":"fine"}"#.to_vec();
    assert_eq!(post(&ingest, &store, &[("x-sentry-auth", &auth)], fine.clone()).await.status(), 200);

    let requests = wait_for_requests(&sentry, 2).await;
    assert!(
        requests.iter().any(|r| r.body.as_ref() == fine.as_slice() && r.status == 200),
        "the other event is not held up by the refused one"
    );
    let dead = cyclops_tests::kafka::read_records(&deadletter, 1, WAIT).await;
    assert_eq!(dead.len(), 1, "the refused event is in {deadletter}");
    assert_eq!(dead[0].payload, refused, "as stored");
    assert_eq!(dead[0].key, b"0badbadbadbadbadbadbadbadbadbad0");
    let header = |name: &str| dead[0].raw_headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("cyclops-dlq-status").as_deref(), Some("400"));
    assert_eq!(header("cyclops-dlq-reason").as_deref(), Some("sentry answered 400"));
    assert!(header("cyclops-dlq-source-topic").is_some_and(|t| t.ends_with(&format!("-{PROJECT}"))));
    assert_eq!(dead[0].headers.event_id, "0badbadbadbadbadbadbadbadbadbad0", "the original headers are kept");
    let more =
        wait_for(Duration::from_secs(2), "a third request", || async { (sentry.requests().len() > 2).then_some(()) })
            .await;
    assert!(more.is_err(), "a refused event is not sent again");
    assert_eq!(sentry.requests().iter().filter(|r| r.body.as_ref() == refused.as_slice()).count(), 1);
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn a_record_larger_than_kafkas_default_limit_is_dead_lettered_whole() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    sentry.script(&[413]);
    let config = config_with_project(Some(&sentry));
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    // 3 MiB: past the broker's 1 MiB default for a topic's records, well
    // within the 20 MiB envelope ingest takes.
    let event_id = uuid::Uuid::new_v4().simple().to_string();
    let attachment = "x".repeat(3 << 20);
    let envelope = format!(
        "{{\"event_id\":\"{event_id}\"}}\n{{\"type\":\"event\"}}\n{{\"message\":\"big\"}}\n\
         {{\"type\":\"attachment\",\"length\":{},\"filename\":\"core.txt\"}}\n{attachment}\n",
        attachment.len()
    )
    .into_bytes();
    let auth = auth_header(KEY);
    let path = format!("/api/{PROJECT}/envelope/");
    let answer = post(&ingest, &path, &[("x-sentry-auth", &auth)], envelope.clone()).await;
    assert_eq!(answer.status(), 200);

    let dead = cyclops_tests::kafka::read_records(&config.deadletter_topic(), 1, WAIT).await;
    assert_eq!(dead.len(), 1, "Sentry's 413 sends the record to the dead letters");
    assert_eq!(dead[0].payload, envelope, "whole, as stored");
    let status = dead[0].raw_headers.iter().find(|(k, _)| k == "cyclops-dlq-status").map(|(_, v)| v.clone());
    assert_eq!(status.as_deref(), Some("413"));
    let sent = sentry.requests();
    assert!(
        sent.iter().any(|r| r.status == 413 && r.body.len() == envelope.len()),
        "Sentry saw it whole and refused it"
    );
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn a_record_that_cannot_be_replayed_is_dead_lettered_not_lost() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let config = config_with_project(Some(&sentry));
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().expect("admin");
    admin
        .create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("topic");
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().expect("producer");
    producer
        .send(FutureRecord::to(&topic).key("no-headers").payload("written by something else"), Duration::from_secs(10))
        .await
        .expect("produced");
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    let dead = cyclops_tests::kafka::read_records(&config.deadletter_topic(), 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, b"written by something else");
    let reason = dead[0].raw_headers.iter().find(|(k, _)| k == "cyclops-dlq-reason").map(|(_, v)| v.clone());
    assert!(reason.is_some_and(|r| r.starts_with("malformed:")), "the reason says why");
    assert!(sentry.requests().is_empty(), "nothing unreplayable reaches Sentry");
    forwarder.stop().await.expect("forwarder stops");
}
