//! The `cyclops-ingest` binary as an operator meets it: `init`, refused
//! configuration, and SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cyclops-ingest");

#[test]
fn init_writes_a_configuration_that_starts_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cyclops.toml");
    let out = Command::new(BIN).arg("init").arg(&path).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(text.contains("[kafka]") && text.contains("healthcheck_text"));
    let again = Command::new(BIN).arg("init").arg(&path).output().expect("runs");
    assert!(!again.status.success(), "must not overwrite");
}

#[test]
fn an_unknown_key_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cyclops.toml");
    std::fs::write(&path, "[ingest]\nprot = 1\n").expect("write");
    let out = Command::new(BIN).arg("--conf").arg(&path).output().expect("runs");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prot"), "{stderr}");
}

#[test]
fn a_bad_environment_value_stops_the_start_with_its_name() {
    let out = Command::new(BIN).env("CYCLOPS__INGEST__DRAIN_TIMEOUT_SECS", "0").output().expect("runs");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingest.drain_timeout_secs"));
}

#[tokio::test]
async fn sigterm_stops_the_process_cleanly() {
    use tokio::io::AsyncBufReadExt;
    let spool = tempfile::tempdir().expect("spool dir");
    let mut child = tokio::process::Command::new(BIN)
        .args(["--port", "0", "--bind", "127.0.0.1"])
        // Kafka is not needed to start; readiness would report it.
        .env("CYCLOPS__KAFKA__BROKERS", "127.0.0.1:1")
        // Not the default under the working directory (the source tree).
        .env("CYCLOPS__INGEST__SPOOL__DIR", spool.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    // Other lines (librdkafka failing to reach the absent broker) may come first.
    let listening = async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            if line.contains("listening on http://127.0.0.1:") {
                return true;
            }
        }
        false
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(15), listening).await.expect("starts within 15 s"),
        "announces its address"
    );
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("stops within 15 s of SIGTERM")
        .expect("wait");
    assert!(exit.success(), "graceful exit, got {exit}");
}
