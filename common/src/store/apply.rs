//! Writing outbox batches into the store.

use super::{store_err, Backend, JobStore};
use crate::queue::OutboxEvent;
use crate::{JobId, JobSpec, JobState, Result};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

/// Rows bound per multi-row INSERT (11 values each). Every statement is a round trip to
/// SQLite's thread (or PostgreSQL), so few large ones beat many small ones, now that
/// binding is linear in a statement's parameters (see [`Backend::mark`]); the bound keeps
/// a statement well under SQLite's 32,766 parameters.
const HISTORY_CHUNK: usize = 250;

/// Ids per `IN (...)` lookup.
const LOOKUP_CHUNK: usize = 500;

/// A `jobs` row, as read, folded forward and written back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) team: String,
    pub(crate) model_type: String,
    pub(crate) priority: String,
    pub(crate) state: String,
    pub(crate) attempt: i64,
    pub(crate) attempt_limit: i64,
    pub(crate) spec: String,
    pub(crate) enqueued_at: i64,
    pub(crate) enqueue_ms: i64,
    pub(crate) enqueue_seq: i64,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) updated_at: i64,
    pub(crate) worker: Option<String>,
    pub(crate) exit_code: Option<i64>,
    pub(crate) reason: Option<String>,
    pub(crate) runtime_ms: Option<i64>,
    pub(crate) last_event_ms: i64,
    pub(crate) last_event_seq: i64,
}

pub(crate) const JOB_COLUMNS: &str =
    "id, name, team, model_type, priority, state, attempt, attempt_limit, spec, \
     enqueued_at, enqueue_ms, enqueue_seq, started_at, finished_at, updated_at, worker, exit_code, reason, runtime_ms, \
     last_event_ms, last_event_seq";

impl JobRow {
    /// A new row for a job first seen at `first` with this spec JSON.
    fn new(id: &JobId, spec_json: String, first: &OutboxEvent) -> Option<Self> {
        let spec: JobSpec = serde_json::from_str(&spec_json).ok()?;
        Some(JobRow {
            id: id.to_string(),
            name: spec.name,
            team: spec.team,
            model_type: spec.model_type,
            priority: first.priority.unwrap_or(spec.priority).to_string(),
            state: first.to.to_string(),
            attempt: i64::from(first.attempt),
            attempt_limit: i64::from(first.limit.unwrap_or(spec.max_attempts)),
            spec: spec_json,
            enqueued_at: first.at as i64,
            enqueue_ms: first.ms as i64,
            enqueue_seq: first.seq as i64,
            started_at: None,
            finished_at: None,
            updated_at: first.at as i64,
            worker: None,
            exit_code: None,
            reason: None,
            runtime_ms: None,
            last_event_ms: 0,
            last_event_seq: -1,
        })
    }

    pub(crate) fn from_row(r: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(JobRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            team: r.try_get("team")?,
            model_type: r.try_get("model_type")?,
            priority: r.try_get("priority")?,
            state: r.try_get("state")?,
            attempt: r.try_get("attempt")?,
            attempt_limit: r.try_get("attempt_limit")?,
            spec: r.try_get("spec")?,
            enqueued_at: r.try_get("enqueued_at")?,
            enqueue_ms: r.try_get("enqueue_ms")?,
            enqueue_seq: r.try_get("enqueue_seq")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            updated_at: r.try_get("updated_at")?,
            worker: r.try_get("worker")?,
            exit_code: r.try_get("exit_code")?,
            reason: r.try_get("reason")?,
            runtime_ms: r.try_get("runtime_ms")?,
            last_event_ms: r.try_get("last_event_ms")?,
            last_event_seq: r.try_get("last_event_seq")?,
        })
    }

    /// Moves the row forward by one transition; older transitions than the last applied
    /// are ignored, which makes replays and concurrent drainers harmless.
    fn apply(&mut self, e: &OutboxEvent) {
        if (e.ms as i64, e.seq as i64) <= (self.last_event_ms, self.last_event_seq) {
            return;
        }
        let at = e.at as i64;
        match e.to {
            JobState::Running => {
                self.started_at = Some(at);
                self.finished_at = None;
                self.runtime_ms = None;
                self.worker.clone_from(&e.worker);
                self.exit_code = None;
                self.reason = None;
            }
            JobState::Failed => {
                self.exit_code = e.code.map(i64::from);
                self.reason.clone_from(&e.detail);
                self.runtime_ms = self.started_at.map(|s| at - s);
            }
            JobState::Succeeded | JobState::Cancelled | JobState::Dead => {
                self.finished_at = Some(at);
                if e.from == Some(JobState::Running) {
                    self.runtime_ms = self.started_at.map(|s| at - s);
                }
                if e.to != JobState::Dead || e.from == Some(JobState::Running) {
                    self.reason.clone_from(&e.detail);
                }
                if let Some(c) = e.code {
                    self.exit_code = Some(i64::from(c));
                }
            }
            JobState::Queued => {
                self.finished_at = None;
                if e.from.is_some() && e.from != Some(JobState::Retrying) {
                    self.reason.clone_from(&e.detail);
                }
            }
            JobState::Retrying | JobState::Deferred => {}
        }
        if let Some(limit) = e.limit {
            self.attempt_limit = i64::from(limit);
        }
        self.state = e.to.to_string();
        self.attempt = i64::from(e.attempt);
        self.updated_at = at;
        self.last_event_ms = e.ms as i64;
        self.last_event_seq = e.seq as i64;
    }
}

