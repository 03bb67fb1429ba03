//! Turns SIGTERM and SIGINT into one [`CancellationToken`] that every task
//! of a service watches.
//!
//! The first signal starts a graceful shutdown (readiness turns 503, servers
//! stop accepting, in-flight work drains within the service's
//! `drain_timeout_secs`); a second signal ends the process at once.

use tokio::signal::unix::{SignalKind, signal};
pub use tokio_util::sync::CancellationToken;

/// Exit code when a second signal cuts a graceful shutdown short.
pub const EXIT_IMMEDIATE: i32 = 130;

/// Spawns the signal watcher; returns the token it cancels on the first
/// signal. Must be called inside a tokio runtime.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "shutting down gracefully; send another signal to stop at once");
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::error!("second signal: stopping at once, in-flight work is abandoned");
        std::process::exit(EXIT_IMMEDIATE);
    });
    Ok(token)
}
