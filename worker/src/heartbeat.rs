//! Background duties of a live worker: the heartbeat that keeps its leases, the reaper
//! that recovers the leases of dead workers, and the watch for cancel requests.

use crate::running::RunningJobs;
use crate::Settings;
use common::queue::RedisQueue;
use common::WorkerInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Identity and state published in every heartbeat.
pub(crate) struct Beat {
    pub(crate) info: WorkerInfo,
    pub(crate) running: RunningJobs,
    pub(crate) draining: Arc<AtomicBool>,
}

impl Beat {
    fn snapshot(&self) -> WorkerInfo {
        let mut info = self.info.clone();
        info.jobs = self.running.ids().into_iter().map(String::from).collect();
        info.draining = self.draining.load(Ordering::Relaxed);
        info
    }
}

/// Publishes the heartbeat first, then on every interval until `stop` fires.
pub(crate) async fn publish(queue: &RedisQueue, beat: &Beat, settings: &Settings) -> common::Result<()> {
    queue
        .heartbeat(&beat.snapshot(), settings.heartbeat_ttl)
        .await
        .map(|_| ())
}

pub(crate) async fn heartbeat_loop(
    queue: RedisQueue,
    beat: Beat,
    settings: Arc<Settings>,
    metrics: Arc<crate::metrics::WorkerMetrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let result = {
            let _t = metrics.time("heartbeat");
            queue.heartbeat(&beat.snapshot(), settings.heartbeat_ttl).await
        };
        if result.is_err() {
            metrics.heartbeat_failures.inc();
        }
        match result {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "heartbeat had expired before this refresh; leases may have been recovered and those jobs may run twice"
            ),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying at the next interval"),
        }
    }
}

/// Recovers the jobs of dead workers. Every worker runs it, so recovery does not depend
/// on `scheduler serve` being up; the reap script is atomic and idempotent.
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
    }
}

/// Checks the cancel flags of the running jobs and fires the tokens of those flagged.
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
        let ids = running.ids();
        match queue.cancel_requested(&ids).await {
            Ok(flags) => {
                for (id, _) in ids.iter().zip(flags).filter(|(_, f)| *f) {
                    tracing::info!(job_id = %id, "cancellation requested");
                    running.cancel(id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot check for cancel requests"),
        }
    }
}
