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
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One attempt, as the registry knows it: the job, the attempt number and the token of the
/// claim that took it. The number alone can repeat: a job handed back uncounted and claimed
/// again by this worker gets the same one, while the old attempt may still be stopping.
pub(crate) type AttemptKey = (JobId, u32, String);

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
    /// It was chosen as a preemption victim: it stops gently and goes back to the queue.
    Preempted,
}

/// The tokens an attempt watches.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptTokens {
    pub(crate) cancelled: CancellationToken,
    pub(crate) fenced: CancellationToken,
    pub(crate) lost: CancellationToken,
    /// Fired when the job is a preemption victim; `preemption` then says for whom, and
    /// the grace it gets.
    pub(crate) preempted: CancellationToken,
    pub(crate) preemption: Arc<Mutex<Option<(JobId, Duration)>>>,
    /// The job's own preemption grace (its spec's `preempt_grace_secs`).
    pub(crate) own_grace: Option<u64>,
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
            _ = self.preempted.cancelled() => Interruption::Preempted,
        }
    }

    /// For whom the job was preempted, and the grace it gets, once `preempted` fired.
    pub(crate) fn preemption(&self) -> Option<(JobId, Duration)> {
        self.preemption.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Default)]
struct Inner {
    attempts: HashMap<AttemptKey, AttemptTokens>,
    /// Tokens of claim calls sent and not answered yet: their leases may be in Redis
    /// before the attempts are registered here.
    pending_claims: HashSet<u64>,
    next_claim: u64,
    /// Set while the worker is fenced: attempts registered meanwhile (a claim that was in
    /// flight when the fence fired) are fenced at once.
    fenced: bool,
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
        let tokens = AttemptTokens {
            own_grace: job.spec.preempt_grace_secs,
            ..AttemptTokens::default()
        };
        let mut inner = self.lock();
        if inner.fenced {
            tokens.fenced.cancel();
        }
        inner.attempts.insert(key_of(job), tokens.clone());
        tokens
    }

    /// Forgets an attempt whose end has been reported.
    pub(crate) fn remove(&self, job: &ClaimedJob) {
        self.lock().attempts.remove(&key_of(job));
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
        let mut ids: Vec<JobId> = self.lock().attempts.keys().map(|(id, _, _)| id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The jobs held, each with its own preemption grace, for the watch.
    pub(crate) fn watched(&self) -> Vec<(JobId, Option<u64>)> {
        let mut v: Vec<(JobId, Option<u64>)> = self
            .lock()
            .attempts
            .iter()
            .map(|((id, _, _), t)| (id.clone(), t.own_grace))
            .collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    }

    /// Stops every attempt of `id` as a preemption victim of `by`, with `grace`.
    pub(crate) fn preempt(&self, id: &JobId, by: &JobId, grace: Duration) {
        for (key, t) in self.lock().attempts.iter() {
            if &key.0 == id && !t.preempted.is_cancelled() {
                *t.preemption.lock().unwrap_or_else(|p| p.into_inner()) = Some((by.clone(), grace));
                t.preempted.cancel();
            }
        }
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

    /// Stops every attempt held (self-fencing), and any registered until [`unfence`]
    /// (Self::unfence). Returns how many there were, or `None` when already fenced.
    pub(crate) fn fence_all(&self) -> Option<usize> {
        let mut inner = self.lock();
        if std::mem::replace(&mut inner.fenced, true) {
            return None;
        }
        for t in inner.attempts.values() {
            t.fenced.cancel();
        }
        Some(inner.attempts.len())
    }

    /// A heartbeat landed: attempts registered from now on run. Returns whether the
    /// worker was fenced.
    pub(crate) fn unfence(&self) -> bool {
        std::mem::replace(&mut self.lock().fenced, false)
    }

    /// True while the worker has fenced itself: it claims nothing until a heartbeat lands.
    pub(crate) fn is_fenced(&self) -> bool {
        self.lock().fenced
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key_of(job: &ClaimedJob) -> AttemptKey {
    (job.id.clone(), job.attempt, job.claim_token.clone())
}

#[cfg(test)]
mod tests {
    use super::RunningJobs;
    use common::queue::ClaimedJob;
    use common::JobSpec;

    fn job(id: &str, token: &str) -> ClaimedJob {
        ClaimedJob {
            id: id.parse().unwrap(),
            spec: JobSpec::new("t", "t", vec!["true".into()]),
            attempt: 1,
            attempt_limit: 3,
            priority: Default::default(),
            enqueued_at: 0,
            claim_token: token.into(),
        }
    }

    #[test]
    fn a_claim_answered_while_fenced_is_fenced_at_once() {
        let running = RunningJobs::default();
        let before = running.insert(&job("a", "1"));
        assert_eq!(running.fence_all(), Some(1));
        assert_eq!(running.fence_all(), None, "already fenced");
        assert!(before.fenced.is_cancelled());
        // The claim was in flight when the fence fired.
        let late = running.insert(&job("b", "2"));
        assert!(late.fenced.is_cancelled(), "registered while fenced");
        running.unfence();
        assert!(!running.insert(&job("c", "3")).fenced.is_cancelled());
    }

    #[test]
    fn the_same_job_and_attempt_from_two_claims_are_two_attempts() {
        let running = RunningJobs::default();
        let old = job("a", "1");
        let new = job("a", "2");
        running.insert(&old);
        running.insert(&new);
        running.remove(&old);
        assert_eq!(running.attempts(), [("a".parse().unwrap(), 1, "2".to_string())]);
    }
}