/// Prices one attempt: spec JSON, start and end (ms) to a cost in micro-units.
/// Supplied by the caller (the pricing model lives outside this crate).
pub type Pricer = dyn Fn(&str, u64, u64) -> Option<i64> + Send + Sync;

/// A transition newly written to the store, with what metrics need to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedTransition {
    /// State before, if known.
    pub from: Option<JobState>,
    /// State entered.
    pub to: JobState,
    /// The job's priority (`p0`..`p2`).
    pub priority: String,
    /// The job's model type.
    pub model_type: String,
    /// Attempt number.
    pub attempt: u32,
    /// For a start: how long the job had waited in its queue (ms).
    pub wait_ms: Option<u64>,
    /// For the end of an attempt: how long it ran (ms).
    pub run_ms: Option<u64>,
    /// For the end of an attempt: what is needed to record its cost.
    ended: Option<EndedAttempt>,
}

/// An attempt that ended, for the cost record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EndedAttempt {
    job_id: String,
    team: String,
    experiment: String,
    spec: String,
    /// GPUs it held (at least 1), to turn lost GPU time back into wall time.
    gpus: u64,
    started_at: u64,
    ended_at: u64,
    /// For a preemption victim, the GPU ms it lost since its last checkpoint.
    preempted_loss_ms: Option<u64>,
}

impl AppliedTransition {
    /// Describes `e` as applied to `row` (the row before the transition).
    fn of(row: &JobRow, e: &OutboxEvent) -> Self {
        let at = e.at as i64;
        let wait_ms =
            (e.to == JobState::Running && row.state == "queued").then(|| (at - row.updated_at).max(0) as u64);
        // An attempt ends when its job leaves `running`: finished, failed, cancelled, dead,
        // or queued again (its worker was lost or handed it back).
        let ended = matches!(
            e.to,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Dead | JobState::Queued
        );
        let run_ms = (ended && e.from == Some(JobState::Running))
            .then_some(row.started_at)
            .flatten()
            .map(|s| (at - s).max(0) as u64);
        AppliedTransition {
            from: e.from,
            to: e.to,
            priority: row.priority.clone(),
            model_type: row.model_type.clone(),
            attempt: e.attempt,
            wait_ms,
            run_ms,
            ended: match (run_ms, row.started_at) {
                (Some(_), Some(started)) => Some({
                    let parsed = serde_json::from_str::<crate::JobSpec>(&row.spec).ok();
                    EndedAttempt {
                        job_id: row.id.clone(),
                        team: row.team.clone(),
                        experiment: parsed
                            .as_ref()
                            .and_then(|s| s.labels.get("experiment").cloned())
                            .unwrap_or_default(),
                        gpus: parsed.map_or(1, |s| u64::from(s.resources.gpus.max(1))),
                        spec: row.spec.clone(),
                        started_at: started as u64,
                        ended_at: e.at,
                        // A victim handed back: billed like any attempt, and what it lost since its
                        // last checkpoint is kept apart for the report.
                        preempted_loss_ms: (e.to == JobState::Queued).then_some(e.lost_gpu_ms).flatten(),
                    }
                }),
                _ => None,
            },
        }
    }
}

impl JobStore {
    /// Ids among `ids` the store has no row for.
    pub async fn missing(&self, ids: &[String]) -> Result<Vec<String>> {
        let rows = self.rows(ids).await?;
        Ok(ids.iter().filter(|id| !rows.contains_key(*id)).cloned().collect())
    }

