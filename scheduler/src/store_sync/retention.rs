//! Retention: finished jobs leave Redis after a while (the store keeps them), and the
//! store forgets jobs past its own retention, if one is set.

use common::queue::RedisQueue;
use common::store::JobStore;
use common::{now_ms, JobState};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long each kind of record is kept; zero keeps forever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub redis: Duration,
    /// Dead jobs leave Redis this long after they end (zero keeps them).
    pub dead: Duration,
    pub store: Duration,
}

/// Candidates read from Redis per round.
const PAGE: usize = 500;

/// One pass: returns (removed from Redis, removed from the store).
///
/// A job leaves Redis only once the store holds its terminal state with the same end
/// time: jobs whose end has not reached the store (the drain is behind, or its entry was
/// refused and set aside) stay, and are skipped rather than blocking those after them.
pub async fn run_once(queue: &RedisQueue, store: &JobStore, keep: Retention) -> common::Result<(usize, u64)> {
    let now = now_ms();
    let mut from_redis = 0;
    let cutoff = |keep: Duration| (!keep.is_zero()).then(|| now.saturating_sub(keep.as_millis() as u64));
    let (done_cutoff, dead_cutoff) = (cutoff(keep.redis), cutoff(keep.dead));
    // Jobs that ended after the oldest transition still in the outbox cannot be in the
    // store yet: looking them up would only skip them, page after page, while the drain
    // is behind.
    let drained_to = match queue.outbox_oldest_ms().await {
        Ok(d) => d,
        // Only a narrowing: without it the pass looks up more, and the store decides.
        Err(e) => {
            tracing::warn!(error = %e, "retention cannot read the outbox's oldest entry; not narrowing");
            None
        }
    };
    if let Some(latest) = done_cutoff
        .max(dead_cutoff)
        .map(|c| drained_to.map_or(c, |d| c.min(d.saturating_sub(1))))
    {
        let started = std::time::Instant::now();
        let (mut skipped, mut looked_up) = (0, 0);
        let mut store_time = Duration::ZERO;
        loop {
            let candidates = queue.finished_before(latest, skipped, PAGE).await?;
            if candidates.is_empty() {
                break;
            }
            looked_up += candidates.len();
            let ids: Vec<String> = candidates.iter().map(|(id, _)| id.clone()).collect();
            let asked = std::time::Instant::now();
            let recorded = store.recorded_ends(&ids).await?;
            store_time += asked.elapsed();
            let due: Vec<(String, u64)> = recorded
                .into_iter()
                .filter(|(_, state, at)| {
                    let limit = if *state == JobState::Dead {
                        dead_cutoff
                    } else {
                        done_cutoff
                    };
                    limit.is_some_and(|c| *at <= c)
                })
                .map(|(id, _, at)| (id, at))
                .collect();
            let n = queue.expire_recorded(&due).await?;
            from_redis += n;
            skipped += candidates.len() - n;
            if candidates.len() < PAGE {
                break;
            }
        }
        if looked_up > 0 {
            tracing::debug!(
                looked_up,
                removed = from_redis,
                skipped,
                ms = started.elapsed().as_millis() as u64,
                store_ms = store_time.as_millis() as u64,
                "retention pass over Redis"
            );
        }
    }
    let mut from_store = 0;
    if !keep.store.is_zero() {
        let cutoff = now.saturating_sub(keep.store.as_millis() as u64);
        from_store = store.purge_finished_before(cutoff).await?;
        queue.forget_retired_before(cutoff).await?;
    }
    Ok((from_redis, from_store))
}

pub async fn retention_loop(
    queue: RedisQueue,
    store: JobStore,
    keep: Retention,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match run_once(&queue, &store, keep).await {
            Ok((0, 0)) => {}
            Ok((r, s)) => tracing::info!(from_redis = r, from_store = s, "retention removed finished jobs"),
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying next time"),
        }
    }
}
