//! Budgets and recorded attempt costs.

use super::{store_err, JobStore};
use crate::{JobRecord, JobState, ListFilter, Result};
use sqlx::Row;

/// A monthly budget.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BudgetRow {
    /// Team.
    pub team: String,
    /// Experiment label value, or empty for the whole team.
    pub experiment: String,
    /// Month, `YYYY-MM`.
    pub month: String,
    /// Amount in micro-units.
    pub amount_micros: i64,
    /// Warn ratio in parts per million.
    pub warn_ppm: i64,
}

impl JobStore {
    /// Sets (or replaces) a budget.
    pub async fn set_budget(&self, b: &BudgetRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO budgets (team, experiment, month, amount_micros, warn_ppm) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (team, experiment, month) DO UPDATE SET amount_micros = excluded.amount_micros, \
             warn_ppm = excluded.warn_ppm",
        )
        .bind(b.team.as_str())
        .bind(b.experiment.as_str())
        .bind(b.month.as_str())
        .bind(b.amount_micros)
        .bind(b.warn_ppm)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    /// Budgets of a month, optionally of one team.
    pub async fn budgets(&self, month: &str, team: Option<&str>) -> Result<Vec<BudgetRow>> {
        let rows = sqlx::query(
            "SELECT team, experiment, month, amount_micros, warn_ppm FROM budgets \
             WHERE month = $1 AND ($2 = '' OR team = $2) ORDER BY team, experiment",
        )
        .bind(month)
        .bind(team.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter()
            .map(|r| {
                Ok(BudgetRow {
                    team: r.try_get("team").map_err(store_err)?,
                    experiment: r.try_get("experiment").map_err(store_err)?,
                    month: r.try_get("month").map_err(store_err)?,
                    amount_micros: r.try_get("amount_micros").map_err(store_err)?,
                    warn_ppm: r.try_get("warn_ppm").map_err(store_err)?,
                })
            })
            .collect()
    }

    /// Cost of the attempts of `team` (and `experiment`, unless empty) that ended in
    /// `[from_ms, to_ms)`, in micro-units.
    pub async fn spent(&self, team: &str, experiment: &str, from_ms: u64, to_ms: u64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS spent FROM attempt_costs WHERE team = $1 \
             AND ($2 = '' OR experiment = $2) AND ended_at >= $3 AND ended_at < $4",
        )
        .bind(team)
        .bind(experiment)
        .bind(from_ms as i64)
        .bind(to_ms as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(store_err)?;
        row.try_get("spent").map_err(store_err)
    }

    /// What a job's ended attempts cost, recorded when each ended: micro-units and the
    /// number of attempt runs (by the primary key's `job_id` prefix).
    pub async fn job_spent(&self, job_id: &str) -> Result<(i64, u64)> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS spent, COUNT(*) AS runs \
             FROM attempt_costs WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await
        .map_err(store_err)?;
        let spent: i64 = row.try_get("spent").map_err(store_err)?;
        let runs: i64 = row.try_get("runs").map_err(store_err)?;
        Ok((spent, runs.max(0) as u64))
    }

    /// The team's jobs that still hold budget: queued, retrying or running.
    pub async fn unfinished(&self, team: &str) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        for state in [JobState::Queued, JobState::Retrying, JobState::Running] {
            let filter = ListFilter {
                state: Some(state),
                team: Some(team.to_string()),
                limit: 100_000,
                ..ListFilter::default()
            };
            out.extend(self.list(&filter).await?);
        }
        Ok(out)
    }
}

/// One recorded attempt cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptCost {
    /// The job.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Team.
    pub team: String,
    /// Model type.
    pub model_type: String,
    /// Priority (`p0`..`p2`).
    pub priority: String,
    /// Run time (ms).
    pub run_ms: u64,
    /// When it ended (ms).
    pub ended_at: u64,
    /// Cost in micro-units.
    pub cost_micros: i64,
    /// Whether the attempt ended as a preemption victim.
    pub preempted: bool,
    /// GPU ms it lost since its last checkpoint (preempted attempts).
    pub lost_gpu_ms: u64,
    /// What that lost time cost, in micro-units (part of `cost_micros`).
    pub lost_micros: i64,
}

impl JobStore {
    /// Attempt costs that ended in `[from_ms, to_ms)`.
    pub async fn attempt_costs(&self, from_ms: u64, to_ms: u64) -> Result<Vec<AttemptCost>> {
        let rows = sqlx::query(
            "SELECT job_id, attempt, team, model_type, priority, started_at, ended_at, cost_micros, \
             outcome, lost_gpu_ms, lost_micros FROM attempt_costs WHERE ended_at >= $1 AND ended_at < $2 ORDER BY ended_at",
        )
        .bind(from_ms as i64)
        .bind(to_ms as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter()
            .map(|r| {
                let started: i64 = r.try_get("started_at").map_err(store_err)?;
                let ended: i64 = r.try_get("ended_at").map_err(store_err)?;
                Ok(AttemptCost {
                    job_id: r.try_get("job_id").map_err(store_err)?,
                    attempt: r.try_get::<i64, _>("attempt").map_err(store_err)? as u32,
                    team: r.try_get("team").map_err(store_err)?,
                    model_type: r.try_get("model_type").map_err(store_err)?,
                    priority: r.try_get("priority").map_err(store_err)?,
                    run_ms: (ended - started).max(0) as u64,
                    ended_at: ended.max(0) as u64,
                    cost_micros: r.try_get("cost_micros").map_err(store_err)?,
                    preempted: r.try_get::<String, _>("outcome").map_err(store_err)? == "preempted",
                    lost_gpu_ms: r.try_get::<i64, _>("lost_gpu_ms").map_err(store_err)?.max(0) as u64,
                    lost_micros: r.try_get("lost_micros").map_err(store_err)?,
                })
            })
            .collect()
    }
}
