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
        if deps.running.is_fenced() {
            // The worker stopped its attempts because it cannot keep leases: take none.
            drop(permits);
            failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff.jittered(failures)) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        // The claim itself is never abandoned half-way: its reply carries the leases. If
        // the reply is lost anyway, the token tells the lease check that no attempt will
        // come of those leases once this call has returned.
        let token = deps.running.start_claim();
        let claimed = {
            let _t = deps.metrics.time("claim");
            let room = common::queue::Room {
                pools: deps.pools.clone(),
                free_gpus: deps.devices.free(),
            };
            deps.queue
                .claim_within(&deps.worker, permits.len(), &token.to_string(), &room)
                .await
        };
        let claimed = claimed.map(|c| {
            let jobs: Vec<_> = c
                .jobs
                .into_iter()
                .map(|job| {
                    let tokens = deps.running.insert(&job);
                    (job, tokens)
                })
                .collect();
            jobs
        });
        deps.running.claim_answered(token);
        match claimed {
            Ok(jobs) if !jobs.is_empty() => {
                failures = 0;
                // Unused permits go back to the semaphore when `permits` is dropped.
                for ((job, tokens), permit) in jobs.into_iter().zip(permits.drain(..)) {
                    // The claim took only what fits the devices free when it was sent, and
                    // nothing else takes devices, so this always succeeds.
                    let Some(grant) = deps.devices.take(job.spec.resources.gpus) else {
                        tracing::error!(job_id = %job.id, gpus = job.spec.resources.gpus,
                            "claimed a job its devices cannot hold; the lease check hands it back");
                        deps.running.remove(&job);
                        continue;
                    };
                    tracker.spawn(attempt::run(job, tokens, deps.clone(), permit, grant));
                }
                continue;
            }
            Err(common::Error::RestartHold(ms)) => {
                drop(permits);
                tracing::info!(
                    wait_ms = ms,
                    "Redis restarted or failed over; claims wait for workers to check their leases"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms.max(10))) => {}
                    _ = shutdown.cancelled() => return,
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
                    // A client-side bound as well as the server's: on a half-open socket
                    // the server's timeout never reaches us.
                    let bound = idle_timeout + Duration::from_secs(2);
                    tokio::select! {
                        woke = tokio::time::timeout(bound, deps.queue.wait_for_work(conn, idle_timeout)) => {
                            match woke {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => {
                                    tracing::warn!(error = %e, "waiting for work failed");
                                    blocking = None;
                                }
                                Err(_) => {
                                    tracing::warn!(?bound, "waiting for work got no answer; reconnecting");
                                    blocking = None;
                                }
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
                if matches!(e, common::Error::Fenced(_)) {
                    tracing::warn!("heartbeat gone; claims wait for the next heartbeat");
                } else {
                    tracing::warn!(error = %e, failures, "claim failed; backing off");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.jittered(failures)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
