//! The claim loop: while slots are free, take the most urgent jobs, as many as there
//! are free slots in one round trip; when nothing is queued, block on Redis until an
//! enqueue wakes us (no sleep-polling).

use crate::attempt::{self, AttemptDeps};
use common::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Claims jobs and spawns their attempts into `tracker` until `shutdown` fires.
pub(crate) async fn claim_loop(
    deps: Arc<AttemptDeps>,
    slots: Arc<Semaphore>,
    tracker: &TaskTracker,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0;
    let mut blocking = None;
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => return,
        };
        if shutdown.is_cancelled() {
            return;
        }
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        // The claim itself is never abandoned half-way: its reply carries the leases.
        let claimed = {
            let _t = deps.metrics.time("claim");
            deps.queue.claim_many(&deps.worker, permits.len()).await
        };
        match claimed {
            Ok(jobs) if !jobs.is_empty() => {
                failures = 0;
                // Unused permits go back to the semaphore when `permits` is dropped.
                for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                    tracker.spawn(attempt::run(job, deps.clone(), permit));
                }
                continue;
            }
            Ok(_) => {
                drop(permits);
                if blocking.is_none() {
                    blocking = deps
                        .queue
                        .blocking_connection()
                        .await
                        .map_err(|e| {
                            tracing::warn!(error = %e, "cannot open the blocking connection");
                        })
                        .ok();
                }
                if let Some(conn) = blocking.as_mut() {
                    tokio::select! {
                        woke = deps.queue.wait_for_work(conn, idle_timeout) => {
                            if let Err(e) = woke {
                                tracing::warn!(error = %e, "waiting for work failed");
                                blocking = None;
                            }
                            continue;
                        }
                        _ = shutdown.cancelled() => return,
                    }
                }
                failures += 1;
            }
            Err(e) => {
                drop(permits);
                failures += 1;
                tracing::warn!(error = %e, failures, "claim failed; backing off");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.jittered(failures)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
