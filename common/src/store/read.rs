//! Reading the store: single jobs with their history, filtered listings, restore sets,
//! and the store's own retention.

use super::apply::{JobRow, JOB_COLUMNS};
use super::{store_err, JobStore};
use crate::queue::RestoreItem;
use crate::{Error, JobEvent, JobId, JobRecord, JobState, ListFilter, Result};
use sqlx::Row;

impl JobRow {
    fn into_record(self) -> Result<JobRecord> {
        let corrupt = |what: String| Error::Corrupt(format!("store row {}: {what}", self.id));
        let spec = serde_json::from_str(&self.spec).map_err(|e| corrupt(e.to_string()))?;
        Ok(JobRecord {
            id: self.id.parse().map_err(corrupt)?,
            state: self.state.parse().map_err(corrupt)?,
            priority: self.priority.parse().map_err(corrupt)?,
            attempt: self.attempt as u32,
            attempt_limit: self.attempt_limit as u32,
            enqueued_at: self.enqueued_at as u64,
            updated_at: self.updated_at as u64,
            started_at: self.started_at.map(|v| v as u64),
            finished_at: self.finished_at.map(|v| v as u64),
            worker: self.worker,
            exit_code: self.exit_code.map(|c| c as i32),
            reason: self.reason,
            progress: None,
            cancel_requested: false,
            preempted_for: None,
            preempting: Vec::new(),
            preemptions: 0,
            lost_gpu_secs: 0.0,
            position: None,
            waiting: None,
            spec,
            events: Vec::new(),
        })
    }
}

