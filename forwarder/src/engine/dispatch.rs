//! The dispatcher: takes the next event from the scheduler whenever the
//! pacer allows, sends it on a task of its own, and acts on Sentry's answer:
//! done (delivered or, once the dead-letter topic has it, refused), retried
//! later with backoff, or held for as long as Sentry's rate limit says (with
//! its project, or only with its categories: [`crate::rate_limits`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyclops_common::shutdown::CancellationToken;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::latency::LatencyWindow;
use super::shared::{Job, Shared};
use crate::deadletter::DeadLetter;
use crate::metrics as m;
use crate::pacing::backoff::Backoff;
use crate::pacing::breaker::BreakerState;
use crate::pacing::pacer::{Feedback, Gate, Pacer};
use crate::rate_limits::{self, RefusedHold};
use crate::upstream::{Answer, Outcome, RetryReason, Upstream};
use cyclops_api::count::Breaker;

/// What comes back from a delivery task.
#[derive(Debug)]
enum Done {
    Answered {
        job: Job,
        answer: Answer,
        rtt: Duration,
    },
    DeadLettered {
        job: Job,
    },
    /// Shutdown stopped a dead-letter write; the event stays not done.
    Abandoned,
}

/// The pacer's figures, for the status endpoints.
#[derive(Debug, Default, Clone, Copy)]
pub struct PacingView {
    pub limit: u32,
    pub in_flight: u32,
    pub breaker: cyclops_api::count::Breaker,
}

/// Everything the dispatcher needs.
#[derive(Debug)]
pub struct Dispatcher {
    pub shared: Arc<Shared>,
    pub pacer: Pacer,
    pub upstream: Upstream,
    pub dead_letter: Arc<DeadLetter>,
    /// The retry schedule each failed event starts from (validated at start).
    pub retry: Backoff,
    /// The schedule of retried writes to the dead-letter topic.
    pub dead_letter_retry: Backoff,
    pub latency: Arc<Mutex<LatencyWindow>>,
    pub view: Arc<Mutex<PacingView>>,
    pub shutdown: CancellationToken,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain: Duration,
    /// Breaker openings already counted in metrics.
    pub openings_seen: u64,
}

