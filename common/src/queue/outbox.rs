//! The outbox: every transition, as written by the scripts, until the job store has it.
//! Also the Redis side of reconciliation and retention.

use super::{scripts, RedisQueue};
use crate::{Error, JobId, JobState, Priority, Result};
use redis::AsyncCommands;
use std::collections::HashMap;

/// One transition read from the outbox stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Stream entry id (`ms-seq`); unique, and the order of transitions.
    pub event_id: String,
    /// Milliseconds part of the entry id.
    pub ms: u64,
    /// Sequence part of the entry id.
    pub seq: u64,
    /// The job.
    pub job: JobId,
    /// State before (absent for the enqueue).
    pub from: Option<JobState>,
    /// State after.
    pub to: JobState,
    /// When (ms since epoch).
    pub at: u64,
    /// Attempt number then.
    pub attempt: u32,
    /// Worker involved.
    pub worker: Option<String>,
    /// Why.
    pub detail: Option<String>,
    /// Spec JSON (entries written before enqueue stopped carrying it; the drainer reads
    /// the spec from the job hash otherwise).
    pub spec: Option<String>,
    /// Priority (older enqueue entries; the spec has it too).
    pub priority: Option<Priority>,
    /// New attempt limit (on enqueue and operator retry).
    pub limit: Option<u32>,
    /// Exit code (on the end of a failed attempt).
    pub code: Option<i32>,
}

impl OutboxEvent {
    fn parse(event_id: String, mut f: HashMap<String, String>) -> Result<Self> {
        let bad = |what: &str| Error::Corrupt(format!("outbox entry {event_id}: {what}"));
        let (ms, seq) = event_id
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| bad("id"))?;
        let mut take = |k: &str| f.remove(k).filter(|v| !v.is_empty());
        let job = take("job")
            .ok_or_else(|| bad("job"))?
            .parse()
            .map_err(|e: String| bad(&e))?;
        let to = take("to")
            .ok_or_else(|| bad("to"))?
            .parse()
            .map_err(|e: String| bad(&e))?;
        let from = take("from")
            .map(|s| s.parse())
            .transpose()
            .map_err(|e: String| bad(&e))?;
        let num = |v: Option<String>| v.and_then(|s| s.parse::<u64>().ok());
        Ok(OutboxEvent {
            job,
            from,
            to,
            at: num(take("at")).ok_or_else(|| bad("at"))?,
            attempt: num(take("attempt")).unwrap_or(0) as u32,
            worker: take("worker"),
            detail: take("detail"),
            spec: take("spec"),
            priority: take("priority")
                .map(|s| s.parse())
                .transpose()
                .map_err(|e: String| bad(&e))?,
            limit: num(take("limit")).map(|v| v as u32),
            code: take("code").and_then(|c| c.parse().ok()),
            event_id,
            ms,
            seq,
        })
    }
}

/// A job to put back into Redis from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreItem {
    /// The job.
    pub id: JobId,
    /// Its priority list.
    pub priority: Priority,
    /// Spec JSON.
    pub spec: String,
    /// Attempts used so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub attempt_limit: u32,
    /// Original enqueue time.
    pub enqueued_at: u64,
}

impl RedisQueue {
    /// The oldest `count` transitions not yet acknowledged by the store.
    pub async fn read_outbox(&self, count: usize) -> Result<Vec<OutboxEvent>> {
        let mut conn = self.conn().await?;
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.keys.outbox())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        entries
            .into_iter()
            .map(|(id, fields)| OutboxEvent::parse(id, fields))
            .collect()
    }

    /// Removes transitions the store has committed.
    pub async fn ack_outbox(&self, events: &[OutboxEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let _: usize = redis::cmd("XDEL")
            .arg(self.keys.outbox())
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Transitions waiting for the store.
    pub async fn outbox_len(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("XLEN")
            .arg(self.keys.outbox())
            .query_async(&mut conn)
            .await?)
    }

    /// Time (ms) of the oldest undrained transition, if any.
    pub async fn outbox_oldest_ms(&self) -> Result<Option<u64>> {
        Ok(self.read_outbox(1).await?.first().map(|e| e.ms))
    }

    /// Puts jobs the store knows but Redis lost back at the head of their priority lists,
    /// keeping `items`' order (oldest first). Jobs Redis still has are left alone.
    /// Returns the number restored.
    pub async fn restore(&self, items: &[RestoreItem]) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut inv = scripts::RESTORE.prepare_invoke();
        inv.key(self.keys.jobs()).arg(self.keys.prefix()).arg(items.len());
        for it in items {
            inv.arg(it.id.as_str())
                .arg(it.priority.as_str())
                .arg(&it.spec)
                .arg(it.attempt)
                .arg(it.attempt_limit)
                .arg(it.enqueued_at);
        }
        let mut conn = self.conn().await?;
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// All job ids in Redis's index, oldest first. It may still name a few jobs that
    /// retention has removed (see `lua/expire.lua`); reading them finds nothing.
    pub async fn job_ids(&self) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        Ok(conn.lrange(self.keys.jobs(), 0, -1).await?)
    }

    /// Spec JSON of jobs still in Redis (None for those it lacks).
    pub async fn specs(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.job(id), "spec");
        }
        let mut conn = self.conn().await?;
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// Removes from Redis up to `limit` succeeded or cancelled jobs that ended before
    /// `cutoff_ms`, provided the outbox holds nothing older than their end (so the store
    /// has their full history). Dead jobs stay: the dead-letter list is for operators.
    pub async fn expire_finished(&self, cutoff_ms: u64, limit: usize) -> Result<usize> {
        let safe = match self.outbox_oldest_ms().await? {
            Some(oldest) => cutoff_ms.min(oldest.saturating_sub(1)),
            None => cutoff_ms,
        };
        let mut conn = self.conn().await?;
        let n: usize = scripts::EXPIRE
            .key(self.keys.finished())
            .arg(self.keys.prefix())
            .arg(safe)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }
}
