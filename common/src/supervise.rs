//! Owning and watching a service's background tasks, so that a task that
//! dies never leaves a process that looks healthy.
//!
//! Every long-lived task is spawned on a [`Supervisor`] (a tokio `JoinSet`)
//! with a name and a [`Lifetime`]. [`Supervisor::watch`] resolves when one of
//! them fails: it panicked, returned an error, or — for a
//! [`Lifetime::UntilShutdown`] task — returned before shutdown began. The
//! service then turns `/ready` to 503 (see [`Supervisor::check`]), starts its
//! graceful shutdown and exits non-zero, so that systemd, Kubernetes or
//! Compose restarts it.
//!
//! Test-only fault hook: with `CYCLOPS_FAULT_TASK_FAILS_AFTER_MS=N` in the
//! environment, every supervisor also runs a task named `fault-injection`
//! that fails after N milliseconds.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::status::CheckResult;

/// The environment variable of the test-only fault hook.
pub const FAULT_ENV: &str = "CYCLOPS_FAULT_TASK_FAILS_AFTER_MS";

/// When a task may end without that being a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Runs as long as the service: ending before shutdown is a failure.
    UntilShutdown,
    /// Does one job: ending with `Ok` at any time is fine.
    Once,
}

/// A task that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("background task {task} failed: {why}")]
pub struct TaskFailed {
    pub task: &'static str,
    pub why: String,
}

/// The background tasks of one service.
#[derive(Debug)]
pub struct Supervisor {
    tasks: JoinSet<TaskEnd>,
    /// Names by tokio task id, to name a task that panicked.
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
    shutdown: CancellationToken,
    failed: Arc<OnceLock<TaskFailed>>,
}

impl Supervisor {
    /// A supervisor whose tasks may end once `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        let mut supervisor = Self {
            tasks: JoinSet::new(),
            names: std::collections::HashMap::new(),
            shutdown,
            failed: Arc::new(OnceLock::new()),
        };
        if let Some(after) = std::env::var(FAULT_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
            supervisor.spawn("fault-injection", Lifetime::UntilShutdown, async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                Err(format!("{FAULT_ENV}={after} (test-only fault hook)"))
            });
        }
        supervisor
    }

    /// Runs `task` under supervision.
    pub fn spawn<E, F>(&mut self, name: &'static str, lifetime: Lifetime, task: F)
    where
        E: Display,
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let handle = self.tasks.spawn(async move { (name, lifetime, task.await.map_err(|e| e.to_string())) });
        self.names.insert(handle.id(), name);
    }

    /// Runs blocking `work` on tokio's blocking pool, under supervision.
    pub fn spawn_blocking<E, F>(&mut self, name: &'static str, lifetime: Lifetime, work: F)
    where
        E: Display,
        F: FnOnce() -> Result<(), E> + Send + 'static,
    {
        let handle = self.tasks.spawn_blocking(move || (name, lifetime, work().map_err(|e| e.to_string())));
        self.names.insert(handle.id(), name);
    }

    /// The `/ready` check: critical, failed once a task has failed.
    pub fn check(&self) -> impl Fn() -> CheckResult + Send + Sync + 'static {
        let failed = self.failed.clone();
        move || match failed.get() {
            Some(f) => CheckResult { name: "tasks", ok: false, critical: true, detail: f.to_string() },
            None => CheckResult { name: "tasks", ok: true, critical: true, detail: "all running".into() },
        }
    }

    /// Resolves with the first task that fails; pends while all are well
    /// (and forever once every task has ended well). Cancel-safe.
    pub async fn watch(&mut self) -> TaskFailed {
        loop {
            let Some(joined) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            if let Some(failure) = self.judge(joined) {
                tracing::error!(task = failure.task, why = %failure.why, "a background task failed: the service stops");
                self.failed.set(failure.clone()).ok();
                return failure;
            }
        }
    }

    /// At shutdown: waits at most `grace` for the tasks to end, then aborts
    /// the rest. A task failing meanwhile is returned.
    pub async fn finish(mut self, grace: Duration) -> Option<TaskFailed> {
        let wait = async {
            while let Some(joined) = self.tasks.join_next_with_id().await {
                if let Some(failure) = self.judge(joined) {
                    return Some(failure);
                }
            }
            None
        };
        match tokio::time::timeout(grace, wait).await {
            Ok(failure) => failure,
            Err(_) => {
                let left: Vec<&str> = self.names.values().copied().collect();
                tracing::warn!(tasks = ?left, "background tasks still running after the drain time: aborted");
                self.tasks.abort_all();
                None
            }
        }
    }

    /// Whether a task that ended failed: an error or a panic always; ending
    /// (or being cancelled) only before shutdown, and only for a task meant
    /// to run until then.
    fn judge(&mut self, joined: Joined) -> Option<TaskFailed> {
        let early = !self.shutdown.is_cancelled();
        match joined {
            Ok((id, (task, lifetime, outcome))) => {
                self.names.remove(&id);
                match outcome {
                    Err(why) => Some(TaskFailed { task, why }),
                    Ok(()) if lifetime == Lifetime::UntilShutdown && early => {
                        Some(TaskFailed { task, why: "ended before shutdown".into() })
                    }
                    Ok(()) => None,
                }
            }
            Err(e) => {
                let task = self.names.remove(&e.id()).unwrap_or("unnamed");
                match e.is_panic() {
                    true => Some(TaskFailed { task, why: panic_text(e.into_panic()) }),
                    false => early.then(|| TaskFailed { task, why: "cancelled".into() }),
                }
            }
        }
    }
}

