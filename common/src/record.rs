//! A job as read back from Redis: its spec plus everything that happened to it.

use crate::{Error, JobId, JobSpec, JobState, Priority, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One transition in a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The state entered.
    pub state: JobState,
    /// When, in milliseconds since the Unix epoch (Redis server time).
    pub at: u64,
    /// The attempt number at that moment (0 before the first attempt).
    pub attempt: u32,
    /// The worker involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why (exit code, timeout, worker lost, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The full record of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// Current state.
    pub state: JobState,
    /// Priority (also in the spec; kept here for quick filtering).
    pub priority: Priority,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed in total (grows when an operator retries a dead job).
    pub attempt_limit: u32,
    /// When the job was enqueued (ms since epoch).
    pub enqueued_at: u64,
    /// Last change (ms since epoch).
    pub updated_at: u64,
    /// Start of the latest attempt (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When the job reached a terminal state (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Worker running (or last to run) the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Exit code of the last finished attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the job is in its state (failure reason, cancel reason, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Latest progress reported by the trainer, e.g. `epoch 3/10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// A cancellation was requested while the job was running.
    #[serde(default)]
    pub cancel_requested: bool,
    /// While it is a preemption victim that has not stopped yet: the job it stops for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted_for: Option<String>,
    /// The running jobs preempted to make room for this one (its latest preemption).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preempting: Vec<String>,
    /// Times it was preempted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub preemptions: u32,
    /// GPU seconds its preemptions lost (since the last checkpoint before each).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub lost_gpu_secs: f64,
    /// Jobs ahead of this one across all priorities, when it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// For a queued job, why it is not running yet (computed with the claim's rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<crate::admission::WaitReason>,
    /// The spec as submitted (with its id filled in).
    pub spec: JobSpec,
    /// Transition history, oldest first (empty in listings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<JobEvent>,
}

impl JobRecord {
    /// The record of a job just enqueued at `at` (Redis time) by `actor`, as the enqueue
    /// wrote it: `spec` carries its id. It has no position (see `RedisQueue::get`).
    pub fn enqueued(spec: JobSpec, at: u64, actor: &str) -> Self {
        let state = if spec.not_before.is_some_and(|t| t > at) {
            JobState::Deferred
        } else {
            JobState::Queued
        };
        JobRecord {
            id: spec.id.clone().expect("an enqueued spec has its id"),
            state,
            priority: spec.priority,
            attempt: 0,
            attempt_limit: spec.max_attempts,
            enqueued_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            worker: None,
            exit_code: None,
            reason: None,
            progress: None,
            cancel_requested: false,
            preempted_for: None,
            preempting: Vec::new(),
            preemptions: 0,
            lost_gpu_secs: 0.0,
            position: None,
            waiting: None,
            events: vec![JobEvent {
                state,
                at,
                attempt: 0,
                worker: None,
                detail: (!actor.is_empty()).then(|| format!("enqueued by {actor}")),
            }],
            spec,
        }
    }

    /// The record with secret-looking environment values masked (see [`JobSpec::redacted`]).
    pub fn redacted(mut self) -> Self {
        self.spec = self.spec.redacted();
        self
    }

