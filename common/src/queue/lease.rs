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
    /// The token of the claim call that took it (recorded in the lease): with the attempt
    /// number, it names this attempt exactly, even if the job is handed back uncounted and
    /// claimed again under the same number.
    pub claim_token: String,
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
    /// The token of the claim that took it, when known (see [`ClaimedJob::claim_token`]).
    pub claim_token: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What [`RedisQueue::finish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishState {
    /// The job moved to this state.
    Moved(JobState),
    /// This worker no longer held the job for this attempt: its lease had expired and
    /// the job was recovered, so the newer attempt owns the outcome and this report was
    /// dropped.
    Stale,
    /// The worker's heartbeat was gone, so nothing was recorded: the worker must
    /// heartbeat (and compare its leases) before reporting again.
    Fenced,
}

/// One lease as the worker's in-flight hash holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased job.
    pub id: JobId,
    /// The attempt the lease is for (`None` for a lease written by an earlier version).
    pub attempt: Option<u32>,
    /// The token of the claim call that took it (empty for earlier versions).
    pub token: String,
}

impl Lease {
    fn parse(id: String, value: &str) -> Option<Lease> {
        // `seq:attempt:token|charge`; the charge is read by the scripts only.
        let value = value.split('|').next().unwrap_or_default();
        let mut parts = value.splitn(3, ':');
        let _seq = parts.next()?;
        Some(Lease {
            id: id.parse().ok()?,
            attempt: parts.next().and_then(|a| a.parse().ok()),
            token: parts.next().unwrap_or_default().to_string(),
        })
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// False when the previous heartbeat had expired: the reaper may have recovered
    /// some leases, which `leases` then no longer lists.
    pub existed: bool,
    /// Claims and reaping wait this much longer after a Redis restart or failover.
    pub restart_hold: Duration,
    /// Every lease the worker holds now.
    pub leases: Vec<Lease>,
}

/// A claimed job whose stored spec could not be read: it is ended as fatal at once, with
/// the reason, and the other jobs of the claim run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The job.
    pub id: JobId,
    /// The attempt claimed.
    pub attempt: u32,
    /// Why its spec could not be read.
    pub reason: String,
}

/// What a worker can take on in one claim: the pools it serves and its free devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    /// The pools whose jobs it claims; empty for all.
    pub pools: Vec<String>,
    /// GPUs it has free; `None` when it holds no devices (a Kubernetes worker: the
    /// cluster places the pod), so only admission limits what it takes.
    pub free_gpus: Option<u32>,
}

/// What one claim call took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claim {
    /// The jobs to run, in the order they must start.
    pub jobs: Vec<ClaimedJob>,
    /// Jobs claimed but unreadable; already reported as fatal when the report landed
    /// (`reported`), else still leased (the worker's lease check hands them back).
    pub unreadable: Vec<Unreadable>,
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
        Ok(self.claim_tagged(worker, max, "").await?.jobs)
    }

    /// Claims up to `max` jobs of any pool, as a worker holding no devices does (a
    /// Kubernetes worker), recording `token` in each lease (see [`Lease`]).
    pub async fn claim_tagged(&self, worker: &WorkerId, max: usize, token: &str) -> Result<Claim> {
        self.claim_within(worker, max, token, &Room::default()).await
    }

    /// Claims up to `max` jobs that admission lets in and that fit `room` (the pools the
    /// worker serves, and its free devices), recording `token` in each lease.
    ///
    /// Each claimed spec is decoded on its own, tolerantly (a newer writer may have added
    /// fields): one that cannot be read at all is ended as fatal with its reason, and the
    /// others run. Fails with [`Error::Fenced`] when the worker's heartbeat is gone and
    /// [`Error::RestartHold`] while claims wait after a Redis restart.
    pub async fn claim_within(
        &self,
        worker: &WorkerId,
        max: usize,
        token: &str,
        room: &Room,
    ) -> Result<Claim> {
        let mut conn = self.conn().await?;
        let pools = if room.pools.is_empty() {
            "*".to_string()
        } else {
            room.pools.join(",")
        };
        let reply: Vec<redis::Value> = scripts::CLAIM
            .key(self.keys.delayed())
            .arg(self.keys.prefix())
            .arg(worker.as_str())
            .arg(max.max(1))
            .arg(token)
            .arg(pools)
            .arg(room.free_gpus.map_or(-1, i64::from))
            .invoke_async(&mut conn)
            .await?;
        let text = |v: &redis::Value| -> Result<String> { Ok(redis::from_redis_value_ref(v)?) };
        let status = reply
            .first()
            .map(text)
            .transpose()?
            .ok_or_else(|| Error::Corrupt("claim script answered nothing".into()))?;
        match status.as_str() {
            "ok" => {}
            "fenced" => return Err(Error::Fenced(worker.to_string())),
            "held" => {
                let left = reply.get(1).map(text).transpose()?.unwrap_or_default();
                return Err(Error::RestartHold(left.parse().unwrap_or(0)));
            }
            other => return Err(Error::Corrupt(format!("claim script answered {other:?}"))),
        }
        let mut claim = Claim::default();
        for v in reply[1..].chunks(6) {
            let [id, spec, attempt, priority, enqueued_at, limit] = v else {
                return Err(Error::Corrupt("claim script answered a partial job".into()));
            };
            // The id and attempt come from the lease the script just wrote (it checked the
            // job's state); anything else is read per job, so one bad job fails alone.
            let id: JobId = text(id)?
                .parse()
                .map_err(|e| Error::Corrupt(format!("claimed job id: {e}")))?;
            let attempt: u32 = redis::from_redis_value_ref(attempt)?;
            let decoded = text(spec)
                .map_err(|_| "it has no spec".to_string())
                .and_then(|json| {
                    JobSpec::from_stored(&json).map_err(|e| format!("its spec cannot be read: {e}"))
                })
                .and_then(|spec| {
                    Ok(ClaimedJob {
                        spec,
                        id: id.clone(),
                        attempt,
                        attempt_limit: redis::from_redis_value_ref(limit).map_err(|e| e.to_string())?,
                        priority: text(priority)
                            .map_err(|e| e.to_string())?
                            .parse()
                            .map_err(|e: String| format!("its priority cannot be read: {e}"))?,
                        enqueued_at: redis::from_redis_value_ref(enqueued_at).map_err(|e| e.to_string())?,
                        claim_token: token.to_string(),
                    })
                });
            match decoded {
                Ok(job) => claim.jobs.push(job),
                Err(reason) => claim.unreadable.push(Unreadable { id, attempt, reason }),
            }
        }
        if !claim.unreadable.is_empty() {
            let ends: Vec<EndedAttempt> = claim
                .unreadable
                .iter()
                .map(|u| EndedAttempt {
                    id: u.id.clone(),
                    attempt: Some(u.attempt),
                    claim_token: Some(token.to_string()),
                    outcome: Outcome::Fatal {
                        reason: format!("job cannot run: {}", u.reason),
                    },
                })
                .collect();
            // If this does not land, the leases stay and the worker's lease check hands
            // them back; the next claim fails them again.
            match self.finish_many(worker, &ends).await {
                Ok(_) => {
                    for u in &claim.unreadable {
                        tracing::error!(job_id = %u.id, reason = %u.reason, "claimed job cannot run; dead-lettered");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot dead-letter unreadable claimed jobs yet"),
            }
        }
        Ok(claim)
    }

    /// Reports the end of an attempt and releases the lease.
    pub async fn finish(&self, worker: &WorkerId, id: &JobId, outcome: &Outcome) -> Result<FinishState> {
        let mut states = self
            .finish_many(
                worker,
                &[EndedAttempt {
                    id: id.clone(),
                    attempt: None,
                    claim_token: None,
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
                    .arg(e.claim_token.as_deref().unwrap_or(""))
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
        let lease = Lease {
            id: id.clone(),
            attempt: None,
            token: String::new(),
        };
        let mut states = self.release_many(worker, &[lease], reason).await?;
        states
            .pop()
            .ok_or_else(|| Error::Corrupt("release script answered nothing".into()))
    }

    /// Hands back several leases of `worker` (each naming the attempt and claim token it is
    /// for, where known: an empty token matches any) in one atomic step, without counting
    /// the attempts. A lease that is gone, or for another attempt, is [`FinishState::Stale`].
    pub async fn release_many(
        &self,
        worker: &WorkerId,
        leases: &[Lease],
        reason: &str,
    ) -> Result<Vec<FinishState>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::RELEASE.prepare_invoke();
        inv.key(self.keys.workers())
            .arg(self.keys.prefix())
            .arg(worker.as_str())
            .arg(reason)
            .arg(leases.len());
        for l in leases {
            inv.arg(l.id.as_str()).arg(l.attempt.unwrap_or(0)).arg(&l.token);
        }
        let mut conn = self.conn().await?;
        let states: Vec<String> = inv.invoke_async(&mut conn).await?;
        states.iter().map(|s| parse_finish(s)).collect()
    }

    /// Publishes the worker's heartbeat with a TTL and registers it for the reaper.
    /// Returns false when the previous heartbeat had already expired, which means the
    /// reaper may have recovered this worker's jobs.
    pub async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<bool> {
        Ok(self.heartbeat_leases(info, ttl, ttl).await?.existed)
    }

    /// Publishes the heartbeat and reads back the worker's leases in the same step, so
    /// the worker can compare them with what it runs. `reappear` is how long this worker
    /// needs, after Redis returns, to heartbeat and stop what it lost: after a restart
    /// or failover, claims and reaping wait for the longest of these.
    pub async fn heartbeat_leases(
        &self,
        info: &WorkerInfo,
        ttl: Duration,
        reappear: Duration,
    ) -> Result<Heartbeat> {
        let w = WorkerId::from_raw(info.id.clone());
        let json = serde_json::to_string(info).expect("WorkerInfo always serializes");
        let mut conn = self.conn().await?;
        let (existed, hold, flat): (i64, u64, Vec<String>) = scripts::HEARTBEAT
            .key(self.keys.workers())
            .arg(self.keys.prefix())
            .arg(w.as_str())
            .arg(json)
            .arg(ttl.as_millis() as u64)
            .arg(reappear.as_millis() as u64)
            // Its devices count in the first pool it serves.
            .arg(info.pools.first().cloned().unwrap_or_default())
            .arg(info.gpus.len())
            .invoke_async(&mut conn)
            .await?;
        let leases = flat
            .chunks(2)
            .filter_map(|kv| match kv {
                [id, value] => Lease::parse(id.clone(), value),
                _ => None,
            })
            .collect();
        Ok(Heartbeat {
            existed: existed == 1,
            restart_hold: Duration::from_millis(hold),
            leases,
        })
    }

    /// Removes the heartbeat of a worker that shut down cleanly, and its devices from
    /// its pools' capacity. Its in-flight hash is left to the reaper, which does nothing
    /// for an empty one.
    pub async fn remove_heartbeat(&self, worker: &WorkerId) -> Result<()> {
        let mut conn = self.conn().await?;
        let pools: Option<String> = conn.hget(self.keys.worker_pools(), worker.as_str()).await?;
        let mut pipe = redis::pipe();
        pipe.del(self.keys.heartbeat(worker))
            .ignore()
            .hdel(self.keys.beats(), worker.as_str())
            .ignore();
        for pool in pools.iter().flat_map(|p| p.split(',')) {
            pipe.hdel(self.keys.devices(pool), worker.as_str()).ignore();
        }
        pipe.hdel(self.keys.worker_pools(), worker.as_str()).ignore();
        let _: () = pipe.query_async(&mut conn).await?;
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
            if n == -2 {
                tracing::info!(
                    "Redis restarted or failed over recently; reaping waits for workers to heartbeat"
                );
                return Ok(recovered);
            }
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
        // One MULTI, so that a follower reading the count and the list sees both or
        // neither (see `RedisQueue::log_since`).
        pipe.atomic();
        if !lines.is_empty() {
            pipe.rpush(&key, lines)
                .ignore()
                .ltrim(&key, -(keep as isize), -1)
                .ignore()
                .hincr(self.keys.job(id), "log_lines", lines.len())
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
    match state {
        "stale" => return Ok(FinishState::Stale),
        "fenced" => return Ok(FinishState::Fenced),
        _ => {}
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
