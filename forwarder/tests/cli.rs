//! The `cyclops-forwarder` binary as an operator meets it: refused
//! configuration, SIGTERM, and the demo sink.

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_cyclops-forwarder");

#[test]
fn a_bad_key_stops_the_start_with_its_name() {
    let out = Command::new(BIN).env("CYCLOPS__FORWARDER__GROUP_IDD", "x").output().expect("runs");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    assert!(String::from_utf8_lossy(&out.stderr).contains("forwarder.group_idd"));
}

/// Starts `args`, waits for a stderr line containing `ready_line`, sends
/// SIGTERM, and returns the exit status.
async fn start_then_terminate(args: &[&str], ready_line: &str) -> std::process::ExitStatus {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        // No broker is needed to start or to stop.
        .env("CYCLOPS__KAFKA__BROKERS", "127.0.0.1:1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let started = async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            if line.contains(ready_line) {
                return true;
            }
        }
        false
    };
    assert!(tokio::time::timeout(Duration::from_secs(15), started).await.expect("starts within 15 s"), "announced");
    let pid = child.id().expect("running").to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("stops within 15 s").expect("wait")
}

#[tokio::test]
async fn sigterm_stops_the_forwarder_cleanly() {
    let status = start_then_terminate(&["--port", "0", "--bind", "127.0.0.1"], "status endpoints on http://").await;
    assert!(status.success(), "graceful exit, got {status}");
}

#[tokio::test]
async fn the_demo_sink_prints_what_it_receives_and_says_what_it_is() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    drop(listener);
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo-sink", "--sink-port", &port])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let banner = tokio::time::timeout(Duration::from_secs(15), err.next_line()).await.expect("in time").expect("reads");
    assert!(banner.is_some_and(|l| l.contains("DEMO SINK") && l.contains("stand-in for Sentry")));
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/1/store/"))
        .body(r#"{"message":"seen by the sink"}"#)
        .send()
        .await
        .expect("sink answers");
    assert_eq!(response.status(), 200);
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let printed = tokio::time::timeout(Duration::from_secs(15), async {
        let mut all = String::new();
        while let Some(line) = out.next_line().await.expect("reads") {
            all.push_str(&line);
            if all.contains("seen by the sink") {
                break;
            }
        }
        all
    })
    .await
    .expect("printed in time");
    assert!(printed.contains("DEMO SINK") && printed.contains("POST /api/1/store/"), "{printed}");
}
