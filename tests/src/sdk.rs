//! Real Sentry SDKs as clients: Python's `sentry-sdk` (1.x and 2.x, from the
//! venvs `stack/sdks.sh` makes) and the Rust `sentry` crate.

use std::path::PathBuf;
use std::time::Duration;

/// The interpreter of the venv `stack/sdks.sh` made for sentry-sdk `major`.
pub fn venv_python(major: u8) -> PathBuf {
    let stack = std::env::var("CYCLOPS_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack"));
    stack.join(format!("venvs/sentry-sdk-{major}/bin/python"))
}

/// What an SDK run reported.
#[derive(Debug)]
pub struct Sent {
    /// The event id, as 32 hex characters.
    pub event_id: String,
    /// What the SDK wrote to stderr (the Python script writes its version).
    pub stderr: String,
}

/// Raises and captures one exception with sentry-sdk `major` against `dsn`.
pub async fn python_sends(major: u8, dsn: &str, message: &str) -> anyhow::Result<Sent> {
    let python = venv_python(major);
    anyhow::ensure!(python.exists(), "{} missing: run `bash stack/sdks.sh` (make test does)", python.display());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/send_python.py");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python).args([script, dsn, message]).kill_on_drop(true).output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(output.status.success(), "sentry-sdk {major} failed: {stderr}");
    let event_id = String::from_utf8_lossy(&output.stdout).trim().replace('-', "");
    Ok(Sent { event_id, stderr })
}

/// Captures one message with the Rust `sentry` crate against `dsn` and flushes.
pub async fn rust_sends(dsn: &str, message: &str) -> anyhow::Result<Sent> {
    let (dsn, message) = (dsn.to_owned(), message.to_owned());
    // The SDK's transport blocks while it flushes: keep it off the runtime.
    let (id, flushed) = tokio::task::spawn_blocking(move || {
        let mut options = sentry::ClientOptions::default();
        options.transport = Some(std::sync::Arc::new(sentry::transports::DefaultTransportFactory));
        let client = sentry::Client::from_config((dsn.as_str(), options));
        let hub = sentry::Hub::new(Some(std::sync::Arc::new(client)), std::sync::Arc::new(sentry::Scope::default()));
        let id = hub.capture_message(&message, sentry::Level::Error);
        let flushed = hub.client().is_some_and(|c| c.flush(Some(Duration::from_secs(10))));
        (id, flushed)
    })
    .await?;
    anyhow::ensure!(flushed, "the sentry crate did not flush its queue within 10 s");
    Ok(Sent { event_id: id.simple().to_string(), stderr: String::new() })
}
