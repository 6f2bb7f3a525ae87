//! Group commit for single enqueues: the ones that arrive while earlier ones are on
//! their way to Redis go together, in one script call ([`RedisQueue::enqueue_each`]).
//!
//! A busy API serves many clients that each enqueue one job at a time. One script call
//! per job spends most of Redis's and the API's time on the call itself (its framing,
//! the script's checks of the outbox bound and the admission configuration, the worker
//! wake-up), not on the job. Each job is still validated, checked and answered on its
//! own, and a lone enqueue goes straight through: waiting is never added, only sharing
//! a call with those already waiting.

use common::queue::{EnqueueReport, RedisQueue};
use common::JobSpec;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Script calls in flight at once. With one, every enqueue waits for the call before it;
/// a few keep Redis busy while the next group gathers.
const IN_FLIGHT: usize = 2;
/// The most jobs one call takes (each is a group of its own in enqueue.lua).
const MAX_GROUP: usize = 256;

type Reply = oneshot::Sender<common::Result<EnqueueReport>>;

/// The way into the group commit: cheap to clone, and the task behind it ends when the
/// last clone is dropped.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<(JobSpec, String, Reply)>,
}

impl Committer {
    /// Starts the task that gathers enqueues for `queue`; needs a Tokio runtime.
    pub(crate) fn start(queue: RedisQueue) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(gather(queue, rx));
        Committer { tx }
    }

    /// Enqueues one validated spec as `actor`, sharing a script call with the enqueues
    /// waiting beside it.
    pub(crate) async fn enqueue(&self, spec: JobSpec, actor: &str) -> common::Result<EnqueueReport> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((spec, actor.to_string(), reply))
            .map_err(|_| common::Error::Corrupt("the enqueue task has stopped".into()))?;
        answer
            .await
            .map_err(|_| common::Error::Corrupt("the enqueue task dropped a job unanswered".into()))?
    }
}

async fn gather(queue: RedisQueue, mut rx: mpsc::UnboundedReceiver<(JobSpec, String, Reply)>) {
    let calls = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut waiting = Vec::with_capacity(MAX_GROUP);
    loop {
        let Ok(permit) = calls.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut waiting, MAX_GROUP).await == 0 {
            return;
        }
        let group = std::mem::replace(&mut waiting, Vec::with_capacity(MAX_GROUP));
        let queue = queue.clone();
        tokio::spawn(async move {
            commit(&queue, group).await;
            drop(permit);
        });
    }
}

/// One script call for the group; each job's answer goes to its own request. When the
/// call as a whole fails, each job is enqueued on its own, so that each request gets the
/// answer it would have had alone.
async fn commit(queue: &RedisQueue, mut group: Vec<(JobSpec, String, Reply)>) {
    if group.len() == 1 {
        let (spec, actor, reply) = group.pop().expect("one job");
        let _ = reply.send(queue.enqueue_batch_as(vec![spec], &actor).await);
        return;
    }
    let jobs = group.iter().map(|(s, a, _)| (s.clone(), a.clone())).collect();
    match queue.enqueue_each(jobs).await {
        Ok(answers) => {
            for ((_, _, reply), answer) in group.into_iter().zip(answers) {
                // A request that went away has nothing to be told.
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, jobs = group.len(), "a grouped enqueue failed; enqueueing each on its own");
            for (spec, actor, reply) in group {
                let _ = reply.send(queue.enqueue_batch_as(vec![spec], &actor).await);
            }
        }
    }
}
