//! The attempts this worker holds, from the claim that took them until their end is
//! reported, each with the tokens that stop it.
//!
//! Entries are keyed by job *and attempt*: after a lease was lost and the job came back to
//! this same worker, the old attempt (still stopping) and the new one are two entries,
//! and the end of the old one can neither settle nor stop the new one.

use common::queue::ClaimedJob;
use common::JobId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One attempt, as the registry knows it.
pub(crate) type AttemptKey = (JobId, u32);

/// Why the worker stops an attempt that did not end by itself, besides its timeout and
/// the forced shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interruption {
    /// Its cancellation was requested.
    Cancelled,
    /// The worker could not refresh its heartbeat for too long: it stops its attempts
    /// before the heartbeat can expire and the reaper hand the jobs to another worker.
    Fenced,
    /// The lease is gone (the job was recovered while this worker could not heartbeat):
    /// another copy may already run.
    LeaseLost,
}

/// The tokens an attempt watches.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptTokens {
    pub(crate) cancelled: CancellationToken,
    pub(crate) fenced: CancellationToken,
    pub(crate) lost: CancellationToken,
    /// Fired when the attempt has ended and its end is being reported: its lease may be
    /// released at any moment, which is no sign of a lost lease.
    pub(crate) ended: CancellationToken,
}

impl AttemptTokens {
    /// Resolves when any of the tokens fires, with which one.
    pub(crate) async fn interrupted(&self) -> Interruption {
        tokio::select! {
            _ = self.lost.cancelled() => Interruption::LeaseLost,
            _ = self.fenced.cancelled() => Interruption::Fenced,
            _ = self.cancelled.cancelled() => Interruption::Cancelled,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    attempts: HashMap<AttemptKey, AttemptTokens>,
    /// Tokens of claim calls sent and not answered yet: their leases may be in Redis
    /// before the attempts are registered here.
    pending_claims: HashSet<u64>,
    next_claim: u64,
}

/// Shared registry of held attempts. The lock is never held across an await.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunningJobs(Arc<Mutex<Inner>>);

impl RunningJobs {
    /// A token for the next claim call, marked pending until [`claim_answered`](Self::claim_answered).
    pub(crate) fn start_claim(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_claim += 1;
        let token = inner.next_claim;
        inner.pending_claims.insert(token);
        token
    }

    /// The claim call `token` has answered (or failed); its attempts are registered.
    pub(crate) fn claim_answered(&self, token: u64) {
        self.lock().pending_claims.remove(&token);
    }

    /// Registers a claimed attempt; returns the tokens that stop it.
    pub(crate) fn insert(&self, job: &ClaimedJob) -> AttemptTokens {
        let tokens = AttemptTokens::default();
        self.lock()
            .attempts
            .insert((job.id.clone(), job.attempt), tokens.clone());
        tokens
    }

    /// Forgets an attempt whose end has been reported.
    pub(crate) fn remove(&self, id: &JobId, attempt: u32) {
        self.lock().attempts.remove(&(id.clone(), attempt));
    }

    /// What the lease check compares with Redis's leases, read in one step: the claim
    /// calls not answered yet, and the attempts held (with whether each has ended). Read
    /// together because a claim registers its attempts before it counts as answered.
    pub(crate) fn snapshot(&self) -> (HashSet<u64>, HashMap<AttemptKey, bool>) {
        let inner = self.lock();
        let held = inner
            .attempts
            .iter()
            .map(|(k, t)| (k.clone(), t.ended.is_cancelled()))
            .collect();
        (inner.pending_claims.clone(), held)
    }

    /// Ids of the jobs held (for heartbeats and the cancel watch).
    pub(crate) fn ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.lock().attempts.keys().map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The attempts held.
    pub(crate) fn attempts(&self) -> Vec<AttemptKey> {
        self.lock().attempts.keys().cloned().collect()
    }

    /// Number of attempts held.
    pub(crate) fn len(&self) -> usize {
        self.lock().attempts.len()
    }

    /// Fires the cancel token of every attempt of `id` held here.
    pub(crate) fn cancel(&self, id: &JobId) {
        for (key, t) in self.lock().attempts.iter() {
            if &key.0 == id {
                t.cancelled.cancel();
            }
        }
    }

    /// Stops one attempt whose lease is gone.
    pub(crate) fn lose(&self, key: &AttemptKey) {
        if let Some(t) = self.lock().attempts.get(key) {
            t.lost.cancel();
        }
    }

    /// Stops every attempt held (self-fencing). Returns how many there were.
    pub(crate) fn fence_all(&self) -> usize {
        let inner = self.lock();
        for t in inner.attempts.values() {
            t.fenced.cancel();
        }
        inner.attempts.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
