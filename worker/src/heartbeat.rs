//! Background duties of a live worker: the heartbeat that keeps its leases (and checks
//! them against what it runs), the fence that stops its attempts when it cannot keep
//! them, the reaper that recovers the leases of dead workers, and the watch for cancel
//! requests.
//!
//! The bound that keeps one running copy per job: a worker's leases are valid while its
//! heartbeat key lives, which is at least `ttl` after the last refresh the worker *sent*
//! and Redis acknowledged. The worker stops all its attempts `fence_after` after that
//! moment, by its own monotonic clock, with `fence_after` = ttl − the time stopping takes
//! − one heartbeat interval. So its attempts have stopped before the reaper can take
//! their leases, provided the worker process is scheduled (a paused worker cannot stop
//! anything) and clocks run at the same rate to within that interval.

use crate::running::{AttemptKey, RunningJobs};
use crate::Settings;
use common::preemption::Directive;
use common::queue::{FinishState, Lease, RedisQueue};
use common::{WorkerId, WorkerInfo};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Identity and state published in every heartbeat.
pub(crate) struct Beat {
    pub(crate) info: WorkerInfo,
    pub(crate) running: RunningJobs,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) devices: crate::devices::Devices,
}

impl Beat {
    fn snapshot(&self) -> WorkerInfo {
        let mut info = self.info.clone();
        info.gpus_busy = self.devices.busy();
        info.jobs = self.running.ids().into_iter().map(String::from).collect();
        info.draining = self.draining.load(Ordering::Relaxed);
        info
    }
}

/// When the worker last knew its leases valid. Whether it has fenced itself since is the
/// registry's to know ([`RunningJobs::is_fenced`]): it fences the attempts it registers.
#[derive(Debug)]
pub(crate) struct Liveness {
    last_ok: watch::Sender<Instant>,
}

impl Liveness {
    pub(crate) fn new(at: Instant) -> Arc<Self> {
        Arc::new(Liveness {
            last_ok: watch::Sender::new(at),
        })
    }

    /// A heartbeat sent at `sent` was acknowledged.
    fn beat_ok(&self, sent: Instant) {
        self.last_ok.send_if_modified(|t| {
            let newer = sent > *t;
            if newer {
                *t = sent;
            }
            newer
        });
    }
}

/// Publishes the first heartbeat (before the first claim, so the reaper never sees a
/// lease of a worker it has never seen alive).
pub(crate) async fn publish(
    queue: &RedisQueue,
    beat: &Beat,
    settings: &Settings,
    liveness: &Liveness,
) -> common::Result<()> {
    let sent = Instant::now();
    queue
        .heartbeat_leases(&beat.snapshot(), settings.heartbeat_ttl, settings.reappear)
        .await?;
    liveness.beat_ok(sent);
    Ok(())
}

