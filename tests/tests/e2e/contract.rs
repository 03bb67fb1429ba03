//! Every record ingest produces matches `schemas/record-v2.schema.json`, and
//! so does the documented example.

use cyclops_common::ids::ProjectId;
use std::time::Duration;

use cyclops_common::config::ProjectKey;
use cyclops_common::record::topic_name;
use cyclops_tests::kafka::read_records;
use cyclops_tests::{event_id, gzip, sentry_auth, spawn_ingest, test_config};
use serde_json::{Map, Value};

const KEY: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const PROJECT: u64 = 31;

/// A path, its headers and its body.
type Submission<'a> = (String, Vec<(&'a str, String)>, Vec<u8>);

fn schema() -> jsonschema::Validator {
    let text = include_str!("../../../schemas/record-v2.schema.json");
    let schema: Value = serde_json::from_str(text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// The headers of a record as written, as the schema sees them: name → value.
fn as_object(raw: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (key, value) in raw {
        let previous = map.insert(key.clone(), Value::String(value.clone()));
        assert!(previous.is_none(), "header {key} written twice");
    }
    Value::Object(map)
}

fn assert_valid(validator: &jsonschema::Validator, headers: &Value) {
    let errors: Vec<String> = validator.iter_errors(headers).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{headers}\n{errors:#?}");
}

#[test]
fn the_example_record_follows_the_contract() {
    let example: Value = serde_json::from_str(include_str!("../../../schemas/example-record.json")).expect("JSON");
    assert_valid(&schema(), &example["headers"]);
    assert_eq!(example["key"], example["headers"]["cyclops-event-id"]);
    let value = example["value"].as_str().expect("value");
    let header: Value = serde_json::from_str(value.lines().next().expect("line")).expect("envelope header");
    assert_eq!(header["event_id"], example["key"]);
    let event: Value = serde_json::from_str(value.lines().nth(2).expect("event line")).expect("event");
    assert_eq!(
        example["headers"]["cyclops-fingerprint"],
        cyclops_ingest::flood::fingerprint::of_event(&event).as_str(),
        "the example's fingerprint is its event's"
    );
}

#[test]
fn the_schema_rejects_what_the_contract_forbids() {
    let validator = schema();
    let good = serde_json::json!({
        "cyclops-contract": "2", "cyclops-method": "POST", "cyclops-path": "/api/1/store/",
        "cyclops-event-id": "0123456789abcdef0123456789abcdef", "cyclops-project-id": "1",
        "cyclops-received-at-ms": "1"
    });
    assert!(validator.is_valid(&good));
    for (key, bad) in [
        ("cyclops-contract", "3"),
        ("cyclops-categories", "error,,transaction"),
        ("cyclops-categories", "Error"),
        ("cyclops-path", "/admin/"),
        ("cyclops-path", "/api/envelope/"),
        ("cyclops-path", "/api/%2e%2e/admin/"),
        ("cyclops-auth", "Bearer abc"),
        ("cyclops-auth", "Sentry sentry_key=k\r\nX-Injected: 1"),
        ("cyclops-user-agent", "sdk\nX-Injected: 1"),
        ("cyclops-event-id", "0123456789ABCDEF0123456789ABCDEF"),
        ("cyclops-content-encoding", "x-gzip"),
        ("cyclops-unknown", "x"),
    ] {
        let mut record = good.clone();
        record[key] = Value::String(bad.into());
        assert!(!validator.is_valid(&record), "{key} = {bad} must be refused");
    }
}

#[tokio::test]
async fn every_record_ingest_produces_follows_the_contract() {
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let client = reqwest::Client::new();
    let auth = sentry_auth(KEY);
    let id = event_id();
    let bodies: Vec<Submission> = vec![
        (format!("/api/{PROJECT}/store/"), vec![("x-sentry-auth", auth.clone())], br#"{"message":"no id"}"#.to_vec()),
        (
            format!("/api/{PROJECT}/envelope/?sentry_key={KEY}&sentry_version=7"),
            vec![("content-encoding", "gzip".into()), ("user-agent", "sentry.javascript.browser/8.0.0".into())],
            gzip(format!("{{\"event_id\":\"{id}\"}}\n{{\"type\":\"event\"}}\n{{}}\n").as_bytes()),
        ),
        (
            format!("/api/{PROJECT}/envelope/?sentry_key={KEY}&sentry_version=7"),
            vec![],
            format!(
                "{{\"event_id\":\"{}\"}}\n{{\"type\":\"transaction\"}}\n{{\"type\":\"transaction\"}}\n\
                 {{\"type\":\"attachment\",\"length\":2}}\nhi\n{{\"type\":\"client_report\"}}\n{{}}\n",
                event_id()
            )
            .into_bytes(),
        ),
        (
            "/api/store/".into(),
            vec![("authorization", auth.clone()), ("content-type", "application/json".into())],
            br#"{"message":"legacy path"}"#.to_vec(),
        ),
    ];
    let n = bodies.len();
    for (path, headers, body) in bodies {
        let mut request = client.post(format!("http://{}{path}", ingest.addr)).body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        assert_eq!(request.send().await.expect("request").status(), 200, "{path}");
    }
    let beacon = format!(
        "http://{}/api/{PROJECT}/store/?sentry_key={KEY}&sentry_version=7&sentry_data=%7B%22message%22%3A%22b%22%7D",
        ingest.addr
    );
    assert_eq!(client.get(beacon).send().await.expect("beacon").status(), 200);

    let stored = read_records(&topic, n + 1, Duration::from_secs(30)).await;
    assert_eq!(stored.len(), n + 1);
    let validator = schema();
    for record in &stored {
        assert_valid(&validator, &as_object(&record.raw_headers));
        assert_eq!(record.key, record.headers.event_id.as_str().as_bytes(), "the key is the event id");
    }
    // What each record carries, for Sentry's per-category rate limits; the
    // fingerprint wherever there is an error event.
    let mut seen: Vec<(Vec<String>, bool)> =
        stored.iter().map(|r| (r.headers.categories.clone(), r.headers.fingerprint.is_some())).collect();
    seen.sort();
    let cats = |list: &[&str]| list.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    let mut expected = vec![
        (cats(&["error"]), true),
        (cats(&["error"]), true),
        (cats(&["error"]), true),
        (cats(&["error"]), true),
        (cats(&["transaction", "attachment", "internal"]), false),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    ingest.stop().await.expect("stops");
}

/// A change that makes a record break the contract.
type Forge = Box<dyn Fn(&mut cyclops_common::record::RecordHeaders)>;

/// Records anyone with write access to a project topic could forge: each
/// is dead-lettered with its reason, never sent, and the record after them
/// is delivered.
#[tokio::test]
async fn the_forwarder_replays_only_what_the_contract_allows() {
    use cyclops_tests::fake_sentry::FakeSentry;
    use cyclops_tests::kafka::{produce_one, store_headers};

    let sentry = FakeSentry::start().await.expect("fake sentry");
    let elsewhere = FakeSentry::start_on("127.0.0.3").await.expect("another host");
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    config.sentry.base_url = sentry.url();
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let store = format!("/api/{PROJECT}/store/");
    let other_host = format!("//{}/api/{PROJECT}/store/", elsewhere.addr);
    let forged: Vec<(&str, Forge)> = vec![
        ("path", Box::new(|r| r.path = "/api/%2e%2e/%2e%2e/admin".into())),
        ("path", Box::new(|r| r.path = "/api/.%2E/internal".into())),
        ("path", Box::new(move |r| r.path = other_host.clone())),
        ("project", Box::new(|r| r.path = "/api/1/store/".into())),
        ("method", Box::new(|r| r.method = "DELETE".into())),
        ("method", Box::new(|r| r.method = "CONNECT".into())),
        ("auth", Box::new(|r| r.auth = Some("Bearer stolen-token".into()))),
        ("control character", Box::new(|r| r.user_agent = Some("sdk\r\nX-Injected: 1".into()))),
    ];
    let mut forged_ids = Vec::new();
    for (_, forge) in &forged {
        let id = event_id();
        let mut headers = store_headers(PROJECT, KEY, &id, "error");
        forge(&mut headers);
        produce_one(&topic, &headers, format!(r#"{{"event_id":"{id}","message":"forged"}}"#).as_bytes())
            .await
            .expect("produce");
        forged_ids.push(id);
    }
    let good = event_id();
    let body = format!(r#"{{"event_id":"{good}","message":"fine"}}"#);
    produce_one(&topic, &store_headers(PROJECT, KEY, &good, "error"), body.as_bytes()).await.expect("produce");
    assert_eq!(store_headers(PROJECT, KEY, &good, "error").path, store);

    let forwarder = cyclops_tests::spawn_forwarder(config.clone()).await.expect("forwarder");
    let dead = read_records(&config.deadletter_topic(), forged.len(), Duration::from_secs(60)).await;
    assert_eq!(dead.len(), forged.len(), "every forged record is dead-lettered");
    for record in &dead {
        let reason = record.raw_headers.iter().find(|(k, _)| k == "cyclops-dlq-reason").map(|(_, v)| v.as_str());
        let i = forged_ids.iter().position(|id| record.headers.event_id == *id).expect("a forged record");
        let expected = forged[i].0;
        assert!(reason.is_some_and(|r| r.starts_with("contract:") && r.contains(expected)), "{expected}: {reason:?}");
    }
    cyclops_tests::wait_for(Duration::from_secs(30), "the good record delivered", || async {
        sentry.requests().iter().any(|r| r.body.as_ref() == body.as_bytes()).then_some(())
    })
    .await
    .expect("the record after the forged ones is delivered");
    let sent: Vec<String> = sentry.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(sent, [format!("POST {store}")], "only the good record reached sentry");
    assert!(elsewhere.requests().is_empty(), "no record reaches another host");
    forwarder.stop().await.expect("forwarder stops");
}