    pub(crate) async fn rows(&self, ids: &[String]) -> Result<HashMap<String, JobRow>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| self.backend.mark(i)).collect();
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for r in q.fetch_all(&self.pool).await.map_err(store_err)? {
                let row = JobRow::from_row(&r).map_err(store_err)?;
                out.insert(row.id.clone(), row);
            }
        }
        Ok(out)
    }

    /// Applies a batch of outbox entries (in stream order) in one transaction.
    /// `specs` supplies spec JSON for jobs the store has no row for (read from the job
    /// hashes in Redis by the caller: enqueue entries do not carry the spec). Returns the number of history rows
    /// written (replayed entries are not counted).
    pub async fn apply(
        &self,
        events: &[OutboxEvent],
        specs: &HashMap<String, String>,
        pricer: Option<&Pricer>,
    ) -> Result<Vec<AppliedTransition>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = events.iter().map(|e| e.job.to_string()).collect();
        ids.sort();
        ids.dedup();
        let mut rows = self.rows(&ids).await?;
        // Jobs this batch changes, in first-touched order (a set beside it for lookups).
        let mut touched: Vec<String> = Vec::new();
        let mut touched_set = std::collections::HashSet::new();
        let mut transitions: Vec<(String, AppliedTransition)> = Vec::with_capacity(events.len());
        for e in events {
            let key = e.job.as_str();
            if !rows.contains_key(key) {
                let spec = e.spec.clone().or_else(|| specs.get(key).cloned());
                match spec.and_then(|s| JobRow::new(&e.job, s, e)) {
                    Some(row) => {
                        rows.insert(key.to_string(), row);
                    }
                    None => {
                        tracing::warn!(job_id = key, event = %e.event_id, "no spec for a job the store lacks; history only");
                        continue;
                    }
                }
            }
            let row = rows.get_mut(key).expect("inserted above");
            transitions.push((e.event_id.clone(), AppliedTransition::of(row, e)));
            row.apply(e);
            if touched_set.insert(key.to_string()) {
                touched.push(key.to_string());
            }
        }

        let mut tx = self.pool.begin().await.map_err(store_err)?;
        let mut new_ids = std::collections::HashSet::new();
        for chunk in events.chunks(HISTORY_CHUNK) {
            new_ids.extend(insert_history(&mut tx, self.backend, chunk).await?);
        }
        let touched_rows: Vec<&JobRow> = touched.iter().map(|id| &rows[id]).collect();
        upsert(&mut tx, self.backend, &touched_rows).await?;
        let applied: Vec<AppliedTransition> = transitions
            .into_iter()
            .filter(|(id, _)| new_ids.contains(id))
            .map(|(_, t)| t)
            .collect();
        if let Some(price) = pricer {
            for t in &applied {
                if let Some(a) = &t.ended {
                    if let Some(cost) = price(&a.spec, a.started_at, a.ended_at) {
                        // What a preemption lost: the last `lost / gpus` ms of the run.
                        let lost = a.preempted_loss_ms.and_then(|gpu_ms| {
                            let from = a.ended_at.saturating_sub(gpu_ms / a.gpus).max(a.started_at);
                            price(&a.spec, from, a.ended_at)
                        });
                        record_cost(&mut tx, t, a, cost, lost.unwrap_or(0)).await?;
                    }
                }
            }
        }
        tx.commit().await.map_err(store_err)?;
        Ok(applied)
    }

    /// Records jobs straight from their current Redis record (reconciliation of jobs the
    /// outbox never delivered). History rows get synthetic ids `redis:<job>:<n>`.
    pub async fn record_from_redis(&self, record: &crate::JobRecord) -> Result<()> {
        let spec = serde_json::to_string(&record.spec).expect("a spec always serializes");
        let mut events = Vec::new();
        for (n, e) in record.events.iter().enumerate() {
            events.push(OutboxEvent {
                event_id: format!("redis:{}:{n}", record.id),
                entry: format!("redis:{}:{n}", record.id),
                entry_jobs: 1,
                ms: e.at,
                seq: n as u64,
                job: record.id.clone(),
                from: None,
                to: e.state,
                at: e.at,
                attempt: e.attempt,
                worker: e.worker.clone(),
                detail: e.detail.clone(),
                spec: (n == 0).then(|| spec.clone()),
                priority: (n == 0).then_some(record.priority),
                limit: None,
                code: None,
                lost_gpu_ms: None,
            });
        }
        if let Some(last) = events.last_mut() {
            last.limit = Some(record.attempt_limit);
            last.code = record.exit_code;
        }
        self.apply(&events, &HashMap::from([(record.id.to_string(), spec)]), None)
            .await
            .map(|_| ())
    }
}

