//! Reporting one attempt's end: its outcome through the worker's [`Reporter`], or the
//! job handed back to its queue.
//!
//! [`Reporter`]: crate::report::Reporter

use super::{AttemptDeps, AttemptEnd};
use common::queue::{ClaimedJob, FinishState, Outcome};
use common::Backoff;
use std::time::Duration;

/// Records the outcome (or hands the job back). Redis faults are retried with backoff
/// (hand-backs only until the forced-shutdown token fires); if the report never lands,
/// the lease stays in this worker's in-flight hash and the reaper re-runs the job once
/// the heartbeat expires, so the job is not lost (at-least-once).
pub(super) async fn report(deps: &AttemptDeps, job: &ClaimedJob, end: AttemptEnd) {
    let outcome = end.outcome(job, &deps.settings);
    let state = match (&outcome, end.release_reason()) {
        (Some(o), _) => deps.reporter.finish(job, o.clone()).await,
        (None, Some(reason)) => match release(deps, job, &reason).await {
            Some(state) => state,
            None => return,
        },
        // The lease is gone: the job is another attempt's now, and nothing is reported.
        (None, None) => {
            deps.metrics.count_outcome("lost");
            return;
        }
    };
    match state {
        FinishState::Moved(state) => {
            tracing::info!(%state, outcome = ?outcome, "attempt reported");
            deps.metrics.count_outcome(outcome_label(outcome.as_ref()));
        }
        FinishState::Stale | FinishState::Fenced => {
            deps.metrics.count_outcome("stale");
            tracing::warn!(
                "lease was lost (heartbeat expired); the job was recovered and this outcome is dropped"
            );
        }
    }
}

/// Hands the job back to its queue; `None` when Redis stayed unreachable until the
/// forced-shutdown token fired.
async fn release(deps: &AttemptDeps, job: &ClaimedJob, reason: &str) -> Option<FinishState> {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut tries = 0;
    loop {
        let result = {
            let _t = deps.metrics.time("release");
            deps.queue
                .release_many(
                    &deps.worker,
                    &[common::queue::Lease {
                        id: job.id.clone(),
                        attempt: Some(job.attempt),
                        token: job.claim_token.clone(),
                    }],
                    reason,
                )
                .await
                .map(|mut s| s.pop().unwrap_or(FinishState::Stale))
        };
        let why = match result {
            Ok(FinishState::Fenced) => "heartbeat gone; waiting for the next heartbeat".to_string(),
            Ok(state) => return Some(state),
            Err(e) => e.to_string(),
        };
        tries += 1;
        tracing::warn!(error = %why, tries, "cannot hand the job back; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff.jittered(tries)) => {}
            _ = deps.hard_stop.cancelled() => {
                tracing::error!("giving up on handing the job back; the reaper will recover it");
                return None;
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