impl JobStore {
    /// A job with its full history, or `None`.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>> {
        let Some(row) = self.rows(&[id.to_string()]).await?.remove(id.as_str()) else {
            return Ok(None);
        };
        let mut record = row.into_record()?;
        record.events = self.history(id).await?;
        Ok(Some(record))
    }

    /// A job's transitions in order.
    pub async fn history(&self, id: &JobId) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT to_state, at, attempt, worker, detail FROM job_history WHERE job_id = $1 ORDER BY event_ms, event_seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter()
            .map(|r| -> Result<JobEvent> {
                let state: String = r.try_get("to_state").map_err(store_err)?;
                Ok(JobEvent {
                    state: state.parse().map_err(Error::Corrupt)?,
                    at: r.try_get::<i64, _>("at").map_err(store_err)? as u64,
                    attempt: r.try_get::<i64, _>("attempt").map_err(store_err)? as u32,
                    worker: r.try_get("worker").map_err(store_err)?,
                    detail: r.try_get("detail").map_err(store_err)?,
                })
            })
            .collect()
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<JobRecord>> {
        let mut clauses = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut n = 0;
        let mut text = |v: String, col: &str, clauses: &mut Vec<String>| {
            n += 1;
            clauses.push(format!("{col} = ${n}"));
            texts.push(v);
        };
        if let Some(s) = filter.state {
            text(s.to_string(), "state", &mut clauses);
        }
        if let Some(p) = filter.priority {
            text(p.to_string(), "priority", &mut clauses);
        }
        if let Some(t) = &filter.team {
            text(t.clone(), "team", &mut clauses);
        }
        if let Some(m) = &filter.model_type {
            text(m.clone(), "model_type", &mut clauses);
        }
        let mut numbers: Vec<i64> = Vec::new();
        for (bound, op) in [(filter.since_ms, ">="), (filter.until_ms, "<")] {
            if let Some(v) = bound {
                numbers.push(v as i64);
                clauses.push(format!("enqueued_at {op} ${}", texts.len() + numbers.len()));
            }
        }
        // After a cursor, in the listing's order (enqueue time, then id, descending), with
        // ids compared bytewise as Rust does (PostgreSQL's default collation would not).
        let id_col = if self.backend == super::Backend::Postgres {
            "id COLLATE \"C\""
        } else {
            "id"
        };
        let mut cursor_id = None;
        if let Some(c) = &filter.before {
            numbers.push(c.enqueued_at as i64);
            let t = texts.len() + numbers.len();
            clauses.push(format!(
                "(enqueued_at < ${t} OR (enqueued_at = ${t} AND {id_col} < ${}))",
                t + 1
            ));
            cursor_id = Some(c.id.as_str().to_string());
        }
        let base = texts.len() + numbers.len() + usize::from(cursor_id.is_some());
        let sql =
            format!(
            "SELECT {JOB_COLUMNS} FROM jobs {} ORDER BY enqueued_at DESC, {id_col} DESC LIMIT ${} OFFSET ${}",
            if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) },
            base + 1,
            base + 2
        );
        let mut q = sqlx::query(&sql);
        for t in &texts {
            q = q.bind(t.as_str());
        }
        for v in &numbers {
            q = q.bind(*v);
        }
        if let Some(id) = &cursor_id {
            q = q.bind(id.as_str());
        }
        q = q.bind(filter.limit as i64).bind(filter.offset as i64);
        let rows = q.fetch_all(&self.pool).await.map_err(store_err)?;
        rows.iter()
            .map(|r| JobRow::from_row(r).map_err(store_err)?.into_record())
            .collect()
    }

    /// Jobs that should be in Redis's queues (queued, deferred, retrying, or running when
    /// Redis lost them), oldest first by original enqueue order, each with the state to
    /// restore and, for deferred and retrying jobs, when it is due: a deferred job's start
    /// time is in its spec; a retrying job's is its failure time plus the backoff its
    /// history entry names ("next attempt in N ms").
    pub async fn restorable(&self) -> Result<Vec<RestoreItem>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('deferred', 'queued', 'retrying', 'running') \
             ORDER BY enqueue_ms, enqueue_seq"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(store_err)?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = JobRow::from_row(r).map_err(store_err)?;
            let state: JobState = row.state.parse().map_err(Error::Corrupt)?;
            let due = match state {
                JobState::Deferred => crate::JobSpec::from_stored(&row.spec)
                    .ok()
                    .and_then(|s| s.not_before),
                JobState::Retrying => Some(self.retry_due(&row.id, row.updated_at as u64).await?),
                _ => None,
            };
            items.push(RestoreItem {
                id: row.id.parse().map_err(Error::Corrupt)?,
                priority: row.priority.parse().map_err(Error::Corrupt)?,
                attempt: row.attempt as u32,
                attempt_limit: row.attempt_limit as u32,
                enqueued_at: row.enqueued_at as u64,
                spec: row.spec,
                state,
                due,
            });
        }
        Ok(items)
    }

    /// When a retrying job's next attempt is due: the time of its last `retrying`
    /// transition plus the delay that transition names.
    async fn retry_due(&self, id: &str, fallback: u64) -> Result<u64> {
        let row = sqlx::query(
            "SELECT at, detail FROM job_history WHERE job_id = $1 AND to_state = 'retrying' \
             ORDER BY event_ms DESC, event_seq DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_err)?;
        let Some(row) = row else { return Ok(fallback) };
        let at = row.try_get::<i64, _>("at").map_err(store_err)? as u64;
        let detail: Option<String> = row.try_get("detail").map_err(store_err)?;
        let delay = detail
            .as_deref()
            .and_then(|d| d.strip_prefix("next attempt in "))
            .and_then(|d| d.strip_suffix(" ms"))
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(at + delay)
    }

    /// Of the given job ids, those whose terminal state the store holds, with that state
    /// and the end time it recorded: what retention may remove from Redis.
    ///
    /// The query names ids only, and the state is checked here: with `AND state IN (...)`
    /// in it, SQLite planned the lookup on `jobs_by_state` and read every finished row
    /// (80 ms per 100 ids at 2x10^5 rows, which held retention to about 1,200 jobs/s)
    /// instead of 100 primary-key lookups (3 ms).
    pub async fn recorded_ends(&self, ids: &[String]) -> Result<Vec<(String, JobState, u64)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| self.backend.mark(i)).collect();
            let sql = format!(
                "SELECT id, state, finished_at FROM jobs WHERE id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for r in q.fetch_all(&self.pool).await.map_err(store_err)? {
                // A state this version does not know is not an end it may act on.
                let Ok(state) = r
                    .try_get::<String, _>("state")
                    .map_err(store_err)?
                    .parse::<JobState>()
                else {
                    continue;
                };
                let at: Option<i64> = r.try_get("finished_at").map_err(store_err)?;
                let ended = matches!(state, JobState::Succeeded | JobState::Cancelled | JobState::Dead);
                let (true, Some(at)) = (ended, at) else {
                    continue;
                };
                let id: String = r.try_get("id").map_err(store_err)?;
                out.push((id, state, at as u64));
            }
        }
        Ok(out)
    }

    /// A value of the store's own facts (`store_meta`).
    pub async fn meta(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM store_meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.map(|r| r.try_get("value").map_err(store_err)).transpose()
    }

    /// Records one of the store's own facts. Also the drainer's probe that the store
    /// takes writes at all, before it blames one entry for a refusal.
    pub async fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO store_meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    /// Deletes jobs (and their history) that finished before `cutoff_ms`. Returns how many.
    pub async fn purge_finished_before(&self, cutoff_ms: u64) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        sqlx::query(
            "DELETE FROM job_history WHERE job_id IN \
             (SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1)",
        )
        .bind(cutoff_ms as i64)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        let n = sqlx::query("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1")
            .bind(cutoff_ms as i64)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?
            .rows_affected();
        tx.commit().await.map_err(store_err)?;
        Ok(n)
    }

    /// Number of job rows and history rows (for tests and status).
    pub async fn counts(&self) -> Result<(u64, u64)> {
        let jobs: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jobs")
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)?
            .try_get("n")
            .map_err(store_err)?;
        let history: i64 = sqlx::query("SELECT COUNT(*) AS n FROM job_history")
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)?
            .try_get("n")
            .map_err(store_err)?;
        Ok((jobs as u64, history as u64))
    }
}

