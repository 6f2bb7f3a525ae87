//! Operator-facing reads and commands: show, status, workers, cancel, retry, logs (listings are in `listing.rs`).

use super::{scripts, RedisQueue};
use crate::{Error, JobEvent, JobId, JobRecord, JobState, Priority, Result, WorkerInfo};
use redis::AsyncCommands;
use serde::Serialize;
use std::collections::HashMap;

/// Depth and age of one priority list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriorityStatus {
    /// The priority.
    pub priority: Priority,
    /// Jobs queued.
    pub depth: u64,
    /// Enqueue time of the oldest job at the head of a queue or lane (ms since epoch),
    /// when any is queued.
    pub oldest_enqueued_at: Option<u64>,
    /// Of `depth`, the jobs parked: held up by their team's quota or cap, their group's
    /// cap or their pool's capacity (the rest are what workers can take now).
    pub parked: u64,
}

/// A snapshot of the whole queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// Per priority, most urgent first.
    pub priorities: Vec<PriorityStatus>,
    /// Jobs held by workers right now.
    pub running: u64,
    /// Jobs waiting out a retry backoff.
    pub retrying: u64,
    /// Jobs in the dead-letter list.
    pub dead: u64,
    /// Live workers (heartbeat present).
    pub workers: Vec<WorkerInfo>,
    /// Transitions not yet written to the job store.
    pub outbox: u64,
    /// Each pool's capacity, use and reservation.
    pub pools: Vec<super::PoolStatus>,
    /// What the leases hold, per pool, team and group.
    pub usage: super::Usage,
    /// Queued jobs by why they wait: a parked lane's jobs under its head's reason
    /// (`quota`, `pool_full`, `group`, ...), the rest under `admissible`.
    pub waiting: std::collections::BTreeMap<String, u64>,
}

impl QueueStatus {
    /// Total queued across priorities.
    pub fn queued(&self) -> u64 {
        self.priorities.iter().map(|p| p.depth).sum()
    }
}

impl RedisQueue {
    /// Cancels a job: a queued or retrying job is removed and never starts; a running job's
    /// worker is asked to stop it. Returns the state the job is in afterwards
    /// (`Running` means the stop is under way). A job that has already ended is a `Conflict`.
    pub async fn cancel(&self, id: &JobId, reason: &str) -> Result<JobState> {
        let mut conn = self.conn().await?;
        let r: String = scripts::CANCEL
            .key(self.keys.delayed())
            .arg(self.keys.prefix())
            .arg(id.as_str())
            .arg(reason)
            .invoke_async(&mut conn)
            .await?;
        match r.as_str() {
            "not_found" => Err(Error::NotFound(id.clone())),
            "cancelling" => Ok(JobState::Running),
            "cancelled" => Ok(JobState::Cancelled),
            other => Err(Error::Conflict {
                id: id.clone(),
                detail: format!(
                    "is already {}; nothing to cancel",
                    other.trim_start_matches("already:")
                ),
            }),
        }
    }

    /// Brings a dead, failed or cancelled job back to its queue with a fresh attempt budget.
    pub async fn retry(&self, id: &JobId) -> Result<()> {
        self.retry_as(id, "operator").await
    }

    /// [`Self::retry`], naming `actor` in the job's history.
    pub async fn retry_as(&self, id: &JobId, actor: &str) -> Result<()> {
        let record = self.get(id).await?.ok_or_else(|| Error::NotFound(id.clone()))?;
        let mut conn = self.conn().await?;
        let r: String = scripts::RETRY
            .key(self.keys.dead())
            .arg(self.keys.prefix())
            .arg(id.as_str())
            .arg(record.spec.max_attempts)
            .arg(actor)
            .invoke_async(&mut conn)
            .await?;
        match r.as_str() {
            "retried" => Ok(()),
            "not_found" => Err(Error::NotFound(id.clone())),
            state => Err(Error::Conflict {
                id: id.clone(),
                detail: format!("is {state}; only dead, failed or cancelled jobs can be retried"),
            }),
        }
    }

