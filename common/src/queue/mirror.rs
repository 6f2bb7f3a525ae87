//! The Redis side of the job store's reconciliation and retention: putting back jobs
//! Redis lost, the index and specs the store checks against, removing ended jobs the
//! store holds, and the queue's identity that tells this Redis from another.

use super::{scripts, RedisQueue};
use crate::{Error, JobId, JobState, Priority, Result};
use redis::AsyncCommands;

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
    /// The state to restore: `deferred` and `retrying` wait in the delayed set until
    /// `due`; anything else (queued, or running when Redis lost its lease) is queued.
    pub state: JobState,
    /// When a deferred or retrying job is due (ms); `None` means now.
    pub due: Option<u64>,
}

impl RedisQueue {
    /// Puts jobs the store knows but Redis lost back at the head of their queues,
    /// keeping `items`' order (oldest first). Jobs Redis still has are left alone.
    /// Returns the number restored.
    pub async fn restore(&self, items: &[RestoreItem]) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut inv = scripts::RESTORE.prepare_invoke();
        inv.key(self.keys.jobs()).arg(self.keys.prefix()).arg(items.len());
        for it in items {
            let waits = matches!(it.state, JobState::Deferred | JobState::Retrying);
            inv.arg(it.id.as_str())
                .arg(it.priority.as_str())
                .arg(&it.spec)
                .arg(it.attempt)
                .arg(it.attempt_limit)
                .arg(it.enqueued_at)
                .arg(if waits { it.state.as_str() } else { "queued" })
                .arg(it.due.unwrap_or(0))
                .arg(
                    crate::JobSpec::from_stored(&it.spec)
                        .map(|s| crate::admission::Charge::of(&s).encode())
                        .unwrap_or_default(),
                );
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
        let mut conn = self.conn().await?;
        super::pending::specs(&mut conn, &self.keys, ids).await
    }

    /// Up to `limit` ended jobs (id, end time in ms) that ended at or before `cutoff_ms`,
    /// skipping the first `offset`, oldest first: the candidates for retention.
    pub async fn finished_before(
        &self,
        cutoff_ms: u64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(String, u64)>> {
        let mut conn = self.conn().await?;
        let flat: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.finished())
            .arg("-inf")
            .arg(cutoff_ms)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(offset)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(flat.into_iter().map(|(id, ms)| (id, ms as u64)).collect())
    }

    /// Removes from Redis the ended jobs named with the end time the job store holds for
    /// them, where Redis still shows that same end (so the store has their terminal
    /// state). The caller names dead jobs only after their own, longer retention (the
    /// dead-letter list is for operators); they leave that list too. Returns how many
    /// were removed.
    pub async fn expire_recorded(&self, ended: &[(String, u64)]) -> Result<usize> {
        let mut removed = 0;
        let mut conn = self.conn().await?;
        for chunk in ended.chunks(500) {
            let mut inv = scripts::EXPIRE.prepare_invoke();
            inv.key(self.keys.finished())
                .arg(self.keys.prefix())
                .arg(chunk.len());
            for (id, at) in chunk {
                inv.arg(id).arg(*at);
            }
            let n: usize = inv.invoke_async(&mut conn).await?;
            removed += n;
        }
        Ok(removed)
    }

    /// Forgets the tombstones of client-chosen ids whose jobs ended before `cutoff_ms`
    /// (the store's own retention removed them, so the ids are free again).
    pub async fn forget_retired_before(&self, cutoff_ms: u64) -> Result<usize> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.retired())
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .query_async(&mut conn)
            .await?)
    }

    /// This queue's identity, if one was ever recorded: a random id kept in Redis, which
    /// the job store records, so that the store can tell this Redis from another one (or
    /// from this one after it lost its data).
    pub async fn identity(&self) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        Ok(conn.get(self.keys.identity()).await?)
    }

    /// When the scripts last saw Redis's run id change (a restart or failover), and until
    /// when claims and reaping hold after it, both in ms; `None` before the first change.
    pub async fn last_restart(&self) -> Result<Option<(u64, u64)>> {
        let mut conn = self.conn().await?;
        let (changed, hold): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys.epoch())
            .arg("changed_at")
            .arg("hold_until")
            .query_async(&mut conn)
            .await?;
        Ok(changed.map(|c| (c, hold.unwrap_or(c))))
    }

    /// The identity, created now when there is none.
    pub async fn ensure_identity(&self) -> Result<String> {
        let mut conn = self.conn().await?;
        let fresh = uuid::Uuid::new_v4().to_string();
        let _: Option<String> = redis::cmd("SET")
            .arg(self.keys.identity())
            .arg(&fresh)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        let id: Option<String> = conn.get(self.keys.identity()).await?;
        id.ok_or_else(|| Error::Corrupt("the queue identity vanished as it was written".into()))
    }
}
