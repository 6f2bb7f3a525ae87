//! The job state machine.
//!
//! ```text
//! queued -> running -> succeeded
//!              |-----> failed -> retrying -> queued      (attempts left, after backoff)
//!              |          '----> dead                    (attempts used up; dead-letter list)
//!              |-----> cancelled
//!              '-----> queued                            (worker lost or shut down: requeued)
//! deferred -> queued                                   (its start time came: e.g. off-peak)
//! queued | retrying | deferred -> cancelled;   dead | cancelled -> queued  (manual `retry`)
//! ```
//! `failed` marks the end of a failed attempt in a job's history; the job itself moves on
//! to `retrying` or `dead` in the same atomic step. The transitions are carried out by the
//! Lua scripts in [`crate::queue`]; this type is how Rust code reads and checks them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its start time (e.g. the next off-peak window) before it is queued.
    Deferred,
    /// Waiting in its priority list.
    Queued,
    /// Claimed by a worker; an attempt is in progress.
    Running,
    /// An attempt failed (history only; the job moves on to `Retrying` or `Dead`).
    Failed,
    /// Waiting out the backoff before its next attempt.
    Retrying,
    /// Finished successfully.
    Succeeded,
    /// Stopped on request.
    Cancelled,
    /// Failed with no attempts left; kept in the dead-letter list.
    Dead,
}

impl JobState {
    /// Every state, in life-cycle order.
    pub const ALL: [JobState; 8] = [
        JobState::Deferred,
        JobState::Queued,
        JobState::Running,
        JobState::Failed,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Cancelled,
        JobState::Dead,
    ];

    /// The name stored in Redis and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Deferred => "deferred",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Failed => "failed",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
        }
    }

    /// True when nothing more will happen to the job unless an operator retries it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Cancelled | JobState::Dead | JobState::Failed
        )
    }

    /// Whether the state machine allows moving from `self` to `next`.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, Running | Cancelled)
                | (Deferred, Queued | Cancelled)
                | (Running, Succeeded | Failed | Cancelled | Queued | Dead)
                | (Failed, Retrying | Dead)
                | (Retrying, Queued | Cancelled)
                | (Dead | Cancelled | Failed, Queued)
        )
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("unknown state {s:?}; expected one of deferred, queued, running, failed, retrying, succeeded, cancelled, dead")
            })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn round_trips_names() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>(), Ok(st));
        }
        assert!("done".parse::<JobState>().is_err());
    }

    #[test]
    fn enforces_the_life_cycle() {
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Failed));
        assert!(Failed.can_become(Retrying));
        assert!(Retrying.can_become(Queued));
        assert!(Dead.can_become(Queued), "manual retry");
        assert!(!Succeeded.can_become(Running));
        assert!(!Queued.can_become(Succeeded), "a job must run to succeed");
        assert!(!Cancelled.can_become(Running));
    }
}