    /// The full record of a job with its history and, if queued, its position.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>> {
        self.read(id, true).await
    }

    /// [`Self::get`] without the position and the reason a queued job waits: finding
    /// the position walks the job's queue, so a caller that only needs the record (an
    /// enqueue's reply) skips it.
    pub async fn get_unexplained(&self, id: &JobId) -> Result<Option<JobRecord>> {
        self.read(id, false).await
    }

    async fn read(&self, id: &JobId, explain: bool) -> Result<Option<JobRecord>> {
        let mut conn = self.conn().await?;
        // A queued job may still be a pending record (see pending.rs): read first, and
        // again should the record move to a hash between the reads.
        let mut tries = 0;
        let (mut hash, events) = loop {
            let (record, hash, events): (Option<String>, HashMap<String, String>, Vec<String>) =
                redis::pipe()
                    .hget(self.keys.pending(), id.as_str())
                    .hgetall(self.keys.job(id))
                    .lrange(self.keys.events(id), 0, -1)
                    .query_async(&mut conn)
                    .await?;
            tries += 1;
            match super::pending::resolve(&mut conn, &self.keys, vec![record])
                .await?
                .pop()
            {
                Some(super::pending::Found::Moved) if tries < super::pending::READ_TRIES => continue,
                Some(super::pending::Found::Record(record)) => {
                    break (super::pending::merged(record, hash), events)
                }
                _ => break (hash, events),
            }
        };
        if hash.is_empty() {
            return Ok(None);
        }
        // The creation is not in the history list (enqueue skips writing it): it is
        // implied by the hash, queued unless the job was created deferred.
        let created = match hash.get("created").map(String::as_str) {
            Some("deferred") => JobState::Deferred,
            _ => JobState::Queued,
        };
        // History fields are named after their outbox entry ids, which order them.
        let mut history: Vec<((u64, u64), String)> = Vec::new();
        hash.retain(|k, v| match k.strip_prefix("h:") {
            Some(sid) => {
                let order = sid
                    .split_once('-')
                    .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
                    .unwrap_or((u64::MAX, u64::MAX));
                history.push((order, std::mem::take(v)));
                false
            }
            None => true,
        });
        history.sort();
        let by = hash.remove("by").filter(|b| !b.is_empty());
        let mut record = JobRecord::from_hash(id.clone(), hash)?;
        record.events.push(JobEvent {
            state: created,
            at: record.enqueued_at,
            attempt: 0,
            worker: None,
            detail: by.map(|b| format!("enqueued by {b}")),
        });
        // `events` is the history list earlier versions kept under its own key.
        for e in events.iter().chain(history.iter().map(|(_, e)| e)) {
            record.events.push(
                parse_history_entry(e).map_err(|err| Error::Corrupt(format!("job {id} event: {err}")))?,
            );
        }
        if explain && record.state == JobState::Queued {
            if let Some(w) = self.why_waiting(id).await? {
                record.position = w.position;
                record.waiting = Some(w.reason);
            }
        }
        Ok(Some(record))
    }

    /// Jobs ahead of `id` in its pool: everything queued at more urgent priorities plus
    /// those before it in its own queue or lane. `None` when it is not queued.
    pub async fn position(&self, id: &JobId) -> Result<Option<u64>> {
        Ok(self.why_waiting(id).await?.and_then(|w| w.position))
    }

    /// Live workers, from their heartbeats. Workers whose heartbeat expired are absent.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn.smembers(self.keys.workers()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|w| self.keys.heartbeat(w)).collect();
        let beats: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut workers: Vec<WorkerInfo> = beats
            .into_iter()
            .flatten()
            .filter_map(|b| serde_json::from_str(&b).ok())
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    /// Depth and oldest age per priority, running/retrying/dead counts, live workers,
    /// and each pool's capacity and use.
    pub async fn status(&self) -> Result<QueueStatus> {
        let super::quota::Census {
            priorities: census,
            pools,
            waiting,
        } = self.census().await?;
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.zcard(self.keys.delayed())
            .llen(self.keys.dead())
            .smembers(self.keys.workers());
        // In transitions: an enqueue entry naming many jobs counts each (see outbox_len).
        pipe.cmd("XLEN")
            .arg(self.keys.outbox())
            .get(self.keys.outbox_batched());
        let (retrying, dead, lease_holders, entries, batched): (u64, u64, Vec<String>, u64, Option<u64>) =
            pipe.query_async(&mut conn).await?;
        let outbox = entries + batched.unwrap_or(0);
        let priorities = Priority::ALL
            .into_iter()
            .zip(census)
            .map(|(priority, c)| PriorityStatus {
                priority,
                depth: c.queued,
                oldest_enqueued_at: c.oldest,
                parked: c.parked,
            })
            .collect();
        let running: Vec<u64> = if lease_holders.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for w in &lease_holders {
                pipe.hlen(self.keys.inflight(w));
            }
            pipe.query_async(&mut conn).await?
        };
        drop(conn);
        Ok(QueueStatus {
            priorities,
            running: running.iter().sum(),
            retrying,
            dead,
            workers: self.workers().await?,
            outbox,
            pools,
            usage: self.usage().await?,
            waiting,
        })
    }

    /// The last `n` lines of a job's output.
    pub async fn logs(&self, id: &JobId, n: usize) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        Ok(conn.lrange(self.keys.log(id), -(n as isize), -1).await?)
    }

    /// The log lines after the first `seen` the job ever wrote, with the count written
    /// so far (the next call's `seen`). Lines the log's bound already dropped are
    /// skipped, and their number is returned too.
    pub async fn log_since(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        id: &JobId,
        seen: u64,
    ) -> Result<LogChunk> {
        let (written, lines): (Option<u64>, Vec<String>) = redis::pipe()
            .atomic()
            .hget(self.keys.job(id), "log_lines")
            .lrange(self.keys.log(id), 0, -1)
            .query_async(conn)
            .await?;
        let written = written.unwrap_or(lines.len() as u64);
        let new = written.saturating_sub(seen);
        let kept = (lines.len() as u64).min(new);
        let skipped = new - kept;
        let lines = lines[lines.len() - kept as usize..].to_vec();
        Ok(LogChunk {
            lines,
            written,
            skipped,
        })
    }

    /// Ids in the dead-letter list, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        Ok(conn.lrange(self.keys.dead(), 0, -1).await?)
    }
}

