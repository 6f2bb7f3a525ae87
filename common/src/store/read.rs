//! Reading the store: single jobs with their history, filtered listings, restore sets,
//! and the store's own retention.

use super::apply::{JobRow, JOB_COLUMNS};
use super::{store_err, JobStore};
use crate::queue::RestoreItem;
use crate::{Error, JobEvent, JobId, JobRecord, ListFilter, Result};
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
            position: None,
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
        let base = texts.len() + numbers.len();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {} ORDER BY enqueue_ms DESC, enqueue_seq DESC LIMIT ${} OFFSET ${}",
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
        q = q.bind(filter.limit as i64).bind(filter.offset as i64);
        let rows = q.fetch_all(&self.pool).await.map_err(store_err)?;
        rows.iter()
            .map(|r| JobRow::from_row(r).map_err(store_err)?.into_record())
            .collect()
    }

    /// Jobs that should be in Redis's queues (queued, retrying, or running when Redis
    /// lost them), oldest first by original enqueue order.
    pub async fn restorable(&self) -> Result<Vec<RestoreItem>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('deferred', 'queued', 'retrying', 'running') \
             ORDER BY enqueue_ms, enqueue_seq"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(store_err)?;
        rows.iter()
            .map(|r| {
                let row = JobRow::from_row(r).map_err(store_err)?;
                Ok(RestoreItem {
                    id: row.id.parse().map_err(Error::Corrupt)?,
                    priority: row.priority.parse().map_err(Error::Corrupt)?,
                    attempt: row.attempt as u32,
                    attempt_limit: row.attempt_limit as u32,
                    enqueued_at: row.enqueued_at as u64,
                    spec: row.spec,
                })
            })
            .collect()
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