impl Dispatcher {
    /// Runs until shutdown, then waits (at most `drain`) for the answers of
    /// requests in flight so that what they delivered is committed.
    pub async fn run(mut self) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
        let mut outstanding = 0usize;
        loop {
            while let Ok(done) = rx.try_recv() {
                outstanding -= 1;
                self.handle(done, &tx, &mut outstanding);
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            let wait = match self.pacer.gate(now) {
                Gate::Go => {
                    let next = self.shared.lock().next(now);
                    match next {
                        Some(job) => {
                            self.send(job, now, &tx);
                            outstanding += 1;
                            continue;
                        }
                        None => self.shared.lock().next_wakeup(now),
                    }
                }
                Gate::WaitUntil(at) => Some(at),
                Gate::WaitForAnswer => None,
            };
            self.publish();
            let sleep = async {
                match wait {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = rx.recv() => if let Some(done) = done {
                    outstanding -= 1;
                    self.handle(done, &tx, &mut outstanding);
                },
                () = self.shared.wake.notified() => {}
                () = sleep => {}
                () = self.shutdown.cancelled() => break,
            }
        }
        // Answers still coming in are worth committing; new sends are not.
        let deadline = Instant::now() + self.drain;
        while outstanding > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(done)) => {
                    outstanding -= 1;
                    self.handle(done, &tx, &mut outstanding);
                }
                _ => break,
            }
        }
        self.publish();
    }

    fn send(&mut self, job: Job, now: Instant, tx: &mpsc::UnboundedSender<Done>) {
        let record = match &job.record {
            Ok(record) => record.clone(),
            Err(reason) => {
                // Nothing to ask Sentry: straight to the dead-letter topic.
                let reason = format!("malformed: {reason}");
                metrics::counter!(m::MALFORMED).increment(1);
                tracing::error!(topic = %job.topic, partition = job.partition, offset = job.offset, reason, "record cannot be replayed to sentry; dead-lettering it");
                self.dead_letter(job, reason, None, tx);
                return;
            }
        };
        self.pacer.started(now);
        let (upstream, tx) = (self.upstream.clone(), tx.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            // A bug that panics must not swallow the answer: the pacer and the
            // event's offset wait for it.
            let delivery = std::panic::AssertUnwindSafe(upstream.deliver(&record, job.payload.clone()));
            let answer = delivery.catch_unwind().await.unwrap_or_else(|_| {
                tracing::error!(topic = %job.topic, offset = job.offset, "delivery panicked; the event is retried");
                Answer::local(Outcome::Retry(RetryReason::Panic))
            });
            // The receiver lives as long as the dispatcher; a send can only
            // fail after it stopped waiting, when nothing is committed anyway.
            tx.send(Done::Answered { job, answer, rtt: started.elapsed() }).ok();
        });
    }

    fn handle(&mut self, done: Done, tx: &mpsc::UnboundedSender<Done>, outstanding: &mut usize) {
        let now = Instant::now();
        match done {
            Done::Abandoned => {}
            Done::DeadLettered { job } => {
                metrics::counter!(m::DEAD_LETTERED).increment(1);
                self.shared.lock().dead_lettered(&job);
            }
            Done::Answered { job, answer, rtt } => {
                let feedback = Feedback {
                    rtt,
                    overload: answer.outcome.is_overload(),
                    network_failure: answer.outcome.is_network_failure(answer.status),
                    answered: answer.status.is_some(),
                };
                self.pacer.finished(now, feedback);
                if answer.status.is_some() {
                    metrics::histogram!(m::UPSTREAM_SECONDS).record(rtt.as_secs_f64());
                    if let Ok(mut latency) = self.latency.lock() {
                        latency.record(rtt);
                    }
                }
                self.outcome(job, answer, now, tx, outstanding);
            }
        }
    }

    fn outcome(
        &mut self,
        mut job: Job,
        answer: Answer,
        now: Instant,
        tx: &mpsc::UnboundedSender<Done>,
        outstanding: &mut usize,
    ) {
        let (topic, partition, offset, project) = (job.topic.clone(), job.partition, job.offset, job.project);
        if !answer.limits.is_empty() {
            self.shared.lock().apply_limits(project, &answer.limits, now);
        }
        match answer.outcome {
            Outcome::Delivered => {
                metrics::counter!(m::DELIVERED, "project" => project.to_string()).increment(1);
                self.shared.lock().delivered(&job);
            }
            Outcome::Rejected(status) => {
                metrics::counter!(m::REJECTED, "status" => status.to_string()).increment(1);
                tracing::error!(%topic, partition, offset, status, "sentry refused the event for good; dead-lettering it");
                self.dead_letter(job, format!("sentry answered {status}"), Some(status), tx);
                *outstanding += 1;
            }
            Outcome::Malformed(breach) => {
                metrics::counter!(m::MALFORMED, "reason" => breach.label()).increment(1);
                let detail = breach.to_string();
                tracing::error!(%topic, partition, offset, reason = %detail, "record breaks the replay contract; dead-lettering it");
                self.dead_letter(job, format!("contract: {detail}"), None, tx);
                *outstanding += 1;
            }
            Outcome::Retry(reason) => {
                metrics::counter!(m::RETRIED, "reason" => reason.label()).increment(1);
                let backoff = job.backoff.get_or_insert_with(|| self.retry.clone());
                let delay = backoff.next_delay(fastrand::f64());
                tracing::debug!(%topic, partition, offset, reason = reason.label(), delay_ms = delay.as_millis() as u64, "sentry cannot take the event now; retrying");
                self.shared.lock().retry_at(job, now + delay);
            }
            Outcome::Held(RefusedHold { hold, quota }) => {
                let kind = if quota { "quota" } else { "retry_after" };
                metrics::counter!(m::HELD, "project" => project.to_string(), "kind" => kind).increment(1);
                // A refused event waits for the longest limit on its
                // categories (else for the longest named: the request was
                // refused).
                let categories = job.record.as_ref().map(|r| r.categories.as_slice()).unwrap_or_default();
                let wait = rate_limits::own_hold(&answer.limits, categories).unwrap_or(hold);
                let mut inner = self.shared.lock();
                // A quota's holds came with `answer.limits`; `Retry-After`
                // alone names no category, so it holds the whole project.
                if !quota {
                    tracing::info!(
                        project,
                        hold_secs = hold.as_secs(),
                        "sentry asks to retry later; holding the project"
                    );
                    inner.hold_project(project, now + hold, now);
                }
                inner.retry_at(job, now + wait);
            }
        }
    }

    /// Writes `job` to the dead-letter topic on a task of its own, retrying
    /// until Kafka has it (or shutdown): only then is it done.
    fn dead_letter(&self, job: Job, reason: String, status: Option<u16>, tx: &mpsc::UnboundedSender<Done>) {
        let (dead_letter, tx, shutdown) = (self.dead_letter.clone(), tx.clone(), self.shutdown.clone());
        let mut backoff = self.dead_letter_retry.clone();
        tokio::spawn(async move {
            loop {
                match dead_letter.send(&job, &reason, status).await {
                    Ok(()) => {
                        tx.send(Done::DeadLettered { job }).ok();
                        return;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay(fastrand::f64());
                        tracing::error!(topic = %job.topic, offset = job.offset, error = %e, "cannot write to the dead-letter topic; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => {
                                tx.send(Done::Abandoned).ok();
                                return;
                            }
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        });
    }

    /// Updates the gauges and the view `/count` reads.
    fn publish(&mut self) {
        metrics::gauge!(m::CONCURRENCY_LIMIT).set(f64::from(self.pacer.limit()));
        metrics::gauge!(m::IN_FLIGHT).set(f64::from(self.pacer.in_flight()));
        let breaker = self.pacer.breaker_state();
        metrics::gauge!(m::BREAKER_STATE).set(f64::from(breaker as u8));
        let openings = self.pacer.breaker_openings();
        if openings > self.openings_seen {
            metrics::counter!(m::BREAKER_OPENINGS).increment(openings - self.openings_seen);
            self.openings_seen = openings;
        }
        if let Ok(mut view) = self.view.lock() {
            *view = PacingView {
                limit: self.pacer.limit(),
                in_flight: self.pacer.in_flight(),
                breaker: match breaker {
                    BreakerState::Closed => Breaker::Closed,
                    BreakerState::Probing => Breaker::Probing,
                    BreakerState::Open => Breaker::Open,
                },
            };
        }
    }
}
