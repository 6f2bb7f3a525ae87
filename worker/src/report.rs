//! Reporting an attempt's end to the queue, retried until Redis takes it.
//!
//! Ends are reported through one [`Reporter`] task per worker: the attempts that end
//! while a report is in flight go together in the next call (one script, one round
//! trip), so a busy worker pays the per-call cost of Redis once per batch, not once
//! per job, and an idle one still reports each end at once (nothing waits to fill up).

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
    pub(crate) async fn finish(&self, job: &ClaimedJob, outcome: Outcome) -> FinishState {
        let (done, answer) = oneshot::channel();
        let ended = Ended {
            attempt: EndedAttempt {
                id: job.id.clone(),
                attempt: Some(job.attempt),
                claim_token: Some(job.claim_token.clone()),
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

/// Tries an attempt end the script refused (its job hash is unreadable) gets on its own
/// before the worker gives up on it. Its lease then stays, and the worker's lease check
/// hands the job back (which dead-letters an unreadable job).
const REFUSED_TRIES: u32 = 5;

/// Takes every end that is waiting (up to [`MAX_BATCH`]) and records them in one call,
/// retrying with backoff while Redis is unreachable. Until the call lands the leases stay
/// in this worker's in-flight hash, so a crash meanwhile loses nothing: the reaper
/// re-runs those jobs (at-least-once). An end the script refuses is retried on its own,
/// in its own task, so it never holds up the ends reported after it.
async fn report_loop(
    queue: RedisQueue,
    worker: WorkerId,
    metrics: Arc<WorkerMetrics>,
    mut rx: mpsc::UnboundedReceiver<Ended>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let refused = tokio_util::task::TaskTracker::new();
    loop {
        let got = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = stop.cancelled() => 0,
        };
        if got == 0 {
            break;
        }
        for e in settle(&queue, &worker, &metrics, std::mem::take(&mut batch)).await {
            refused.spawn(retry_alone(queue.clone(), worker.clone(), e));
        }
    }
    refused.close();
    refused.wait().await;
}

/// Records `ended` and answers each attempt, retrying with backoff while Redis is
/// unreachable or the worker is fenced (its heartbeat loop heartbeats again). Returns the
/// ends the script refused, unanswered.
async fn settle(
    queue: &RedisQueue,
    worker: &WorkerId,
    metrics: &WorkerMetrics,
    ended: Vec<Ended>,
) -> Vec<Ended> {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut pending = ended;
    let mut refused = Vec::new();
    let mut tries = 0;
    loop {
        let ends: Vec<EndedAttempt> = pending.iter().map(|e| e.attempt.clone()).collect();
        let result = {
            let _t = metrics.time("finish");
            queue.finish_many(worker, &ends).await
        };
        match result {
            Ok(results) => {
                let mut fenced = Vec::new();
                for (e, result) in pending.into_iter().zip(results) {
                    match result {
                        Ok(FinishState::Fenced) => fenced.push(e),
                        Ok(state) => {
                            let _ = e.done.send(state);
                        }
                        Err(why) => {
                            tracing::error!(job_id = %e.attempt.id, error = %why, "cannot record the attempt's end; retrying it on its own");
                            refused.push(e);
                        }
                    }
                }
                if !fenced.is_empty() {
                    tracing::warn!(
                        attempts = fenced.len(),
                        "heartbeat gone: reports wait for the next heartbeat"
                    );
                }
                pending = fenced;
            }
            Err(e) => {
                tracing::warn!(error = %e, tries, attempts = ends.len(), "cannot report attempts; retrying");
            }
        }
        if pending.is_empty() {
            return refused;
        }
        tries += 1;
        tokio::time::sleep(backoff.jittered(tries)).await;
    }
}

/// Retries one refused end alone, a few times, then gives up: the attempt is answered
/// as stale, its lease stays, and the lease check hands the job back.
async fn retry_alone(queue: RedisQueue, worker: WorkerId, e: Ended) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for tries in 1..=REFUSED_TRIES {
        tokio::time::sleep(backoff.jittered(tries)).await;
        match queue.finish_many(&worker, std::slice::from_ref(&e.attempt)).await {
            Ok(mut r) => match r.pop() {
                Some(Ok(FinishState::Fenced)) | Some(Err(_)) | None => {}
                Some(Ok(state)) => {
                    let _ = e.done.send(state);
                    return;
                }
            },
            Err(err) => {
                tracing::warn!(job_id = %e.attempt.id, error = %err, "cannot report the attempt; retrying")
            }
        }
    }
    tracing::error!(job_id = %e.attempt.id, tries = REFUSED_TRIES,
        "giving up on recording this attempt's end; the lease check will hand the job back");
    let _ = e.done.send(FinishState::Stale);
}
