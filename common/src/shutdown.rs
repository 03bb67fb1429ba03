//! Turns SIGTERM and SIGINT into one [`CancellationToken`] that every task
//! of a service watches.
//!
//! The first signal starts a graceful shutdown (readiness turns 503, servers
//! stop accepting, in-flight work drains within the service's
//! `drain_timeout_secs`); a second signal ends the process at once.

use std::future::Future;
use std::time::Duration;

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
        // Cancel first: nothing that logging does may stand between a signal and the shutdown.
        cancel.cancel();
        tracing::warn!(signal = name, "shutting down gracefully; send another signal to stop at once");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::error!("second signal: stopping at once, in-flight work is abandoned");
        std::process::exit(EXIT_IMMEDIATE);
    });
    Ok(token)
}

/// Drives `work` to completion; once `shutdown` is cancelled, gives it at
/// most `grace` more. `None` when the grace ran out and the work was dropped.
pub async fn with_grace<F: Future>(shutdown: &CancellationToken, grace: Duration, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        out = &mut work => return Some(out),
        () = shutdown.cancelled() => {}
    }
    let out = tokio::time::timeout(grace, work).await.ok();
    if out.is_none() {
        tracing::warn!(grace_secs = grace.as_secs(), "drain time over; in-flight work abandoned");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_is_kept() {
        let token = CancellationToken::new();
        token.cancel();
        let work = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            7
        };
        assert_eq!(with_grace(&token, Duration::from_secs(3), work).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_grace_is_abandoned() {
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        });
        let started = tokio::time::Instant::now();
        let out = with_grace(&token, Duration::from_secs(5), std::future::pending::<()>()).await;
        assert_eq!(out, None);
        assert_eq!(started.elapsed().as_secs(), 6, "one second of work, then five of grace");
    }

    #[tokio::test(start_paused = true)]
    async fn work_done_before_shutdown_needs_no_grace() {
        let token = CancellationToken::new();
        assert_eq!(with_grace(&token, Duration::ZERO, async { "done" }).await, Some("done"));
    }
}
