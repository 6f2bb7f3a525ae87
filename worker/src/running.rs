//! The jobs this worker is running, with the token that cancels each.

use common::queue::ClaimedJob;
use common::JobId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Shared registry of running jobs. The lock is never held across an await.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunningJobs(Arc<Mutex<HashMap<JobId, CancellationToken>>>);

impl RunningJobs {
    /// Registers a job; the returned token fires when its cancellation is requested.
    pub(crate) fn insert(&self, job: &ClaimedJob) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(job.id.clone(), token.clone());
        token
    }

    pub(crate) fn remove(&self, id: &JobId) {
        self.lock().remove(id);
    }

    /// Ids of the running jobs.
    pub(crate) fn ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Fires the cancel token of `id`, if it is running here.
    pub(crate) fn cancel(&self, id: &JobId) {
        if let Some(t) = self.lock().get(id) {
            t.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
