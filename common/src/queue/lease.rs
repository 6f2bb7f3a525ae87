//! The worker side of the protocol: claim, finish, release, heartbeat and recovery.
//!
//! A claimed job is a lease: it sits in the worker's in-flight hash while the worker's
//! heartbeat key lives. When the heartbeat expires, [`RedisQueue::reap`] (run by every
//! worker and by `scheduler serve`) returns the job to the head of its priority list.

use super::{scripts, RedisQueue};
use crate::{Error, JobId, JobSpec, JobState, Priority, Result, WorkerId, WorkerInfo};
use redis::AsyncCommands;
use std::time::Duration;

/// A job a worker has claimed and must finish or release.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// The job's id.
    pub id: JobId,
    /// Its spec.
    pub spec: JobSpec,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed in total.
    pub attempt_limit: u32,
    /// Its priority.
    pub priority: Priority,
    /// When it was enqueued (ms since epoch), for wait-time measurements.
    pub enqueued_at: u64,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job finished successfully.
    Succeeded,
    /// The attempt failed; the job is retried after `retry_after` if attempts remain.
    Failed {
        /// Process exit code, when there was one.
        exit_code: Option<i32>,
        /// Why it failed, for people.
        reason: String,
        /// Backoff before the next attempt.
        retry_after: Duration,
    },
    /// The attempt failed in a way retrying cannot fix (e.g. the program does not exist):
    /// the job is dead-lettered at once.
    Fatal {
        /// Why.
        reason: String,
    },
    /// The job was stopped because its cancellation was requested.
    Cancelled,
}

