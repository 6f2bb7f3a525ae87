//! Jobs: enqueue, batch, cancel, retry, show, wait, list and logs.

use super::{App, AppError, AppResult, Caller, CostSummary, Role};
use common::queue::{BatchKey, EnqueueReport, MAX_ATOMIC_BATCH};
use common::{JobId, JobRecord, JobSpec, JobState, ListFilter};
use serde::Serialize;
use std::time::Duration;

/// What an enqueue of one job did.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueOutcome {
    /// False when a job with its id already existed with the same spec (nothing changed).
    pub created: bool,
    /// The job, secrets masked.
    pub job: JobRecord,
    /// Budget warnings (at or over a warn ratio).
    pub warnings: Vec<String>,
    /// What it will cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<CostSummary>,
}

/// What a batch enqueue did.
#[derive(Debug, Clone, Serialize)]
pub struct BatchOutcome {
    /// Ids, new and existing.
    #[serde(flatten)]
    pub report: EnqueueReport,
    /// Budget warnings.
    pub warnings: Vec<String>,
    /// What the new jobs will cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<CostSummary>,
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize)]
pub struct CancelOutcome {
    /// The job.
    pub id: JobId,
    /// `cancelled`, or `cancelling` while its worker stops it.
    pub state: &'static str,
}

/// Which jobs to list, with a page size and a cursor.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// The filter (its team is narrowed to the caller's).
    pub filter: ListFilter,
}

/// A page of jobs and where the next one starts.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    /// Newest first, secrets masked.
    pub jobs: Vec<JobRecord>,
    /// The cursor of the next page (`before`), when this page is full.
    pub next: Option<String>,
}

/// How a wait for a job's state ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The job reached one of the states (or any end when waiting for an end).
    Reached,
    /// The timeout passed first; the job is returned as it is.
    TimedOut,
}

/// What an enqueue does with an id that exists with a different spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameId {
    /// Leave the job as it is and say so: the CLI's idempotency by id, which operators'
    /// scripts rely on (a resubmission that differs only in a deferral still succeeds).
    KeepExisting,
    /// Refuse (409): an API client reusing an id for another spec has a bug to hear about.
    RefuseOtherSpec,
}

/// The most a single wait may last.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// A job id as a caller wrote it; a malformed one is bad input naming it.
pub fn parse_job_id(raw: &str) -> AppResult<JobId> {
    raw.parse()
        .map_err(|e: String| AppError::bad_input(format!("job id {raw:?}: {e}")))
}

impl App {
    /// Checks that `spec` may be enqueued by `caller`: a team caller enqueues for its
    /// own team only. A spec that names no team (or the `default` team) takes the
    /// caller's.
    fn own_spec(&self, caller: &Caller, mut spec: JobSpec) -> AppResult<JobSpec> {
        if let Some(team) = &caller.team {
            if spec.team == common::DEFAULT_TEAM {
                spec.team = team.clone();
            } else if spec.team != *team {
                return Err(AppError::Forbidden(format!(
                    "the spec names team {}; this token enqueues for team {team} only",
                    spec.team
                )));
            }
        }
        Ok(spec)
    }

    /// Parses a spec given as JSON text, for a caller: see [`Self::enqueue`].
    pub fn spec_from_json(&self, caller: &Caller, json: &str) -> AppResult<JobSpec> {
        let spec = JobSpec::from_json(json).map_err(|e| AppError::BadInput {
            code: "invalid_spec",
            message: e.to_string(),
        })?;
        self.own_spec(caller, spec)
    }

    /// Parses a spec given as a JSON value, for a caller.
    pub fn spec_from_value(&self, caller: &Caller, value: serde_json::Value) -> AppResult<JobSpec> {
        self.spec_from_json(caller, &value.to_string())
    }

