//! The `cyclops-count` binary against stand-in instances: Cyclops's flags,
//! an instance that does not answer, `--json` and `--floods`.

use std::process::Command;

use serde_json::{Value, json};

/// Serves `count` at /count and `floods` at /floods on a free loopback port.
async fn instance(count: Value, floods: Option<Value>) -> u16 {
    let mut app = axum::Router::new().route("/count", axum::routing::get(move || async move { axum::Json(count) }));
    if let Some(floods) = floods {
        app = app.route("/floods", axum::routing::get(move || async move { axum::Json(floods) }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn run(args: &[String]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cyclops-count")).args(args).output().expect("runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_a_farm_names_the_missing_and_speaks_json() {
    let flood = json!({"projects": {"1": [{"project": 1, "fingerprint": "fp", "dropped": 7, "first_seen_ms": 1,
        "last_seen_ms": 2, "title": "KeyError: 'x'", "release": "r1", "hosts": [{"host": "web-1", "count": 7}]}]}});
    let ingest = instance(
        json!({"service": "ingest", "count": 1, "average": 2.0, "percentile": 3.0, "processed": 30, "ignored": 70}),
        Some(flood),
    )
    .await;
    let forwarder = instance(
        json!({"service": "forwarder", "count": 4, "average": 50.0, "percentile": 90.0, "processed": 29, "ignored": 0}),
        None,
    )
    .await;
    let dead = free_port();
    let ports = format!("{ingest},{forwarder},{dead}");
    let args = ["-b".to_owned(), "http://127.0.0.1".to_owned(), "-p".to_owned(), ports.clone()];
    let (code, text) = tokio::task::spawn_blocking(move || run(&args)).await.expect("ran");
    assert_eq!(code, 1, "an instance did not answer: {text}");
    assert!(text.contains(&format!("127.0.0.1:{ingest} has still 1 messages to process (ingest)\n")), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{forwarder} has still 4 messages to process (forwarder)\n")));
    assert!(text.contains(&format!("127.0.0.1:{dead} not found (connection refused)\n")));
    assert!(text.contains("Total of 5 messages to send to sentry from the farm at 127.0.0.1.\n"));
    assert!(text.contains("Total 30 processed items and 70 ignored items (70.00%).\n"));
    assert!(text.contains("Average sentry response time is 50.00ms and 90% Percentile is 90.00ms\n"));

    let urls = vec![format!("127.0.0.1:{ingest}"), format!("http://127.0.0.1:{forwarder}"), "--json".to_owned()];
    let (code, text) = tokio::task::spawn_blocking(move || run(&urls)).await.expect("ran");
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!((report["to_send"].as_u64(), report["ingest"]["ignored"].as_u64()), (Some(5), Some(70)));
    assert_eq!(report["instances"][1]["service"], "forwarder");

    let floods = vec!["--floods".to_owned(), format!("127.0.0.1:{ingest}"), format!("127.0.0.1:{forwarder}")];
    let (code, text) = tokio::task::spawn_blocking(move || run(&floods)).await.expect("ran");
    assert_eq!(code, 0, "forwarders have no /floods, and that is fine");
    assert!(text.starts_with("1. project 1: 7 dropped"), "{text}");
    assert!(text.contains("hosts web-1 (7)"), "{text}");
    let floods = vec!["--floods".to_owned(), format!("127.0.0.1:{ingest}"), format!("127.0.0.1:{dead}")];
    let (code, text) = tokio::task::spawn_blocking(move || run(&floods)).await.expect("ran");
    assert_eq!(code, 1, "an ingest did not answer: the merge may be partial");
    assert!(text.starts_with(&format!("127.0.0.1:{dead} not found (connection refused)\n1. project 1")), "{text}");
    let floods = vec!["--floods".to_owned(), format!("127.0.0.1:{dead}")];
    let (code, text) = tokio::task::spawn_blocking(move || run(&floods)).await.expect("ran");
    assert_eq!((code, text.ends_with("No ingest instance answered /floods.\n")), (1, true), "{text}");

    let (code, _) = tokio::task::spawn_blocking(|| run(&["-p".to_owned(), "9-1".to_owned()])).await.expect("ran");
    assert_eq!(code, 2, "a bad port range is a usage error");
}