/// The end of one attempt, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedAttempt {
    /// The job.
    pub id: JobId,
    /// The attempt number the claim gave, when known: a success then needs no read of
    /// the job (the lease proves it is the current attempt).
    pub attempt: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What [`RedisQueue::finish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishState {
    /// The job moved to this state.
    Moved(JobState),
    /// This worker no longer held the job: its lease had expired and the job was
    /// recovered, so the newer attempt owns the outcome and this report was dropped.
    Stale,
}

impl RedisQueue {
    /// Atomically takes the most urgent queued job into `worker`'s in-flight hash,
    /// promoting due retries first. `None` when nothing is queued.
    pub async fn claim(&self, worker: &WorkerId) -> Result<Option<ClaimedJob>> {
        Ok(self.claim_many(worker, 1).await?.pop())
    }

    /// Like [`claim`](Self::claim), for up to `max` jobs in one atomic step, in the order
    /// they must start (strict priority, FIFO within one).
    pub async fn claim_many(&self, worker: &WorkerId, max: usize) -> Result<Vec<ClaimedJob>> {
        let mut conn = self.conn().await?;
        let reply: Vec<(String, String, u32, String, u64, u32)> = scripts::CLAIM
            .key(self.keys.delayed())
            .arg(self.keys.prefix())
            .arg(worker.as_str())
            .arg(max.max(1))
            .invoke_async(&mut conn)
            .await?;
        reply
            .into_iter()
            .map(|(id, spec, attempt, priority, enqueued_at, attempt_limit)| {
                let corrupt = |e: String| Error::Corrupt(format!("claimed job {id}: {e}"));
                Ok(ClaimedJob {
                    spec: serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?,
                    id: id.parse().map_err(corrupt)?,
                    attempt,
                    attempt_limit,
                    priority: priority.parse().map_err(corrupt)?,
                    enqueued_at,
                })
            })
            .collect()
    }

    /// Reports the end of an attempt and releases the lease.
    pub async fn finish(&self, worker: &WorkerId, id: &JobId, outcome: &Outcome) -> Result<FinishState> {
        let mut states = self
            .finish_many(
                worker,
                &[EndedAttempt {
                    id: id.clone(),
                    attempt: None,
                    outcome: outcome.clone(),
                }],
            )
            .await?;
        states
            .pop()
            .ok_or_else(|| Error::Corrupt("finish script answered nothing".into()))?
    }

    /// Reports the ends of several attempts of `worker`, each settled as
    /// [`finish`](Self::finish) would settle it alone, in one atomic step per 500.
    /// Returns one result per attempt, in order. An attempt that could not be settled
    /// (its job hash is unreadable) keeps its lease and does not hold up the others.
    pub async fn finish_many(
        &self,
        worker: &WorkerId,
        ended: &[EndedAttempt],
    ) -> Result<Vec<Result<FinishState>>> {
        let mut states = Vec::with_capacity(ended.len());
        let mut conn = self.conn().await?;
        for chunk in ended.chunks(500) {
            let mut inv = scripts::FINISH.prepare_invoke();
            inv.key(self.keys.delayed())
                .arg(self.keys.prefix())
                .arg(worker.as_str())
                .arg(chunk.len());
            for e in chunk {
                let (kind, code, reason, delay) = match &e.outcome {
                    Outcome::Succeeded => ("succeeded", None, "", 0),
                    Outcome::Failed {
                        exit_code,
                        reason,
                        retry_after,
                    } => (
                        "failed",
                        *exit_code,
                        reason.as_str(),
                        retry_after.as_millis() as u64,
                    ),
                    Outcome::Fatal { reason } => ("fatal", None, reason.as_str(), 0),
                    Outcome::Cancelled => ("cancelled", None, "cancelled", 0),
                };
                inv.arg(e.id.as_str())
                    .arg(e.attempt.unwrap_or(0))
                    .arg(kind)
                    .arg(code.map(|c| c.to_string()).unwrap_or_default())
                    .arg(reason)
                    .arg(delay);
            }
            let answered: Vec<String> = inv.invoke_async(&mut conn).await?;
            if answered.len() != chunk.len() {
                return Err(Error::Corrupt(format!(
                    "finish script answered {} states for {} attempts",
                    answered.len(),
                    chunk.len()
                )));
            }
            for (e, s) in chunk.iter().zip(&answered) {
                states.push(match s.strip_prefix("error:") {
                    Some(why) => Err(Error::Corrupt(format!("job {}: {why}", e.id))),
                    None => parse_finish(s),
                });
            }
        }
        Ok(states)
    }

    /// Hands a job this worker will not finish back to the head of its priority list
    /// without counting the attempt (graceful shutdown).
    pub async fn release(&self, worker: &WorkerId, id: &JobId, reason: &str) -> Result<FinishState> {
        let mut conn = self.conn().await?;
        let state: String = scripts::RELEASE
            .key(self.keys.workers())
            .arg(self.keys.prefix())
            .arg(worker.as_str())
            .arg(id.as_str())
            .arg(reason)
            .invoke_async(&mut conn)
            .await?;
        parse_finish(&state)
    }

    /// Publishes the worker's heartbeat with a TTL and registers it for the reaper.
    /// Returns false when the previous heartbeat had already expired, which means the
    /// reaper may have recovered this worker's jobs.
    pub async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<bool> {
        let w = WorkerId::from_raw(info.id.clone());
        let json = serde_json::to_string(info).expect("WorkerInfo always serializes");
        let mut conn = self.conn().await?;
        let (previous, _): (Option<String>, i64) = redis::pipe()
            .cmd("SET")
            .arg(self.keys.heartbeat(&w))
            .arg(json)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .arg("GET")
            .sadd(self.keys.workers(), w.as_str())
            .query_async(&mut conn)
            .await?;
        Ok(previous.is_some())
    }

    /// Removes the heartbeat of a worker that shut down cleanly. Its in-flight hash is
    /// left to the reaper, which does nothing for an empty one.
    pub async fn remove_heartbeat(&self, worker: &WorkerId) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: () = conn.del(self.keys.heartbeat(worker)).await?;
        Ok(())
    }

    /// Recovers the leases of every worker whose heartbeat has expired.
    /// Returns the number of jobs recovered. Safe to run from many processes at once.
    pub async fn reap(&self) -> Result<usize> {
        let mut conn = self.conn().await?;
        let workers: Vec<String> = conn.smembers(self.keys.workers()).await?;
        let mut recovered = 0;
        for w in workers {
            let n: i64 = scripts::REAP
                .key(self.keys.workers())
                .arg(self.keys.prefix())
                .arg(&w)
                .invoke_async(&mut conn)
                .await?;
            if n > 0 {
                tracing::warn!(worker = %w, jobs = n, "recovered jobs of a worker whose heartbeat expired");
                recovered += n as usize;
            }
        }
        Ok(recovered)
    }

    /// For each id, whether its cancellation has been requested.
    pub async fn cancel_requested(&self, ids: &[JobId]) -> Result<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.job(id), "cancel_requested");
        }
        let mut conn = self.conn().await?;
        let flags: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(flags.into_iter().map(|f| f.as_deref() == Some("1")).collect())
    }

    /// Appends output lines to the job's log (the last `keep` lines are kept) and,
    /// when given, records the trainer's latest progress.
    pub async fn append_log(
        &self,
        id: &JobId,
        lines: &[String],
        progress: Option<&str>,
        keep: usize,
    ) -> Result<()> {
        let key = self.keys.log(id);
        let mut pipe = redis::pipe();
        if !lines.is_empty() {
            pipe.rpush(&key, lines)
                .ignore()
                .ltrim(&key, -(keep as isize), -1)
                .ignore();
        }
        if let Some(p) = progress {
            pipe.hset(self.keys.job(id), "progress", p).ignore();
        }
        let mut conn = self.conn().await?;
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}

fn parse_finish(state: &str) -> Result<FinishState> {
    if state == "stale" {
        return Ok(FinishState::Stale);
    }
    state
        .parse()
        .map(FinishState::Moved)
        .map_err(|e: String| Error::Corrupt(format!("finish script answered {e}")))
}

impl RedisQueue {
    /// Moves retries whose backoff has elapsed back to their queues; returns how many.
    pub async fn promote_due(&self) -> Result<usize> {
        let mut conn = self.conn().await?;
        let n: usize = scripts::PROMOTE
            .key(self.keys.delayed())
            .arg(self.keys.prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }
}