    /// Decodes the fields of a job hash.
    pub(crate) fn from_hash(id: JobId, mut h: HashMap<String, String>) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("job {id}: {what}"));
        // The first layout has no marker; a later one would write `schema`.
        match h.get("schema").map(String::as_str) {
            None | Some("v1") => {}
            other => return Err(corrupt(&format!("unknown schema {other:?}"))),
        }
        let spec_json = h.remove("spec").ok_or_else(|| corrupt("no spec"))?;
        // A spec this version cannot read at all (the claim dead-letters such a job) is
        // shown as a placeholder naming the problem, so the job can still be looked at.
        let spec = JobSpec::from_stored(&spec_json)
            .unwrap_or_else(|e| JobSpec::new(format!("(unreadable spec: {e})"), "unknown", Vec::new()));
        let num =
            |h: &HashMap<String, String>, k: &str| -> Option<u64> { h.get(k).and_then(|v| v.parse().ok()) };
        let state = h
            .get("state")
            .ok_or_else(|| corrupt("no state"))?
            .parse()
            .map_err(|e: String| corrupt(&e))?;
        let priority = h
            .get("priority")
            .ok_or_else(|| corrupt("no priority"))?
            .parse()
            .map_err(|e: String| corrupt(&e))?;
        Ok(JobRecord {
            state,
            priority,
            attempt: num(&h, "attempt").unwrap_or(0) as u32,
            attempt_limit: num(&h, "attempt_limit").unwrap_or(spec.max_attempts as u64) as u32,
            enqueued_at: num(&h, "enqueued_at").unwrap_or(0),
            // Absent until the job first changes after its enqueue.
            updated_at: num(&h, "updated_at")
                .or_else(|| num(&h, "enqueued_at"))
                .unwrap_or(0),
            started_at: num(&h, "started_at"),
            finished_at: num(&h, "finished_at"),
            worker: h.remove("worker"),
            exit_code: h.get("exit_code").and_then(|v| v.parse().ok()),
            reason: h.remove("reason").filter(|r| !r.is_empty()),
            progress: h.remove("progress"),
            cancel_requested: h.get("cancel_requested").is_some_and(|v| v == "1"),
            preempted_for: h.remove("preempt_by"),
            preempting: h
                .get("preempting")
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            preemptions: num(&h, "preemptions").unwrap_or(0) as u32,
            lost_gpu_secs: num(&h, "lost_gpu_ms").unwrap_or(0) as f64 / 1000.0,
            position: None,
            waiting: None,
            spec,
            events: Vec::new(),
            id,
        })
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// Milliseconds since the Unix epoch, for comparisons with Redis timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which jobs `list` returns: all filters are optional and combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this priority.
    pub priority: Option<Priority>,
    /// Only jobs of this team.
    pub team: Option<String>,
    /// Only jobs of this model type.
    pub model_type: Option<String>,
    /// Only jobs enqueued at or after this time (ms).
    pub since_ms: Option<u64>,
    /// Only jobs enqueued before this time (ms).
    pub until_ms: Option<u64>,
    /// Only jobs after this cursor in the listing's order (the previous page's last job):
    /// a page that starts there, found without reading what comes before it.
    pub before: Option<ListCursor>,
    /// Skip this many (paging).
    pub offset: usize,
    /// Return at most this many.
    pub limit: usize,
}

/// A place in the listing's order, which is newest enqueue time first, then id
/// descending: `list` returns the jobs strictly after it. Written `MS:ID` (`:` is not
/// allowed in ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// The enqueue time (ms) of the last job of the previous page.
    pub enqueued_at: u64,
    /// Its id.
    pub id: JobId,
}

impl ListCursor {
    /// The cursor of the page that follows `r`.
    pub fn after(r: &JobRecord) -> Self {
        ListCursor {
            enqueued_at: r.enqueued_at,
            id: r.id.clone(),
        }
    }

    /// Whether `r` comes after the cursor in the listing's order.
    pub fn precedes(&self, r: &JobRecord) -> bool {
        (r.enqueued_at, &r.id) < (self.enqueued_at, &self.id)
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.enqueued_at, self.id.as_str())
    }
}

impl std::str::FromStr for ListCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid cursor {s:?}: expected MS:ID, as the previous page printed it");
        let (ms, id) = s.split_once(':').ok_or_else(bad)?;
        Ok(ListCursor {
            enqueued_at: ms.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// Orders records as `list` does: newest enqueue time first, then id descending.
pub fn listing_order(a: &JobRecord, b: &JobRecord) -> std::cmp::Ordering {
    (b.enqueued_at, &b.id).cmp(&(a.enqueued_at, &a.id))
}

impl ListFilter {
    /// Whether a record passes the filters (for sources that cannot filter themselves).
    pub fn matches(&self, r: &JobRecord) -> bool {
        self.state.is_none_or(|s| s == r.state)
            && self.priority.is_none_or(|p| p == r.priority)
            && self.team.as_ref().is_none_or(|t| *t == r.spec.team)
            && self.model_type.as_ref().is_none_or(|m| *m == r.spec.model_type)
            && self.since_ms.is_none_or(|t| r.enqueued_at >= t)
            && self.until_ms.is_none_or(|t| r.enqueued_at < t)
            && self.before.as_ref().is_none_or(|c| c.precedes(r))
    }
}
