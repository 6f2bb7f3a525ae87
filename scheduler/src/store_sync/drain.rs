//! Drains the outbox stream into the job store.
//!
//! Order of operations per batch: read the oldest entries, commit them to the store in one
//! transaction, then delete them from the stream. A crash after the commit replays the
//! batch, which the store ignores (idempotent by entry id). A store outage leaves the
//! entries in Redis: the queue keeps running, and they are written when the store returns.

use crate::metrics::ServeMetrics;
use common::queue::{OutboxEvent, RedisQueue};
use common::store::{JobStore, Pricer};
use common::{Backoff, Result};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Entries read and committed per round trip.
pub const BATCH: usize = 1000;

/// Writes one batch. Returns the number of outbox entries handled (0 when it was empty).
/// Transitions new to the store are counted in `metrics`.
pub async fn drain_once(
    queue: &RedisQueue,
    store: &JobStore,
    batch: usize,
    metrics: Option<&ServeMetrics>,
    pricer: Option<&Pricer>,
) -> Result<usize> {
    let events = queue.read_outbox(batch).await?;
    if events.is_empty() {
        return Ok(0);
    }
    let specs = specs_of_new_jobs(queue, store, &events).await?;
    let applied = match store.apply(&events, &specs, pricer).await {
        Ok(applied) => applied,
        Err(e) => apply_one_by_one(queue, store, &events, &specs, pricer, e).await?,
    };
    if let Some(m) = metrics {
        for t in &applied {
            m.observe(t);
        }
    }
    queue.ack_outbox(&events).await?;
    Ok(events.len())
}

/// The specs of the jobs these entries name that the store has no row for yet: they are
/// in the job hashes (enqueue entries do not carry them, and retention keeps the hash
/// until the store holds the job's end).
async fn specs_of_new_jobs(
    queue: &RedisQueue,
    store: &JobStore,
    events: &[OutboxEvent],
) -> Result<HashMap<String, String>> {
    let mut ids: Vec<String> = events
        .iter()
        .filter(|e| e.spec.is_none())
        .map(|e| e.job.to_string())
        .collect();
    ids.sort();
    ids.dedup();
    let mut specs = HashMap::new();
    if !ids.is_empty() {
        let missing = store.missing(&ids).await?;
        for (id, spec) in missing.iter().zip(queue.specs(&missing).await?) {
            if let Some(spec) = spec {
                specs.insert(id.clone(), spec);
            }
        }
    }
    Ok(specs)
}

/// After the store refused a batch: when the store takes writes at all (a probe write),
/// applies the entries one at a time, in order, and sets aside in `{ns}:outbox:dead` each
/// one it refuses, with the error, so that one bad entry cannot stop the drain (and with
/// it retention). When the store is down, the batch stays in the outbox for later.
async fn apply_one_by_one(
    queue: &RedisQueue,
    store: &JobStore,
    events: &[OutboxEvent],
    specs: &HashMap<String, String>,
    pricer: Option<&Pricer>,
    batch_error: common::Error,
) -> Result<Vec<common::store::AppliedTransition>> {
    if !matches!(batch_error, common::Error::StoreRefused(_)) {
        return Err(batch_error);
    }
    store
        .set_meta("drain_probe", &common::now_ms().to_string())
        .await?;
    let mut applied = Vec::new();
    let mut refused = Vec::new();
    for e in events {
        match store.apply(std::slice::from_ref(e), specs, pricer).await {
            Ok(mut one) => applied.append(&mut one),
            Err(common::Error::StoreRefused(why)) => {
                tracing::error!(entry = %e.event_id, job_id = %e.job, to = %e.to, error = %why,
                    "the job store refused a transition; set aside (see `scheduler store errors`)");
                refused.push((e.clone(), why));
            }
            Err(other) => return Err(other),
        }
    }
    queue.set_aside_outbox(&refused).await?;
    Ok(applied)
}

/// Applies the entries the store refused again, oldest first, with their original ids
/// (so they take their place in each job's history). Returns (taken, still refused).
pub async fn retry_refused(
    queue: &RedisQueue,
    store: &JobStore,
    pricer: Option<&Pricer>,
) -> Result<(usize, usize)> {
    let entries = queue.refused_entries(100_000).await?;
    let events: Vec<OutboxEvent> = entries.iter().map(|r| r.event.clone()).collect();
    let specs = specs_of_new_jobs(queue, store, &events).await?;
    let (mut taken, mut left) = (Vec::new(), 0);
    for r in &entries {
        match store.apply(std::slice::from_ref(&r.event), &specs, pricer).await {
            Ok(_) => taken.push(r.dead_id.as_str()),
            Err(common::Error::StoreRefused(why)) => {
                queue.update_refused(r, &why).await?;
                left += 1;
            }
            Err(e) => return Err(e),
        }
    }
    queue.drop_refused(&taken).await?;
    Ok((taken.len(), left))
}

/// Drains until the outbox is empty.
pub async fn drain_all(
    queue: &RedisQueue,
    store: &JobStore,
    metrics: Option<&ServeMetrics>,
    pricer: Option<&Pricer>,
) -> Result<usize> {
    let mut total = 0;
    loop {
        match drain_once(queue, store, BATCH, metrics, pricer).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// Runs until `shutdown`: drains whenever there is something, otherwise checks every
/// `idle`; on failure backs off and says how much is waiting.
pub async fn drain_loop(
    queue: RedisQueue,
    store: JobStore,
    idle: Duration,
    metrics: std::sync::Arc<ServeMetrics>,
    pricer: std::sync::Arc<Pricer>,
    shutdown: CancellationToken,
) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut failures = 0u32;
    loop {
        let pause = match drain_once(&queue, &store, BATCH, Some(&metrics), Some(&*pricer)).await {
            Ok(n) => {
                if failures > 0 {
                    tracing::info!(after_failures = failures, "job store writes resumed");
                    failures = 0;
                }
                if n == BATCH {
                    continue;
                }
                idle
            }
            Err(e) => {
                failures += 1;
                metrics.store_write_failures.inc();
                let waiting = queue.outbox_len().await.ok();
                tracing::warn!(error = %e, failures, waiting = ?waiting, store = store.display_url(),
                    "cannot write transitions to the job store; they wait in the Redis outbox");
                backoff.jittered(failures)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Leave as little as possible behind on a clean stop.
    if let Err(e) = drain_all(&queue, &store, Some(&metrics), Some(&*pricer)).await {
        tracing::warn!(error = %e, "final drain failed; the outbox keeps the rest");
    }
}