pub(crate) async fn heartbeat_loop(
    queue: RedisQueue,
    beat: Beat,
    settings: Arc<Settings>,
    liveness: Arc<Liveness>,
    metrics: Arc<crate::metrics::WorkerMetrics>,
    stop: CancellationToken,
) {
    let worker = WorkerId::from_raw(beat.info.id.clone());
    let mut tick = tokio::time::interval(settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A call that hangs (a half-open connection) must not hold up the next try.
    let patience = settings.heartbeat_interval.max(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // Only attempts registered before the heartbeat was sent can be judged by it: a
        // claim answered after that may have run after the heartbeat read the leases.
        let before: HashSet<AttemptKey> = beat.running.attempts().into_iter().collect();
        let sent = Instant::now();
        let result = {
            let _t = metrics.time("heartbeat");
            tokio::time::timeout(
                patience,
                queue.heartbeat_leases(&beat.snapshot(), settings.heartbeat_ttl, settings.reappear),
            )
            .await
        };
        match result {
            Ok(Ok(hb)) => {
                liveness.beat_ok(sent);
                if beat.running.unfence() {
                    tracing::info!("heartbeat refreshed again; claiming resumes");
                }
                if !hb.existed {
                    tracing::warn!(
                        "heartbeat had expired before this refresh; checking which leases are still ours"
                    );
                }
                check_leases(&queue, &worker, &beat.running, &before, &hb.leases).await;
            }
            Ok(Err(e)) => {
                metrics.heartbeat_failures.inc();
                tracing::warn!(error = %e, "heartbeat failed; retrying at the next interval");
            }
            Err(_) => {
                metrics.heartbeat_failures.inc();
                tracing::warn!(waited = ?patience, "heartbeat got no answer; retrying at the next interval");
            }
        }
    }
}

/// Compares the leases Redis holds for this worker with the attempts it holds:
/// - an attempt whose lease is gone (or is for another attempt) is stopped: the job was
///   recovered, and another copy may run;
/// - a lease for no attempt here, from a claim that has answered, is handed back to the
///   queue: its claim reply was lost, or Redis lost the report that ended it (a crash
///   with AOF everysec, an asynchronous failover). Nothing runs it, so it would
///   otherwise stay `running` for as long as this worker lives.
pub(crate) async fn check_leases(
    queue: &RedisQueue,
    worker: &WorkerId,
    running: &RunningJobs,
    before: &HashSet<AttemptKey>,
    leases: &[Lease],
) {
    let (pending, held_here) = running.snapshot();
    // A lease is for an attempt when the job, the attempt number and the claim token all
    // match (leases of earlier versions carry neither number nor token: any attempt).
    let covers = |l: &Lease, key: &AttemptKey| {
        l.id == key.0 && l.attempt.is_none_or(|a| a == key.1) && (l.token.is_empty() || l.token == key.2)
    };
    for key in before {
        let ours = leases.iter().any(|l| covers(l, key));
        // An attempt that has ended may have had its lease released by its report.
        if !ours && held_here.get(key) == Some(&false) {
            tracing::error!(job_id = %key.0, attempt = key.1,
                "lease lost (the job was recovered while this worker could not heartbeat); stopping the attempt");
            running.lose(key);
        }
    }
    let orphans: Vec<Lease> = leases
        .iter()
        .filter(|l| !l.token.parse().is_ok_and(|t: u64| pending.contains(&t)))
        .filter(|l| !held_here.keys().any(|key| covers(l, key)))
        .cloned()
        .collect();
    if orphans.is_empty() {
        return;
    }
    let reason =
        format!("lease held by worker {worker} but not running there (lost claim reply or lost report)");
    // Bounded, so that a slow answer cannot hold up the next heartbeat.
    let patience = std::time::Duration::from_secs(2);
    match tokio::time::timeout(patience, queue.release_many(worker, &orphans, &reason)).await {
        Ok(Ok(states)) => {
            for (l, state) in orphans.iter().zip(states) {
                if !matches!(state, FinishState::Stale) {
                    tracing::warn!(job_id = %l.id, attempt = ?l.attempt, ?state, "handed back a lease nothing here runs");
                }
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot hand back leases nothing here runs; retrying at the next heartbeat")
        }
        Err(_) => tracing::warn!(
            "handing back leases nothing here runs got no answer; retrying at the next heartbeat"
        ),
    }
}

/// Stops every attempt once the worker has gone `fence_after` without an acknowledged
/// heartbeat, before its heartbeat can expire and the reaper give the jobs to another
/// worker. It claims nothing until a heartbeat lands again.
pub(crate) async fn fence_loop(
    running: RunningJobs,
    liveness: Arc<Liveness>,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let mut beats = liveness.last_ok.subscribe();
    loop {
        let deadline = *beats.borrow_and_update() + settings.fence_after;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            changed = beats.changed() => {
                if changed.is_err() { return; }
                continue;
            }
            _ = stop.cancelled() => return,
        }
        if let Some(n) = running.fence_all() {
            tracing::error!(attempts = n, after = ?settings.fence_after,
                "no heartbeat acknowledged for too long: stopping every attempt before the lease can expire and the job run elsewhere");
        }
        tokio::select! {
            changed = beats.changed() => if changed.is_err() { return; },
            _ = stop.cancelled() => return,
        }
    }
}

/// Recovers the jobs of dead workers, and starts the preemptions the admission
/// configuration calls for. Every worker runs it, so neither depends on `scheduler serve`
/// being up; both scripts are atomic and idempotent.
pub(crate) async fn reaper_loop(queue: RedisQueue, settings: Arc<Settings>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(settings.reap_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = queue.reap().await {
            tracing::warn!(error = %e, "reaper pass failed; retrying at the next interval");
        }
        // Preemption rides on the same tick, for the same reason: it must not depend on
        // `scheduler serve`. The script is atomic; concurrent passes start one each.
        match queue.preempt().await {
            Ok(started) => {
                for s in started {
                    tracing::info!(pool = %s.pool, preemptor = %s.preemptor, victims = s.victims.len(), "preemption started");
                }
            }
            Err(e) => tracing::warn!(error = %e, "preemption pass failed; retrying at the next interval"),
        }
    }
}

/// Asks, every cancel-check interval, what to do with the running jobs (`watch.lua`):
/// fires the cancel token of those whose cancellation was requested, and the preemption
/// token of those chosen as victims.
pub(crate) async fn cancel_watch_loop(
    queue: RedisQueue,
    running: RunningJobs,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.cancel_check_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let jobs = running.watched();
        match queue.watch(&jobs).await {
            Ok(directives) => {
                for ((id, _), d) in jobs.iter().zip(directives) {
                    match d {
                        Directive::Run => {}
                        Directive::Cancel => {
                            tracing::info!(job_id = %id, "cancellation requested");
                            running.cancel(id);
                        }
                        Directive::Preempt { by, grace } => {
                            tracing::info!(job_id = %id, preemptor = %by, ?grace, "preempted");
                            running.preempt(id, &by, grace);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot check for cancel requests and preemptions"),
        }
    }
}
