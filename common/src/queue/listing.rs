//! Listing jobs from Redis: newest first through the job index (by cursor, however
//! deep), the running ones from the workers' leases, and the latest failures.

use super::{scripts, RedisQueue};
use crate::{Error, JobId, JobRecord, JobState, ListFilter, Result};
use redis::AsyncCommands;

impl RedisQueue {
    /// Newest jobs first that match `filter` (its offset and limit are not applied here:
    /// at most `filter.offset + filter.limit` are returned, for the caller to page). With
    /// a cursor (`filter.before`), the walk starts where the cursor is, found by a binary
    /// search of the index (`seek.lua`), however deep that is.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<JobRecord>> {
        const PAGE: usize = 200;
        let want = filter.offset + filter.limit;
        let mut conn = self.conn().await?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // The index is in enqueue order: walk it from the tail (or the cursor), newest
        // first. Positions are fixed from its length now; a concurrent trim of the head
        // can shift them by a few, so ids are de-duplicated.
        let mut end: isize = match &filter.before {
            Some(c) => {
                scripts::SEEK
                    .prepare_invoke()
                    .arg(self.keys.prefix())
                    .arg(c.enqueued_at)
                    .invoke_async(&mut conn)
                    .await?
            }
            None => conn.llen::<_, isize>(self.keys.jobs()).await? - 1,
        };
        // Once the page is full, jobs enqueued in the same millisecond as its last one
        // are read too: the listing orders them by id, the index by enqueue.
        let mut full_at: Option<u64> = None;
        'pages: while end >= 0 {
            let start = (end - PAGE as isize + 1).max(0);
            let mut ids: Vec<String> = conn.lrange(self.keys.jobs(), start, end).await?;
            end = start - 1;
            ids.reverse();
            let hashes = super::pending::hashes(&mut conn, &self.keys, &ids).await?;
            for (id, hash) in ids.into_iter().zip(hashes) {
                // Empty: the job has left Redis (retention) and its id not yet the index.
                if hash.is_empty() || !seen.insert(id.clone()) {
                    continue;
                }
                let id: JobId = id.parse().map_err(Error::Corrupt)?;
                let rec = JobRecord::from_hash(id, hash)?;
                if full_at.is_some_and(|t| rec.enqueued_at != t)
                    || filter.since_ms.is_some_and(|t| rec.enqueued_at < t)
                {
                    // Everything further is older still.
                    break 'pages;
                }
                if filter.matches(&rec) {
                    let at = rec.enqueued_at;
                    out.push(rec);
                    if out.len() >= want && full_at.is_none() {
                        full_at = Some(at);
                    }
                }
            }
        }
        out.sort_by(crate::record::listing_order);
        out.truncate(want);
        Ok(out)
    }

    /// Up to `limit` running jobs (of `team` only, when given), newest first, found from
    /// the workers' leases rather than by walking the job index: with 10^4 jobs queued
    /// ahead of the index's running ones, the walk reads every queued hash first.
    /// Generated job ids are UUIDv7, so their order is the enqueue order (ids given by
    /// the submitter sort by name among them); hashes are read a page at a time until
    /// `limit` have matched.
    pub async fn running_jobs(&self, team: Option<&str>, limit: usize) -> Result<Vec<JobRecord>> {
        const PAGE: usize = 100;
        let mut conn = self.conn().await?;
        let holders: Vec<String> = conn.smembers(self.keys.workers()).await?;
        if holders.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for w in &holders {
            pipe.hkeys(self.keys.inflight(w));
        }
        let leased: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut ids: Vec<String> = leased.into_iter().flatten().collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let mut out = Vec::new();
        for page in ids.chunks(PAGE) {
            let hashes = super::pending::hashes(&mut conn, &self.keys, page).await?;
            for (id, hash) in page.iter().zip(hashes) {
                if hash.is_empty() {
                    continue;
                }
                let rec = JobRecord::from_hash(id.parse().map_err(Error::Corrupt)?, hash)?;
                if rec.state == JobState::Running && team.is_none_or(|t| rec.spec.team == t) {
                    out.push(rec);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        out.sort_by(crate::listing_order);
        out.truncate(limit);
        Ok(out)
    }

    /// The latest failures: dead-lettered jobs among the last ended ones, and jobs waiting
    /// to retry, newest first, at most `n`.
    pub async fn recent_failures(&self, n: usize) -> Result<Vec<JobRecord>> {
        let mut conn = self.conn().await?;
        let mut ids: Vec<String> = conn.zrevrange(self.keys.delayed(), 0, n as isize - 1).await?;
        let ended: Vec<String> = conn.zrevrange(self.keys.finished(), 0, 199).await?;
        ids.extend(ended);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let hashes = super::pending::hashes(&mut conn, &self.keys, &ids).await?;
        let mut out = Vec::new();
        for (id, hash) in ids.into_iter().zip(hashes) {
            if hash.is_empty() {
                continue;
            }
            let rec = JobRecord::from_hash(id.parse().map_err(Error::Corrupt)?, hash)?;
            if matches!(rec.state, JobState::Dead | JobState::Retrying) {
                out.push(rec);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        out.truncate(n);
        Ok(out)
    }
}
