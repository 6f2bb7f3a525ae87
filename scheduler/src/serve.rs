//! `scheduler serve`: the long-running loops that look after the queue.
//!
//! Workers also reap and promote, so the queue keeps working while `serve` is down;
//! `serve` makes recovery and retries prompt when no worker is idle to notice.

use crate::cli::ServeArgs;
use common::queue::RedisQueue;
use tokio_util::sync::CancellationToken;

/// Runs the reaper and the retry promoter until `shutdown` fires.
pub async fn run(queue: RedisQueue, args: ServeArgs, shutdown: CancellationToken) {
    tracing::info!(promote = ?args.promote_interval, reap = ?args.reap_interval, "scheduler serving");
    let mut promote = tokio::time::interval(args.promote_interval);
    let mut reap = tokio::time::interval(args.reap_interval);
    for tick in [&mut promote, &mut reap] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = promote.tick() => match queue.promote_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "promoted due retries"),
                Err(e) => tracing::warn!(error = %e, "promoting retries failed; retrying next tick"),
            },
            _ = reap.tick() => if let Err(e) = queue.reap().await {
                tracing::warn!(error = %e, "reaper pass failed; retrying next tick");
            },
        }
    }
    tracing::info!("scheduler stopped");
}