    /// Refuses ids already taken by a different spec (409): enqueue is idempotent for
    /// the same spec only.
    async fn check_conflicts(&self, specs: &[JobSpec]) -> AppResult<()> {
        for spec in specs {
            let Some(id) = &spec.id else { continue };
            if let Some(existing) = self.queue().get_unexplained(id).await? {
                if existing.spec != *spec {
                    return Err(AppError::Conflict(format!(
                        "job {id} already exists with a different spec; nothing changed"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Enqueues one validated job after the budget check; returns the job as it is
    /// now. The same spec again (same id) is not a second job.
    pub async fn enqueue(
        &self,
        caller: &Caller,
        spec: JobSpec,
        same_id: SameId,
    ) -> AppResult<EnqueueOutcome> {
        caller.require(Role::Submitter, "enqueueing")?;
        let spec = self.own_spec(caller, spec)?;
        spec.validate().map_err(|e| AppError::BadInput {
            code: "invalid_spec",
            message: e.to_string(),
        })?;
        if same_id == SameId::RefuseOtherSpec {
            self.check_conflicts(std::slice::from_ref(&spec)).await?;
        }
        let warnings = self.enforce_budgets(std::slice::from_ref(&spec)).await?;
        let report = self.committer().enqueue(spec.clone(), &caller.actor).await?;
        let created = report.created == 1;
        let estimate = if created {
            self.summarise_cost(std::slice::from_ref(&spec))
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let id = &report.ids[0];
        // A new job is what the enqueue wrote, so it is built here rather than read back
        // (a busy API cannot afford the read on every enqueue); without its position,
        // which `GET /v1/jobs/{id}` gives. An existing one is read.
        let job = if created {
            let mut spec = spec;
            spec.id = Some(id.clone());
            JobRecord::enqueued(spec, report.enqueued_at, &caller.actor)
        } else {
            self.queue()
                .get_unexplained(id)
                .await?
                .ok_or_else(|| AppError::Unavailable(format!("job {id} exists but cannot be read")))?
        }
        .redacted();
        Ok(EnqueueOutcome {
            created,
            job,
            warnings,
            estimate,
        })
    }

    /// Enqueues validated jobs all-or-nothing after the budget check. More than one
    /// atomic step takes needs `chunked`, the batch's key: then each chunk is atomic, in
    /// order, and the same batch again after a failure part-way adds only the rest.
    pub async fn enqueue_batch(
        &self,
        caller: &Caller,
        specs: Vec<JobSpec>,
        chunked: Option<&BatchKey>,
        same_id: SameId,
    ) -> AppResult<BatchOutcome> {
        caller.require(Role::Submitter, "enqueueing")?;
        if specs.is_empty() {
            return Err(AppError::bad_input("the batch holds no jobs"));
        }
        let specs = specs
            .into_iter()
            .map(|s| self.own_spec(caller, s))
            .collect::<AppResult<Vec<_>>>()?;
        for (n, s) in specs.iter().enumerate() {
            s.validate().map_err(|e| AppError::BadInput {
                code: "invalid_spec",
                message: format!("job {}: {e}", n + 1),
            })?;
        }
        if specs.len() > MAX_ATOMIC_BATCH && chunked.is_none() {
            return Err(AppError::bad_input(format!(
                "the batch holds {} jobs, more than the {MAX_ATOMIC_BATCH} one atomic step takes; \
                 enqueue it in chunks (the CLI's --chunked)",
                specs.len()
            )));
        }
        if same_id == SameId::RefuseOtherSpec {
            self.check_conflicts(&specs).await?;
        }
        let warnings = self.enforce_budgets(&specs).await?;
        // Priced before the enqueue, which takes the specs (a batch can hold 10^5).
        let estimate = self.summarise_cost(&specs).await.ok().flatten();
        let report = match chunked {
            Some(key) if specs.len() > MAX_ATOMIC_BATCH => self.enqueue_chunks(caller, specs, key).await?,
            _ => self.queue().enqueue_batch_as(specs, &caller.actor).await?,
        };
        let estimate = estimate.filter(|_| report.created > 0);
        Ok(BatchOutcome {
            report,
            warnings,
            estimate,
        })
    }

    /// Enqueues `specs` in atomic chunks, in order, each prepared while Redis runs the one
    /// before. A failure part-way says how far it got; the same call again adds only what
    /// is missing.
    async fn enqueue_chunks(
        &self,
        caller: &Caller,
        specs: Vec<JobSpec>,
        key: &BatchKey,
    ) -> AppResult<EnqueueReport> {
        let done = self
            .queue()
            .enqueue_resumable_as(specs, &caller.actor, MAX_ATOMIC_BATCH, key)
            .await;
        match done.failure {
            None => Ok(done.report),
            Some(e) => {
                let n = done.chunks_landed;
                let why = AppError::from(e);
                Err(AppError::Unavailable(format!(
                    "{why}; chunks 1 to {n} of {} ({} jobs) are enqueued: run the same command again to add the rest",
                    done.chunks,
                    done.report.ids.len()
                )))
            }
        }
    }

    /// The job, from Redis or, once retention removed it there, from the store; secrets
    /// masked. Another team's job is not found.
    pub async fn job(&self, caller: &Caller, id: &JobId) -> AppResult<JobRecord> {
        caller.require(Role::Viewer, "reading jobs")?;
        let record = match self.queue().get(id).await? {
            Some(r) => Some(r),
            None => self.store().await?.get(id).await?,
        };
        Ok(caller.visible(record, id.as_str())?.redacted())
    }

    /// Waits until the job is in one of `states` (any final state when empty), or
    /// `timeout` passes (at most [`MAX_WAIT`]). The wait holds one connection of its own
    /// (`conn`), never the shared one.
    pub async fn wait_for(
        &self,
        caller: &Caller,
        id: &JobId,
        states: &[JobState],
        timeout: Duration,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> AppResult<(Wait, JobRecord)> {
        caller.require(Role::Viewer, "reading jobs")?;
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            // Each wake-up reads the job without its position, which walks its queue;
            // a queued job's is read once, for the answer.
            let job = match self.queue().get_unexplained(id).await? {
                Some(j) => caller.visible(Some(j), id.as_str())?,
                None => self.job(caller, id).await?,
            };
            let reached = if states.is_empty() {
                job.state.is_terminal()
            } else {
                states.contains(&job.state)
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if reached || left.is_zero() {
                let how = if reached { Wait::Reached } else { Wait::TimedOut };
                // Only a queued job has a position and a reason to wait to add.
                let job = if job.state == JobState::Queued {
                    self.job(caller, id).await?
                } else {
                    job.redacted()
                };
                return Ok((how, job));
            }
            // Wakes on any transition; bounded so that a missed wake-up costs a second.
            self.queue()
                .wait_for_transition(conn, left.min(Duration::from_secs(1)))
                .await?;
        }
    }

    /// The job as Redis holds it, without its position (finding that walks its queue),
    /// or "not found" when Redis has no such job or the caller's team may not see it:
    /// the check before acting on a live job.
    async fn live(&self, caller: &Caller, id: &JobId) -> AppResult<JobRecord> {
        caller.visible(self.queue().get_unexplained(id).await?, id.as_str())
    }

    /// Cancels a job: a queued one at once, a running one through its worker. The
    /// history names the caller, and the reason when given.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: &JobId,
        reason: Option<&str>,
    ) -> AppResult<CancelOutcome> {
        caller.require(Role::Submitter, "cancelling")?;
        if caller.team.is_some() {
            self.live(caller, id).await?;
        }
        let detail = match reason.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => format!("cancelled by {}: {r}", caller.actor),
            None => format!("cancelled by {}", caller.actor),
        };
        let state = self.queue().cancel(id, &detail).await?;
        Ok(CancelOutcome {
            id: id.clone(),
            state: if state == JobState::Running {
                "cancelling"
            } else {
                "cancelled"
            },
        })
    }

    /// Queues a dead, failed or cancelled job again, with fresh attempts.
    pub async fn retry(&self, caller: &Caller, id: &JobId) -> AppResult<()> {
        caller.require(Role::Submitter, "retrying")?;
        if caller.team.is_some() {
            self.live(caller, id).await?;
        }
        self.queue().retry_as(id, &caller.actor).await?;
        Ok(())
    }

    /// Jobs newest first: Redis has the live state, the store everything, a few
    /// milliseconds behind. Both are read and merged, Redis winning for jobs both hold.
    pub async fn list(&self, caller: &Caller, mut filter: ListFilter) -> AppResult<JobPage> {
        caller.require(Role::Viewer, "listing jobs")?;
        filter.team = caller.team_filter(filter.team)?;
        let live = self.queue().list(&filter).await?;
        let stored = match self.store().await {
            Ok(store) => {
                store
                    .list(&ListFilter {
                        offset: 0,
                        limit: filter.offset + filter.limit,
                        ..filter.clone()
                    })
                    .await?
            }
            Err(e) => return Err(e),
        };
        let mut by_id: std::collections::HashMap<_, _> =
            stored.into_iter().map(|r| (r.id.clone(), r)).collect();
        for r in live {
            by_id.insert(r.id.clone(), r);
        }
        let mut jobs: Vec<JobRecord> = by_id.into_values().filter(|r| filter.matches(r)).collect();
        jobs.sort_by(common::listing_order);
        let jobs: Vec<JobRecord> = jobs
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit)
            .map(JobRecord::redacted)
            .collect();
        let next = (jobs.len() == filter.limit && filter.limit > 0)
            .then(|| jobs.last().map(|l| common::ListCursor::after(l).to_string()))
            .flatten();
        Ok(JobPage { jobs, next })
    }

    /// Fills in each queued job's position and the reason it waits, as `job` does for
    /// one: a script call per queued job, so for a page of jobs, not for a whole listing.
    pub async fn explain_waiting(&self, jobs: &mut [JobRecord]) -> AppResult<()> {
        for j in jobs.iter_mut().filter(|j| j.state == common::JobState::Queued) {
            if let Some(w) = self.queue().why_waiting(&j.id).await? {
                j.position = w.position;
                j.waiting = Some(w.reason);
            }
        }
        Ok(())
    }

    /// The last `lines` lines of the job's output.
    pub async fn logs(&self, caller: &Caller, id: &JobId, lines: usize) -> AppResult<Vec<String>> {
        caller.require(Role::Viewer, "reading logs")?;
        self.live(caller, id).await?;
        Ok(self.queue().logs(id, lines).await?)
    }

    /// Checks that the caller may read the job's log (for following it).
    pub async fn check_log_access(&self, caller: &Caller, id: &JobId) -> AppResult<JobRecord> {
        caller.require(Role::Viewer, "reading logs")?;
        self.live(caller, id).await
    }
}

/// Whether a spec would be taken, and what it would cost, without enqueueing it.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// True when an enqueue would take it now.
    pub accepted: bool,
    /// Why not, one line each (the spec, the pool it asks for, the budget).
    pub problems: Vec<String>,
    /// Budget warnings it would get.
    pub warnings: Vec<String>,
    /// The pool it would wait in.
    pub pool: String,
    /// What it would cost, when the spec is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<super::Estimate>,
}

impl App {
    /// Checks a spec as an enqueue would (validation, the pool's admission rules, the
    /// budget) and prices it, changing nothing.
    pub async fn validate_job(&self, caller: &Caller, spec: JobSpec) -> AppResult<Validation> {
        caller.require(Role::Viewer, "validating jobs")?;
        let spec = self.own_spec(caller, spec)?;
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let pool = common::admission::pool_of(&spec).to_string();
        if let Err(e) = spec.validate() {
            problems.push(e.to_string());
            return Ok(Validation {
                accepted: false,
                problems,
                warnings,
                pool,
                estimate: None,
            });
        }
        let config = self.queue().admission().await?;
        if let Some(c) = &config {
            if let Err(e) = c.check_admissible(&spec) {
                problems.push(e.to_string());
            }
        }
        if let Err(e) =
            common::preemption::Preemption::check_opt_out(config.as_ref().map(|c| &c.preemption), &spec)
        {
            problems.push(e.to_string());
        }
        match self.enforce_budgets(std::slice::from_ref(&spec)).await {
            Ok(w) => warnings = w,
            Err(AppError::BadInput { message, .. }) => problems.push(message),
            Err(e) => return Err(e),
        }
        let estimate = self
            .estimate(caller, std::slice::from_ref(&spec), false, None)
            .await?
            .pop();
        Ok(Validation {
            accepted: problems.is_empty(),
            problems,
            warnings,
            pool,
            estimate,
        })
    }
}
