//! Ingest speaks Sentry's intake protocol: every endpoint, encoding, auth
//! form and limit, checked against what lands in Kafka.

use cyclops_common::ids::ProjectId;
use std::io::Write;
use std::time::Duration;

use cyclops_common::config::{Config, ProjectKey};
use cyclops_common::record::topic_name;
use cyclops_tests::kafka::{holds_no_records, read_records};
use cyclops_tests::{TestService, event_id, gzip, sentry_auth, spawn_ingest, test_config};
use serde_json::Value;

const KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const SECRET: &str = "f1e2d3c4b5a60718293a4b5c6d7e8f90";
const OTHER_KEY: &str = "0000000000000000000000000000beef";
const PROJECT: u64 = 5;
const OTHER_PROJECT: u64 = 6;
const WAIT: Duration = Duration::from_secs(30);

/// A content encoding's name and how to apply it.
type Encoder = (&'static str, fn(&[u8]) -> Vec<u8>);
/// What is sent, where, with which encoding, and the status expected.
type BodyCase<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
/// What is sent, where, with which headers, and the status expected.
type AuthCase<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>, u16);

fn config() -> Config {
    let mut config = test_config();
    config.projects = vec![
        ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: Some(SECRET.into()) },
        ProjectKey { id: OTHER_PROJECT, public_key: OTHER_KEY.into(), secret_key: None },
    ];
    config
}

async fn send(
    ingest: &TestService,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, ingest.url(path)).body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.expect("request")
}

