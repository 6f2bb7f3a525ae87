//! Reconciliation: make Redis and the store agree after either lost something.
//!
//! 1. Drain the outbox, so the store is current.
//! 2. Jobs Redis has that the store lacks are recorded from their Redis records.
//! 3. Jobs the store says are queued, retrying or running but Redis lost (restart without
//!    persistence, FLUSHALL) are put back at the head of their priority lists in their
//!    original order. Running ones had lost their lease with the flush; they run again
//!    (at-least-once). Idempotent and safe while workers run: the restore script skips any
//!    job Redis holds.

use super::drain::drain_all;
use crate::metrics::ServeMetrics;
use common::queue::RedisQueue;
use common::store::{JobStore, Pricer};
use common::Result;
use serde::Serialize;

/// Jobs restored per script call.
const RESTORE_CHUNK: usize = 1000;

/// What a reconciliation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Outbox entries written to the store first.
    pub drained: usize,
    /// Jobs recorded in the store from Redis.
    pub recorded: usize,
    /// Jobs put back into Redis from the store.
    pub restored: usize,
}

/// Runs the three steps; transitions drained on the way are counted in `metrics`.
pub async fn reconcile(
    queue: &RedisQueue,
    store: &JobStore,
    metrics: Option<&ServeMetrics>,
    pricer: Option<&Pricer>,
) -> Result<Report> {
    let drained = drain_all(queue, store, metrics, pricer).await?;
    let mut recorded = 0;
    for chunk in queue.job_ids().await?.chunks(500) {
        for id in store.missing(chunk).await? {
            let Ok(id) = id.parse() else { continue };
            if let Some(record) = queue.get(&id).await? {
                store.record_from_redis(&record).await?;
                recorded += 1;
            }
        }
    }
    let items = store.restorable().await?;
    let mut restored = 0;
    // Each call pushes its chunk to the head of the lists, so the newest chunk goes first
    // and the oldest ends up at the very front.
    for chunk in items.chunks(RESTORE_CHUNK).rev() {
        restored += queue.restore(chunk).await?;
    }
    // The restores themselves are transitions: record them too.
    drain_all(queue, store, metrics, pricer).await?;
    Ok(Report {
        drained,
        recorded,
        restored,
    })
}