/// Records what an ended attempt cost (once: replays are ignored).
async fn record_cost(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    t: &AppliedTransition,
    a: &EndedAttempt,
    cost: i64,
    lost_cost: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO attempt_costs (job_id, attempt, team, experiment, model_type, priority, started_at, \
         ended_at, outcome, cost_micros, lost_gpu_ms, lost_micros) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (job_id, attempt, started_at) DO NOTHING",
    )
    .bind(a.job_id.as_str())
    .bind(i64::from(t.attempt))
    .bind(a.team.as_str())
    .bind(a.experiment.as_str())
    .bind(t.model_type.as_str())
    .bind(t.priority.as_str())
    .bind(a.started_at as i64)
    .bind(a.ended_at as i64)
    .bind(if a.preempted_loss_ms.is_some() {
        "preempted"
    } else {
        t.to.as_str()
    })
    .bind(cost)
    .bind(a.preempted_loss_ms.unwrap_or(0) as i64)
    .bind(lost_cost)
    .execute(&mut **tx)
    .await
    .map_err(store_err)?;
    Ok(())
}

/// Returns the entry ids that were new (replays are skipped by the primary key).
async fn insert_history(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    chunk: &[OutboxEvent],
) -> Result<Vec<String>> {
    let mut sql = String::from(
        "INSERT INTO job_history (event_id, event_ms, event_seq, job_id, from_state, to_state, at, attempt, \
         worker, detail, exit_code) VALUES ",
    );
    for i in 0..chunk.len() {
        let row: Vec<String> = (1..=11).map(|k| backend.mark(i * 11 + k)).collect();
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("({})", row.join(", ")));
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
    let mut q = sqlx::query(&sql);
    for e in chunk {
        q = q
            .bind(e.event_id.as_str())
            .bind(e.ms as i64)
            .bind(e.seq as i64)
            .bind(e.job.as_str())
            .bind(e.from.map(|s| s.as_str()))
            .bind(e.to.as_str())
            .bind(e.at as i64)
            .bind(i64::from(e.attempt))
            .bind(e.worker.as_deref())
            .bind(e.detail.as_deref())
            .bind(e.code.map(i64::from));
    }
    let rows = q.fetch_all(&mut **tx).await.map_err(store_err)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("event_id").map_err(store_err))
        .collect()
}

/// Inserts or moves a job row forward; a row already past this transition is left alone.
/// Job rows written per multi-row upsert (21 values each; see [`HISTORY_CHUNK`]). One
/// statement per chunk rather than per row: every statement is a round trip to SQLite's
/// thread.
const UPSERT_CHUNK: usize = 125;

/// Inserts or moves forward the given job rows (distinct ids). A row only moves forward in
/// stream order, so a replayed or older batch changes nothing.
async fn upsert(tx: &mut sqlx::Transaction<'_, sqlx::Any>, backend: Backend, rows: &[&JobRow]) -> Result<()> {
    for chunk in rows.chunks(UPSERT_CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let row: Vec<String> = (1..=21).map(|k| backend.mark(i * 21 + k)).collect();
                format!("({})", row.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES {} \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempt = excluded.attempt, \
             attempt_limit = excluded.attempt_limit, started_at = excluded.started_at, \
             finished_at = excluded.finished_at, updated_at = excluded.updated_at, worker = excluded.worker, \
             exit_code = excluded.exit_code, reason = excluded.reason, runtime_ms = excluded.runtime_ms, \
             last_event_ms = excluded.last_event_ms, last_event_seq = excluded.last_event_seq \
             WHERE jobs.last_event_ms < excluded.last_event_ms \
                OR (jobs.last_event_ms = excluded.last_event_ms AND jobs.last_event_seq < excluded.last_event_seq)",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.id.as_str())
                .bind(r.name.as_str())
                .bind(r.team.as_str())
                .bind(r.model_type.as_str())
                .bind(r.priority.as_str())
                .bind(r.state.as_str())
                .bind(r.attempt)
                .bind(r.attempt_limit)
                .bind(r.spec.as_str())
                .bind(r.enqueued_at)
                .bind(r.enqueue_ms)
                .bind(r.enqueue_seq)
                .bind(r.started_at)
                .bind(r.finished_at)
                .bind(r.updated_at)
                .bind(r.worker.as_deref())
                .bind(r.exit_code)
                .bind(r.reason.as_deref())
                .bind(r.runtime_ms)
                .bind(r.last_event_ms)
                .bind(r.last_event_seq);
        }
        q.execute(&mut **tx).await.map_err(store_err)?;
    }
    Ok(())
}