async fn post(ingest: &TestService, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> reqwest::Response {
    send(ingest, reqwest::Method::POST, path, headers, body).await
}

fn event(id: &str, message: &str) -> Vec<u8> {
    format!(r#"{{"event_id":"{id}","message":"{message}","level":"error"}}"#).into_bytes()
}

fn envelope(id: &str, message: &str) -> Vec<u8> {
    format!("{{\"event_id\":\"{id}\"}}\n{{\"type\":\"event\"}}\n{{\"message\":\"{message}\"}}\n").into_bytes()
}

async fn answered_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cyclops-status"], "PROCESSED");
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn every_endpoint_stores_under_its_project_and_event_id() {
    let config = config();
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let auth = sentry_auth(KEY);
    let mut expected = Vec::new();

    let id = event_id();
    let response =
        post(&ingest, &format!("/api/{PROJECT}/store/"), &[("x-sentry-auth", &auth)], event(&id, "store")).await;
    assert_eq!(answered_id(response).await, id);
    expected.push((id, "/api/5/store/"));

    let id = event_id();
    let response = post(&ingest, "/api/store/", &[("authorization", &auth)], event(&id, "legacy path")).await;
    assert_eq!(answered_id(response).await, id, "the project comes from the key");
    expected.push((id, "/api/store/"));

    let id = event_id();
    let query = format!("sentry_key={KEY}&sentry_version=7");
    let response = post(&ingest, &format!("/api/{PROJECT}/envelope/?{query}"), &[], envelope(&id, "envelope")).await;
    assert_eq!(answered_id(response).await, id);
    expected.push((id, "/api/5/envelope/"));

    let id = event_id();
    let headers = [("x-sentry-auth", auth.as_str()), ("content-type", "application/x-sentry-envelope")];
    let response = post(&ingest, &format!("/api/{PROJECT}/store/"), &headers, envelope(&id, "envelope to store")).await;
    assert_eq!(answered_id(response).await, id, "store takes envelopes by content type");
    expected.push((id, "/api/5/store/"));

    // Old raven clients: base64 of zlib of the JSON, no content encoding.
    let id = event_id();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&event(&id, "raven")).expect("zlib");
    let legacy = base64_encode(&zlib.finish().expect("zlib"));
    let response = post(&ingest, &format!("/api/{PROJECT}/store/"), &[("x-sentry-auth", &auth)], legacy).await;
    assert_eq!(answered_id(response).await, id);
    expected.push((id, "/api/5/store/"));

    // A browser beacon: GET, the event in sentry_data, a 1×1 GIF back.
    let id = event_id();
    let data = String::from_utf8(event(&id, "beacon")).expect("utf8");
    let beacon = format!(
        "/api/{PROJECT}/store/?{}",
        url_query(&[("sentry_key", KEY), ("sentry_version", "7"), ("sentry_data", &data)])
    );
    let response = send(&ingest, reqwest::Method::GET, &beacon, &[], Vec::new()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/gif");
    assert_eq!(response.bytes().await.expect("gif").len(), 26);
    expected.push((id, "/api/5/store/"));

    let stored = read_records(&topic, expected.len(), WAIT).await;
    assert_eq!(stored.len(), expected.len(), "every submission is in the project's topic");
    for (id, path) in expected {
        let record = stored.iter().find(|r| r.headers.event_id == id).unwrap_or_else(|| panic!("{id} stored"));
        assert_eq!(record.key, id.as_bytes(), "keyed by event id");
        assert_eq!(record.headers.path, path);
        assert_eq!(record.headers.project_id.get(), PROJECT);
    }
    ingest.stop().await.expect("stops");
}

fn url_query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

fn base64_encode(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data).into_bytes()
}

#[tokio::test]
async fn every_content_encoding_is_accepted_and_stored_as_sent() {
    let config = config();
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let auth = sentry_auth(KEY);
    let path = format!("/api/{PROJECT}/envelope/");
    let encoders: Vec<Encoder> = vec![
        ("identity", |d| d.to_vec()),
        ("gzip", gzip),
        ("x-gzip", gzip),
        ("deflate", |d| {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(d).expect("zlib");
            e.finish().expect("zlib")
        }),
        ("br", |d| {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(d).expect("br");
            drop(w);
            out
        }),
        ("zstd", |d| zstd::encode_all(d, 3).expect("zstd")),
    ];
    let mut sent = Vec::new();
    for (name, encode) in &encoders {
        let id = event_id();
        let body = encode(&envelope(&id, name));
        let response =
            post(&ingest, &path, &[("x-sentry-auth", &auth), ("content-encoding", name)], body.clone()).await;
        assert_eq!(answered_id(response).await, id, "{name}");
        sent.push((id, *name, body));
    }
    let refused =
        post(&ingest, &path, &[("x-sentry-auth", &auth), ("content-encoding", "compress")], b"x".to_vec()).await;
    assert_eq!(refused.status(), 415);

    let stored = read_records(&topic, sent.len(), WAIT).await;
    assert_eq!(stored.len(), sent.len());
    for (id, name, body) in sent {
        let record = stored.iter().find(|r| r.headers.event_id == id).unwrap_or_else(|| panic!("{name} stored"));
        assert_eq!(record.payload, body, "{name}: stored exactly as received");
        let expected = if name == "identity" { None } else { Some(if name == "x-gzip" { "gzip" } else { name }) };
        assert_eq!(record.headers.content_encoding.as_deref(), expected, "{name}");
    }
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused_and_nothing_is_stored() {
    let mut config = config();
    config.ingest.max_event_bytes = 2048;
    config.ingest.max_envelope_bytes = 8192;
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let auth = sentry_auth(KEY);
    let store = format!("/api/{PROJECT}/store/");
    let env = format!("/api/{PROJECT}/envelope/");
    let big_event = event(&event_id(), &"x".repeat(4096));
    let gz = gzip(&event(&event_id(), "truncated"));
    let cases: Vec<BodyCase> = vec![
        ("event over the limit once gunzipped", &store, Some("gzip"), gzip(&big_event), 413),
        ("gzip bomb", &store, Some("gzip"), gzip(&vec![b' '; 1 << 22]), 413),
        ("body over the limit as received", &env, None, vec![b'{'; 9000], 413),
        ("event item over the limit", &env, None, envelope(&event_id(), &"y".repeat(4096)), 413),
        ("truncated gzip", &store, Some("gzip"), gz[..gz.len() / 2].to_vec(), 400),
        ("bad base64", &store, None, b"%%%not-base64%%%".to_vec(), 400),
        ("malformed json", &store, None, b"{\"message\": ".to_vec(), 400),
        ("broken envelope framing", &env, None, b"{}\n{\"type\":\"event\",\"length\":99}\nshort\n".to_vec(), 400),
        ("empty body", &store, None, Vec::new(), 400),
    ];
    for (what, path, encoding, body, status) in cases {
        let mut headers = vec![("x-sentry-auth", auth.as_str())];
        if let Some(e) = encoding {
            headers.push(("content-encoding", e));
        }
        let response = post(&ingest, path, &headers, body).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        let detail: Value = response.json().await.unwrap_or(Value::Null);
        assert!(detail["detail"].is_string(), "{what}: a reason is given: {detail}");
    }
    for (method, path) in [(reqwest::Method::PUT, &store), (reqwest::Method::DELETE, &env)] {
        let response = send(&ingest, method.clone(), path, &[("x-sentry-auth", &auth)], b"{}".to_vec()).await;
        assert_eq!(response.status(), 405, "{method} {path}");
        let detail: Value = response.json().await.unwrap_or(Value::Null);
        assert!(detail["detail"].is_string(), "{method}: a reason is given: {detail}");
    }
    assert!(holds_no_records(&topic).await, "nothing refused was stored");
    let count: Value = reqwest::get(ingest.url("/count")).await.expect("count").json().await.expect("json");
    assert_eq!(count["processed"], 0, "nothing refused was stored");
    let rejected = count["rejected_by_reason"].as_object().expect("reasons");
    for reason in
        ["too_large", "invalid_compression", "invalid_json", "invalid_envelope", "empty_body", "method_not_allowed"]
    {
        assert!(rejected.get(reason).and_then(Value::as_u64).unwrap_or(0) > 0, "{reason} counted: {count}");
    }
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn every_auth_form_and_every_auth_failure() {
    let ingest = spawn_ingest(config()).await.expect("ingest");
    let store = format!("/api/{PROJECT}/store/");
    let good = sentry_auth(KEY);
    let with_secret = format!("{good}, sentry_secret={SECRET}");
    let wrong_secret = format!("{good}, sentry_secret=nope");
    let other = sentry_auth(OTHER_KEY);
    let unknown = sentry_auth("ffffffffffffffffffffffffffffffff");
    let query_store = format!("{store}?sentry_key={KEY}&sentry_version=7");
    let dsn_envelope =
        format!("{{\"dsn\":\"http://{KEY}@example.com/{PROJECT}\",\"event_id\":\"{}\"}}\n", event_id()).into_bytes();
    let other_project_dsn =
        format!("{{\"dsn\":\"http://{KEY}@example.com/{}\",\"event_id\":\"{}\"}}\n", PROJECT + 1, event_id())
            .into_bytes();
    let ev = || event(&event_id(), "auth");
    // The payload's own fault is answered before a dsn mismatch, as before
    // the stages were split: an event item past max_event_bytes is a 413.
    let mut other_project_too_large = other_project_dsn.clone();
    other_project_too_large.extend_from_slice(b"{\"type\":\"event\"}\n");
    other_project_too_large.extend_from_slice(format!("{{\"message\":\"{}\"}}\n", "x".repeat(2 << 20)).as_bytes());
    let cases: Vec<AuthCase> = vec![
        ("x-sentry-auth", store.clone(), vec![("x-sentry-auth", &good)], ev(), 200),
        ("authorization", store.clone(), vec![("authorization", &good)], ev(), 200),
        ("matching secret", store.clone(), vec![("x-sentry-auth", &with_secret)], ev(), 200),
        ("query", query_store.clone(), vec![], ev(), 200),
        ("envelope dsn", format!("/api/{PROJECT}/envelope/"), vec![], dsn_envelope, 200),
        ("missing", store.clone(), vec![], ev(), 401),
        ("two sources", query_store, vec![("x-sentry-auth", &good)], ev(), 401),
        ("wrong secret", store.clone(), vec![("x-sentry-auth", &wrong_secret)], ev(), 403),
        ("unknown key", store.clone(), vec![("x-sentry-auth", &unknown)], ev(), 403),
        ("another project's key", store.clone(), vec![("x-sentry-auth", &other)], ev(), 403),
        ("non-numeric project", "/api/abc/store/".into(), vec![("x-sentry-auth", &good)], ev(), 400),
        ("dsn of another project", format!("/api/{PROJECT}/envelope/"), vec![], other_project_dsn.clone(), 400),
        (
            "dsn of another project, event too large",
            format!("/api/{PROJECT}/envelope/"),
            vec![],
            other_project_too_large,
            413,
        ),
        (
            "header auth, dsn of another project",
            format!("/api/{PROJECT}/envelope/"),
            vec![("x-sentry-auth", &good)],
            other_project_dsn,
            400,
        ),
    ];
    for (what, path, headers, body, status) in cases {
        let response = post(&ingest, &path, &headers, body).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        if status != 200 {
            let detail: Value = response.json().await.expect("json");
            assert!(detail["detail"].is_string(), "{what}: {detail}");
        }
    }
    ingest.stop().await.expect("stops");

    let mut open = config();
    open.ingest.restrict_api_access = false;
    let ingest = spawn_ingest(open).await.expect("ingest");
    let response = post(&ingest, "/api/77/store/", &[("x-sentry-auth", &unknown)], ev()).await;
    assert_eq!(response.status(), 200, "restrict_api_access = false takes unknown keys");
    let response = post(&ingest, "/api/77/store/", &[("x-sentry-auth", &good)], ev()).await;
    assert_eq!(response.status(), 403, "a known key stays bound to its project");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn cors_is_answered_as_sentry_does() {
    let ingest = spawn_ingest(config()).await.expect("ingest");
    let path = format!("/api/{PROJECT}/envelope/");
    let preflight = send(
        &ingest,
        reqwest::Method::OPTIONS,
        &path,
        &[
            ("origin", "https://shop.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-sentry-auth, content-type"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(preflight.status(), 200);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-max-age"], "3600");
    let allowed = h["access-control-allow-headers"].to_str().expect("ascii").to_ascii_lowercase();
    assert!(allowed.contains("x-sentry-auth") && allowed.contains("content-type"), "{allowed}");

    let query = format!("{path}?sentry_key={KEY}&sentry_version=7");
    let response = post(
        &ingest,
        &query,
        &[("origin", "https://shop.example.com"), ("content-type", "text/plain")],
        envelope(&event_id(), "cors"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let exposed = response.headers()["access-control-expose-headers"].to_str().expect("ascii").to_ascii_lowercase();
    assert!(exposed.contains("x-sentry-rate-limits") && exposed.contains("retry-after"), "{exposed}");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn an_envelope_without_items_is_answered_and_not_stored() {
    let config = config();
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let auth = sentry_auth(KEY);
    let env = format!("/api/{PROJECT}/envelope/");
    let id = event_id();
    let with_id = format!("{{\"event_id\":\"{id}\"}}\n").into_bytes();
    for (what, body, answer) in [
        ("a header with an event id", with_id, serde_json::json!({ "id": id })),
        ("a bare header", b"{}".to_vec(), serde_json::json!({})),
        ("a gzipped header", gzip(b"{}\n"), serde_json::json!({})),
    ] {
        let encoding = if what.contains("gzip") { "gzip" } else { "identity" };
        let headers = [("x-sentry-auth", auth.as_str()), ("content-encoding", encoding)];
        let response = post(&ingest, &env, &headers, body).await;
        assert_eq!(response.status(), 200, "{what}");
        assert_eq!(response.headers()["x-cyclops-status"], "IGNORED", "{what}");
        assert_eq!(response.headers()["x-cyclops-durability"], "none", "{what}");
        assert_eq!(response.json::<Value>().await.expect("json"), answer, "{what}");
    }
    assert!(holds_no_records(&topic).await, "nothing stored");
    let count: Value = reqwest::get(ingest.url("/count")).await.expect("count").json().await.expect("json");
    assert_eq!(count["processed"], 0, "{count}");
    assert_eq!(count["ignored_by_reason"]["empty"], 3, "counted: {count}");
    ingest.stop().await.expect("stops");
}
