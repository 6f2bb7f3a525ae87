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
/// Enqueues waiting for a call; past this, requests wait to be taken (backpressure on
/// the API's clients rather than an unbounded backlog in memory).
const WAITING: usize = 4096;

type Reply = oneshot::Sender<common::Result<EnqueueReport>>;

/// The way into the group commit: cheap to clone, and the task behind it ends when the
/// last clone is dropped.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<(JobSpec, String, Reply)>,
}

impl Committer {
    /// Starts the task that gathers enqueues for `queue`; needs a Tokio runtime.
    pub(crate) fn start(queue: RedisQueue) -> Self {
        let (tx, rx) = mpsc::channel(WAITING);
        tokio::spawn(gather(queue, rx));
        Committer { tx }
    }

    /// Enqueues one validated spec as `actor`, sharing a script call with the enqueues
    /// waiting beside it.
    pub(crate) async fn enqueue(&self, spec: JobSpec, actor: &str) -> common::Result<EnqueueReport> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((spec, actor.to_string(), reply))
            .await
            .map_err(|_| common::Error::Corrupt("the enqueue task has stopped".into()))?;
        answer
            .await
            .map_err(|_| common::Error::Corrupt("the enqueue task dropped a job unanswered".into()))?
    }
}

async fn gather(queue: RedisQueue, mut rx: mpsc::Receiver<(JobSpec, String, Reply)>) {
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
/// call as a whole fails (Redis timed out, say), every request of the group gets that
/// error, as it would have alone: the call may have been written, so it is not retried
/// here (a spec without an id would become a second job); the client decides.
async fn commit(queue: &RedisQueue, mut group: Vec<(JobSpec, String, Reply)>) {
    if group.len() == 1 {
        let (spec, actor, reply) = group.pop().expect("one job");
        let _ = reply.send(queue.enqueue_batch_as(vec![spec], &actor).await);
        return;
    }
    let (jobs, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|(s, a, r)| ((s, a), r)).unzip();
    match queue.enqueue_each(jobs).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A request that went away has nothing to be told.
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = replies.len(), "a grouped enqueue failed; each of its requests is told");
            for reply in replies {
                let _ = reply.send(Err(shared(&e)));
            }
        }
    }
}

/// The error of a whole call, for each of its requests.
fn shared(e: &common::Error) -> common::Error {
    use common::Error as E;
    match e {
        E::Redis(r) => E::Redis(r.clone()),
        E::Store(s) => E::Store(s.clone()),
        other => E::Corrupt(other.to_string()),
    }
}
