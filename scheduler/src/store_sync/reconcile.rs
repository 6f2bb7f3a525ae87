//! Reconciliation: make Redis and the store agree after either lost something.
//!
//! 1. Drain the outbox, so the store is current.
//! 2. Jobs Redis has that the store lacks are recorded from their Redis records.
//! 3. Jobs the store says are queued, deferred, retrying or running but Redis lost
//!    (restart without persistence, FLUSHALL) are put back: queued and running ones at
//!    the head of their priority lists in their original order (running ones had lost
//!    their lease with the flush; they run again, at-least-once), deferred and retrying
//!    ones in the delayed set until they are due. Idempotent and safe while workers run:
//!    the restore script skips any job Redis holds.
//!
//! Step 3 needs the store to know this Redis. The store records the identity of the
//! queue it mirrors (a random id kept in Redis under the namespace). A Redis without
//! that identity, or with another one, is one the store has never seen: a new server, or
//! this one after it lost everything. Restoring old jobs into it would run them again
//! somewhere they were never meant to be (two demos against one default store), so it
//! is only done with `adopt` (`scheduler reconcile --adopt`); otherwise reconcile says
//! what it would restore. A store with nothing to restore adopts the Redis it meets.

use super::drain::drain_all;
use crate::metrics::ServeMetrics;
use common::queue::RedisQueue;
use common::store::{JobStore, Pricer};
use common::Result;
use serde::Serialize;

/// Jobs restored per script call.
const RESTORE_CHUNK: usize = 1000;

/// The `store_meta` entry naming the queue the store mirrors.
const MIRRORED: &str = "redis_identity";

/// What a reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Outbox entries written to the store first.
    pub drained: usize,
    /// Jobs recorded in the store from Redis.
    pub recorded: usize,
    /// Jobs put back into Redis from the store.
    pub restored: usize,
    /// Jobs the store would restore into a Redis it does not know (without `adopt`).
    pub would_restore: usize,
    /// A few of those ids, for the message.
    pub would_restore_ids: Vec<String>,
}

/// Runs the three steps; transitions drained on the way are counted in `metrics`.
pub async fn reconcile(
    queue: &RedisQueue,
    store: &JobStore,
    adopt: bool,
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
    let mirrored = store.meta(MIRRORED).await?;
    let current = queue.identity().await?;
    let known = match (&mirrored, &current) {
        (Some(m), Some(c)) => m == c,
        // The store meets its first Redis.
        (None, _) => true,
        (Some(_), None) => false,
    };
    let mut report = Report {
        drained,
        recorded,
        ..Report::default()
    };
    if !known && !adopt && !items.is_empty() {
        report.would_restore = items.len();
        report.would_restore_ids = items.iter().take(10).map(|i| i.id.to_string()).collect();
        tracing::warn!(
            jobs = items.len(),
            first = ?report.would_restore_ids,
            "this Redis is not the one the job store mirrors (a new server, or one that lost its data); \
             nothing restored: run `scheduler reconcile --adopt` to restore these jobs into it"
        );
        return Ok(report);
    }
    let identity = queue.ensure_identity().await?;
    if mirrored.as_deref() != Some(identity.as_str()) {
        store.set_meta(MIRRORED, &identity).await?;
    }
    // Each call pushes its chunk to the head of the lists, so the newest chunk goes first
    // and the oldest ends up at the very front.
    for chunk in items.chunks(RESTORE_CHUNK).rev() {
        report.restored += queue.restore(chunk).await?;
    }
    // The restores themselves are transitions: record them too.
    drain_all(queue, store, metrics, pricer).await?;
    Ok(report)
}
