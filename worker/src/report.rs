//! Reporting an attempt's end to the queue, retried until Redis takes it.

use crate::attempt::{AttemptDeps, AttemptEnd};
use common::queue::{ClaimedJob, FinishState, Outcome};
use common::Backoff;
use std::time::Duration;

/// Records the outcome (or hands the job back). Redis faults are retried with backoff
/// until the forced-shutdown token fires; if the report never lands, the lease stays in
/// this worker's in-flight hash and the reaper re-runs the job once the heartbeat expires,
/// so the job is not lost (at-least-once).
pub(crate) async fn report(deps: &AttemptDeps, job: &ClaimedJob, end: AttemptEnd) {
    let outcome = end.outcome(job, &deps.settings);
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut tries = 0;
    loop {
        let result = match &outcome {
            Some(o) => {
                let _t = deps.metrics.time("finish");
                deps.queue.finish(&deps.worker, &job.id, o).await
            }
            None => {
                let _t = deps.metrics.time("release");
                deps.queue
                    .release(&deps.worker, &job.id, "worker shutting down")
                    .await
            }
        };
        match result {
            Ok(FinishState::Moved(state)) => {
                tracing::info!(%state, outcome = ?outcome, "attempt reported");
                deps.metrics.count_outcome(outcome_label(outcome.as_ref()));
                return;
            }
            Ok(FinishState::Stale) => {
                deps.metrics.count_outcome("stale");
                tracing::warn!(
                    "lease was lost (heartbeat expired); the job was recovered and this outcome is dropped"
                );
                return;
            }
            Err(e) => {
                tries += 1;
                tracing::warn!(error = %e, tries, "cannot report attempt; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.jittered(tries)) => {}
                    _ = deps.hard_stop.cancelled(), if outcome.is_none() => {
                        tracing::error!("giving up on handing the job back; the reaper will recover it");
                        return;
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