/// What joining one supervised task gives.
type Joined = Result<(tokio::task::Id, TaskEnd), tokio::task::JoinError>;
/// A supervised task's name, lifetime and outcome.
type TaskEnd = (&'static str, Lifetime, Result<(), String>);

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_an_error_is_reported_by_name() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        supervisor.spawn("fine", Lifetime::UntilShutdown, std::future::pending::<Result<(), String>>());
        supervisor.spawn("broken", Lifetime::UntilShutdown, async { Err::<(), _>("disk gone") });
        let check = supervisor.check();
        assert!(check().ok);
        let failed = supervisor.watch().await;
        assert_eq!(failed, TaskFailed { task: "broken", why: "disk gone".into() });
        assert!(!check().ok && check().critical, "/ready turns 503");
    }

    #[tokio::test]
    async fn a_task_that_panics_is_reported_by_name() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        supervisor.spawn("panicky", Lifetime::UntilShutdown, async {
            if true {
                panic!("boom");
            }
            Ok::<(), String>(())
        });
        let failed = supervisor.watch().await;
        assert_eq!(failed.task, "panicky");
        assert!(failed.why.contains("boom"), "{failed}");
    }

    #[tokio::test]
    async fn ending_early_fails_a_service_task_but_not_a_one_shot_job() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("job", Lifetime::Once, async { Ok::<(), String>(()) });
        supervisor.spawn("loop", Lifetime::UntilShutdown, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<(), String>(())
        });
        let failed = supervisor.watch().await;
        assert_eq!(failed, TaskFailed { task: "loop", why: "ended before shutdown".into() });
    }

    #[tokio::test]
    async fn a_blocking_service_task_that_ends_early_is_a_failure() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let stop = shutdown.clone();
        supervisor.spawn("loop", Lifetime::UntilShutdown, async move {
            stop.cancelled().await;
            Ok::<(), String>(())
        });
        supervisor.spawn_blocking("blocking", Lifetime::UntilShutdown, || Ok::<(), String>(()));
        let watched = tokio::time::timeout(Duration::from_millis(100), supervisor.watch()).await;
        assert!(watched.is_ok(), "the blocking task ended before shutdown: a failure");
    }

    #[tokio::test]
    async fn tasks_that_end_at_shutdown_are_not_failures() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let stop = shutdown.clone();
        supervisor.spawn("loop", Lifetime::UntilShutdown, async move {
            stop.cancelled().await;
            Ok::<(), String>(())
        });
        shutdown.cancel();
        assert_eq!(supervisor.finish(Duration::from_secs(5)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn finish_aborts_what_outlives_the_grace() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("stuck", Lifetime::UntilShutdown, std::future::pending::<Result<(), String>>());
        shutdown.cancel();
        let started = tokio::time::Instant::now();
        assert_eq!(supervisor.finish(Duration::from_secs(3)).await, None);
        assert_eq!(started.elapsed().as_secs(), 3);
    }
}
