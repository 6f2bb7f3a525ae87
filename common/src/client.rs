//! The small async client other Rust services use to enqueue and follow jobs.

use crate::queue::{EnqueueReport, QueueStatus, RedisQueue};
use crate::{Error, JobId, JobRecord, JobSpec, JobState, Result};

/// Enqueue and inspect training jobs from any Rust service.
///
/// Cheap to clone: it wraps a connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    queue: RedisQueue,
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was added to its queue.
    Created(JobId),
    /// A job with this id already existed; nothing changed.
    AlreadyExists(JobId),
}

impl Enqueued {
    /// The job's id either way.
    pub fn id(&self) -> &JobId {
        match self {
            Enqueued::Created(id) | Enqueued::AlreadyExists(id) => id,
        }
    }
}

impl Client {
    /// Connects to the queue in `namespace` on the Redis at `url` (e.g. `redis://127.0.0.1:6379`).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        Ok(Client {
            queue: RedisQueue::connect(url, namespace).await?,
        })
    }

    /// Wraps an existing queue handle.
    pub fn from_queue(queue: RedisQueue) -> Self {
        Client { queue }
    }

    /// The underlying queue, for operations beyond this client's.
    pub fn queue(&self) -> &RedisQueue {
        &self.queue
    }

    /// Validates and enqueues one job. Enqueueing an id that exists changes nothing.
    pub async fn enqueue(&self, spec: JobSpec) -> Result<Enqueued> {
        let report = self.queue.enqueue_batch(vec![spec]).await?;
        let id = report.ids.into_iter().next().expect("one spec in, one id out");
        Ok(if report.created == 1 {
            Enqueued::Created(id)
        } else {
            Enqueued::AlreadyExists(id)
        })
    }

    /// Validates every spec, then enqueues them all in one atomic step; if any spec is
    /// invalid nothing is enqueued. Ids that already exist are skipped and reported.
    pub async fn enqueue_batch(&self, specs: Vec<JobSpec>) -> Result<EnqueueReport> {
        self.queue.enqueue_batch(specs).await
    }

    /// Cancels a job; see [`RedisQueue::cancel`].
    pub async fn cancel(&self, id: &JobId) -> Result<JobState> {
        self.queue.cancel(id, "cancelled by client").await
    }

    /// The job's record, or `Error::NotFound`.
    pub async fn get(&self, id: &JobId) -> Result<JobRecord> {
        self.queue
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    /// Queue depths, ages, running count and live workers.
    pub async fn queue_status(&self) -> Result<QueueStatus> {
        self.queue.status().await
    }
}
