//! Why a queued job is not running yet, as the claim's rules (`admission.lua`) say it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a queued job is not running yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum WaitReason {
    /// Its group runs as many jobs as it may.
    Group {
        /// The group.
        group: String,
        /// Jobs of the group running.
        running: u64,
        /// Its cap.
        max_running: u64,
    },
    /// Its team runs as many jobs as it may.
    TeamCap {
        /// The team.
        team: String,
        /// Running.
        running: u64,
        /// The cap.
        max_running: u64,
    },
    /// The queue runs as many jobs as it may.
    GlobalCap {
        /// Running.
        running: u64,
        /// The cap.
        max_running: u64,
    },
    /// Its pool runs as many jobs as it may.
    PoolCap {
        /// The pool.
        pool: String,
        /// Running.
        running: u64,
        /// The cap.
        max_running: u64,
    },
    /// Its pool is reserved for a job that has waited long enough.
    Reserved {
        /// The pool.
        pool: String,
        /// The job holding the reservation.
        job: String,
    },
    /// Its team uses its quota and can borrow no more.
    Quota {
        /// The team.
        team: String,
        /// The pool.
        pool: String,
        /// GPUs the team uses there.
        used: u64,
        /// Its nominal quota (for a team without one: what the quotas leave, shared).
        nominal: u64,
        /// Its borrowing limit, if any.
        borrowing_limit: Option<u64>,
        /// GPUs its cohort could still lend.
        lendable: u64,
    },
    /// The pool has too few GPUs free.
    PoolFull {
        /// The pool.
        pool: String,
        /// GPUs used.
        used: u64,
        /// Its capacity.
        capacity: u64,
        /// GPUs the job needs.
        needs: u64,
    },
    /// Admissible: it waits behind other jobs.
    Behind {
        /// Jobs ahead of it, at its priority or a more urgent one.
        ahead: u64,
    },
    /// Admissible and first in line: it waits for a worker with room (with that many
    /// free GPUs in its pool, when it needs any).
    Worker {
        /// The pool.
        pool: String,
        /// GPUs it needs.
        gpus: u64,
    },
}

impl WaitReason {
    /// Reads what `admit_reason` (admission.lua) returns: a code, then figures.
    pub fn from_script(parts: &[String]) -> Option<WaitReason> {
        let n = |i: usize| {
            parts
                .get(i)
                .and_then(|s| s.parse::<i64>().ok())
                .map(|v| v.max(0) as u64)
        };
        let s = |i: usize| parts.get(i).cloned();
        Some(match parts.first()?.as_str() {
            "group" => WaitReason::Group {
                group: s(1)?,
                running: n(2)?,
                max_running: n(3)?,
            },
            "team_cap" => WaitReason::TeamCap {
                team: s(1)?,
                running: n(2)?,
                max_running: n(3)?,
            },
            "global_cap" => WaitReason::GlobalCap {
                running: n(1)?,
                max_running: n(2)?,
            },
            "pool_cap" => WaitReason::PoolCap {
                pool: s(1)?,
                running: n(2)?,
                max_running: n(3)?,
            },
            "reserved" => WaitReason::Reserved {
                pool: s(1)?,
                job: s(2)?,
            },
            "quota" => WaitReason::Quota {
                team: s(1)?,
                pool: s(2)?,
                used: n(3)?,
                nominal: n(4)?,
                borrowing_limit: parts
                    .get(5)
                    .and_then(|v| v.parse::<i64>().ok())
                    .filter(|v| *v >= 0)
                    .map(|v| v as u64),
                lendable: n(6)?,
            },
            "pool_full" => WaitReason::PoolFull {
                pool: s(1)?,
                used: n(2)?,
                capacity: n(3)?,
                needs: n(4)?,
            },
            "behind" => WaitReason::Behind { ahead: n(1)? },
            "worker" => WaitReason::Worker {
                pool: s(1)?,
                gpus: n(2)?,
            },
            _ => return None,
        })
    }

    /// A short stable name, for metrics labels and filters.
    pub fn code(&self) -> &'static str {
        match self {
            WaitReason::Group { .. } => "group",
            WaitReason::TeamCap { .. } => "team_cap",
            WaitReason::GlobalCap { .. } => "global_cap",
            WaitReason::PoolCap { .. } => "pool_cap",
            WaitReason::Reserved { .. } => "reserved",
            WaitReason::Quota { .. } => "quota",
            WaitReason::PoolFull { .. } => "pool_full",
            WaitReason::Behind { .. } => "behind",
            WaitReason::Worker { .. } => "worker",
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Group {
                group, max_running, ..
            } => write!(f, "group {group} at max-running {max_running}"),
            WaitReason::TeamCap {
                team, max_running, ..
            } => write!(f, "team {team} at its cap of {max_running} running jobs"),
            WaitReason::GlobalCap { max_running, .. } => {
                write!(f, "the queue runs its cap of {max_running} jobs")
            }
            WaitReason::PoolCap {
                pool, max_running, ..
            } => write!(f, "pool {pool} at its cap of {max_running} running jobs"),
            WaitReason::Reserved { pool, job } => write!(f, "pool {pool} reserved for job {job}"),
            WaitReason::Quota {
                team,
                pool,
                used,
                nominal,
                borrowing_limit,
                lendable,
            } => {
                let limit = nominal + borrowing_limit.unwrap_or(0);
                match borrowing_limit {
                    Some(b) if used + 1 > limit || *b == 0 => {
                        write!(f, "team {team} at its {pool} quota ({used}/{limit} GPUs)")
                    }
                    _ => write!(
                        f,
                        "team {team} at its {pool} quota ({used}/{nominal} GPUs) and its cohort has {lendable} to lend"
                    ),
                }
            }
            WaitReason::PoolFull {
                pool,
                used,
                capacity,
                needs,
            } => write!(f, "pool {pool} full ({used}/{capacity} GPUs used, needs {needs})"),
            WaitReason::Behind { ahead } => {
                write!(f, "behind {ahead} jobs of higher or equal priority")
            }
            WaitReason::Worker { pool, gpus } if *gpus > 0 => {
                write!(f, "waiting for a worker with {gpus} free GPUs in pool {pool}")
            }
            WaitReason::Worker { .. } => write!(f, "waiting for a free worker slot"),
        }
    }
}