impl RedisQueue {
    /// Deletes every key of this namespace (demo and test clean-up). Returns how many.
    pub async fn purge(&self) -> Result<usize> {
        let mut conn = self.conn().await?;
        let pattern = format!("{}:*", self.keys.prefix().replace('{', "\\{").replace('}', "\\}"));
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> = conn.scan_match(&pattern).await?;
            let mut keys = Vec::new();
            while let Some(k) = iter.next_item().await {
                keys.push(k?);
            }
            keys
        };
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await?;
        }
        Ok(keys.len())
    }
}

impl RedisQueue {
    /// Jobs that reached a final state since `since_ms` (the pool's recent throughput).
    pub async fn finished_since(&self, since_ms: u64) -> Result<u64> {
        let mut conn = self.conn().await?;
        Ok(conn.zcount(self.keys.finished(), since_ms, "+inf").await?)
    }
}

/// Decodes one entry of a job's history list: `state TAB at TAB attempt TAB worker TAB
/// detail` as the scripts write it (see `lua/lib.lua`), or the JSON object that earlier
/// versions wrote.
fn parse_history_entry(entry: &str) -> std::result::Result<JobEvent, String> {
    if entry.starts_with('{') {
        return serde_json::from_str(entry).map_err(|e| e.to_string());
    }
    let mut parts = entry.splitn(5, '\t');
    let mut next = |what: &str| parts.next().ok_or_else(|| format!("no {what} in {entry:?}"));
    let state = next("state")?.parse()?;
    let at = next("time")?.parse().map_err(|e| format!("time: {e}"))?;
    let attempt = next("attempt")?.parse().map_err(|e| format!("attempt: {e}"))?;
    let worker = next("worker")?;
    let detail = next("detail")?;
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(JobEvent {
        state,
        at,
        attempt,
        worker: text(worker),
        detail: text(detail),
    })
}

#[cfg(test)]
mod history_tests {
    use super::parse_history_entry;
    use crate::JobState;

    #[test]
    fn reads_tab_separated_entries_with_any_detail() {
        let e =
            parse_history_entry("failed\t1764474000123\t2\tw-1\texited with code 3\t(tab inside)").unwrap();
        assert_eq!(e.state, JobState::Failed);
        assert_eq!(e.at, 1_764_474_000_123);
        assert_eq!(e.attempt, 2);
        assert_eq!(e.worker.as_deref(), Some("w-1"));
        assert_eq!(e.detail.as_deref(), Some("exited with code 3\t(tab inside)"));
        let e = parse_history_entry("queued\t5\t0\t\t").unwrap();
        assert_eq!((e.worker, e.detail), (None, None));
    }

    #[test]
    fn reads_json_entries_of_earlier_versions() {
        let e = parse_history_entry(r#"{"state":"running","at":7,"attempt":1,"worker":"w"}"#).unwrap();
        assert_eq!((e.state, e.at, e.attempt), (JobState::Running, 7, 1));
    }

    #[test]
    fn rejects_truncated_entries() {
        assert!(parse_history_entry("running\t7").is_err());
        assert!(parse_history_entry("nonsense\t7\t1\t\t").is_err());
    }
}

/// What [`RedisQueue::log_since`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The new lines, oldest first.
    pub lines: Vec<String>,
    /// Lines the job has written in all.
    pub written: u64,
    /// New lines the log's bound dropped before they were read.
    pub skipped: u64,
}