impl JobStore {
    /// Recent successful runs of a model type, newest first: spec JSON, run time of the
    /// successful attempt (ms) and when it finished (ms). Feeds duration estimates.
    pub async fn successful_runs(&self, model_type: &str, limit: usize) -> Result<Vec<(String, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT spec, runtime_ms, finished_at FROM jobs WHERE model_type = $1 AND state = 'succeeded' \
             AND runtime_ms IS NOT NULL AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT $2",
        )
        .bind(model_type)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter()
            .map(|r| {
                let spec: String = r.try_get("spec").map_err(store_err)?;
                let run: i64 = r.try_get("runtime_ms").map_err(store_err)?;
                let at: i64 = r.try_get("finished_at").map_err(store_err)?;
                Ok((spec, run.max(0) as u64, at.max(0) as u64))
            })
            .collect()
    }
}

impl JobStore {
    /// Jobs that ended since `since_ms`, counted per minute and end state (a team's only
    /// when `team` is given): `(minute start ms, state, count)`, oldest first. Feeds the
    /// dashboard's throughput chart, from the `jobs_by_finish` index.
    pub async fn ended_per_minute(
        &self,
        since_ms: u64,
        team: Option<&str>,
    ) -> Result<Vec<(u64, JobState, u64)>> {
        let rows = sqlx::query(
            "SELECT finished_at / 60000 AS minute, state, COUNT(*) AS n FROM jobs \
             WHERE finished_at >= $1 AND ($2 = '' OR team = $2) GROUP BY finished_at / 60000, state ORDER BY 1",
        )
        .bind(since_ms as i64)
        .bind(team.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter()
            .map(|r| {
                let minute: i64 = r.try_get("minute").map_err(store_err)?;
                let state: String = r.try_get("state").map_err(store_err)?;
                let n: i64 = r.try_get("n").map_err(store_err)?;
                let state = state
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("store state {state:?}: {e}")))?;
                Ok((minute.max(0) as u64 * 60_000, state, n.max(0) as u64))
            })
            .collect()
    }
}
