//! Reporting an attempt's end to the queue, retried until Redis takes it.
//!
//! Ends are reported through one [`Reporter`] task per worker: the attempts that end
//! while a report is in flight go together in the next call (one script, one round
//! trip), so a busy worker pays the per-call cost of Redis once per batch, not once
//! per job, and an idle one still reports each end at once (nothing waits to fill up).

use crate::attempt::{AttemptDeps, AttemptEnd};
use crate::metrics::WorkerMetrics;
use common::queue::{ClaimedJob, EndedAttempt, FinishState, Outcome, RedisQueue};
use common::{Backoff, WorkerId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most attempt ends settled in one call.
const MAX_BATCH: usize = 256;

/// One attempt end waiting to be recorded, with where to send what the queue did.
struct Ended {
    attempt: EndedAttempt,
    done: oneshot::Sender<FinishState>,
}

/// The handle attempts report through.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::UnboundedSender<Ended>,
}

impl Reporter {
    /// Starts the reporting task. It stops when `stop` fires and nothing is pending;
    /// the worker fires it only after every attempt has returned, i.e. has been reported.
    pub(crate) fn start(
        queue: RedisQueue,
        worker: WorkerId,
        metrics: Arc<WorkerMetrics>,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(report_loop(queue, worker, metrics, rx, stop));
        (Reporter { tx }, task)
    }

    /// Records the end of an attempt; returns once Redis has it.
    async fn finish(&self, job: &ClaimedJob, outcome: Outcome) -> FinishState {
        let (done, answer) = oneshot::channel();
        let ended = Ended {
            attempt: EndedAttempt {
                id: job.id.clone(),
                attempt: Some(job.attempt),
                outcome,
            },
            done,
        };
        if self.tx.send(ended).is_err() {
            // Only after shutdown, when no attempt is left; the lease is reaped if it happens.
            tracing::error!("the reporter has stopped; the reaper will recover this job");
            return FinishState::Stale;
        }
        answer.await.unwrap_or(FinishState::Stale)
    }
}

/// Takes every end that is waiting (up to [`MAX_BATCH`]) and records them in one call,
/// retrying with backoff while Redis is unreachable. Until the call lands the leases stay
/// in this worker's in-flight hash, so a crash meanwhile loses nothing: the reaper
/// re-runs those jobs (at-least-once).
async fn report_loop(
    queue: RedisQueue,
    worker: WorkerId,
    metrics: Arc<WorkerMetrics>,
    mut rx: mpsc::UnboundedReceiver<Ended>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let got = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = stop.cancelled() => 0,
        };
        if got == 0 {
            return;
        }
        settle(&queue, &worker, &metrics, std::mem::take(&mut batch)).await;
    }
}

/// Records `ended` and answers each attempt, retrying what is not recorded yet with
/// backoff: all of it while Redis is unreachable, or the attempts the script refused
/// (an unreadable job hash), which keep their leases and do not hold up the others.
async fn settle(queue: &RedisQueue, worker: &WorkerId, metrics: &WorkerMetrics, ended: Vec<Ended>) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut pending = ended;
    let mut tries = 0;
    loop {
        let ends: Vec<EndedAttempt> = pending.iter().map(|e| e.attempt.clone()).collect();
        let result = {
            let _t = metrics.time("finish");
            queue.finish_many(worker, &ends).await
        };
        match result {
            Ok(results) => {
                let mut refused = Vec::new();
                for (e, result) in pending.into_iter().zip(results) {
                    match result {
                        Ok(state) => {
                            let _ = e.done.send(state);
                        }
                        Err(why) => {
                            tracing::error!(job_id = %e.attempt.id, error = %why, "cannot record the attempt's end; retrying");
                            refused.push(e);
                        }
                    }
                }
                pending = refused;
            }
            Err(e) => {
                tracing::warn!(error = %e, tries, attempts = ends.len(), "cannot report attempts; retrying");
            }
        }
        if pending.is_empty() {
            return;
        }
        tries += 1;
        tokio::time::sleep(backoff.jittered(tries)).await;
    }
}

/// Records the outcome (or hands the job back). Redis faults are retried with backoff
/// (hand-backs only until the forced-shutdown token fires); if the report never lands,
/// the lease stays in this worker's in-flight hash and the reaper re-runs the job once
/// the heartbeat expires, so the job is not lost (at-least-once).
pub(crate) async fn report(deps: &AttemptDeps, job: &ClaimedJob, end: AttemptEnd) {
    let outcome = end.outcome(job, &deps.settings);
    let state = match &outcome {
        Some(o) => deps.reporter.finish(job, o.clone()).await,
        None => match release(deps, job).await {
            Some(state) => state,
            None => return,
        },
    };
    match state {
        FinishState::Moved(state) => {
            tracing::info!(%state, outcome = ?outcome, "attempt reported");
            deps.metrics.count_outcome(outcome_label(outcome.as_ref()));
        }
        FinishState::Stale => {
            deps.metrics.count_outcome("stale");
            tracing::warn!(
                "lease was lost (heartbeat expired); the job was recovered and this outcome is dropped"
            );
        }
    }
}

/// Hands the job back to its queue; `None` when Redis stayed unreachable until the
/// forced-shutdown token fired.
async fn release(deps: &AttemptDeps, job: &ClaimedJob) -> Option<FinishState> {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut tries = 0;
    loop {
        let result = {
            let _t = deps.metrics.time("release");
            deps.queue
                .release(&deps.worker, &job.id, "worker shutting down")
                .await
        };
        match result {
            Ok(state) => return Some(state),
            Err(e) => {
                tries += 1;
                tracing::warn!(error = %e, tries, "cannot hand the job back; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.jittered(tries)) => {}
                    _ = deps.hard_stop.cancelled() => {
                        tracing::error!("giving up on handing the job back; the reaper will recover it");
                        return None;
                    }
                }
            }
        }
    }
}

fn outcome_label(outcome: Option<&Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Succeeded) => "succeeded",
        Some(Outcome::Failed { .. }) => "failed",
        Some(Outcome::Fatal { .. }) => "fatal",
        Some(Outcome::Cancelled) => "cancelled",
        None => "released",
    }
}
