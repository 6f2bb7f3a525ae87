//! The dashboard: queues, pools, teams, workers, running jobs and recent failures.

use super::{App, AppResult, Caller, PoolRow, Role, TeamRow};
use common::{now_ms, JobRecord, JobState, Priority, WorkerInfo};
use serde::Serialize;
use std::time::Instant;

/// Throughput is measured over this window for the queue ETAs.
const RATE_WINDOW_MS: u64 = 10 * 60 * 1000;

/// Everything the dashboard shows; `--json` prints exactly this.
#[derive(Debug, Serialize)]
pub struct Dashboard {
    pub generated_at: u64,
    pub health: Health,
    pub capacity: Capacity,
    pub queues: Vec<QueueRow>,
    pub retrying: u64,
    pub dead: u64,
    /// Jobs finished per minute over the last ten minutes.
    pub throughput_per_min: f64,
    pub running: Vec<JobRecord>,
    pub recent_failures: Vec<JobRecord>,
    pub workers: Vec<WorkerInfo>,
    /// Each pool's GPUs: capacity, used, reserved, free.
    pub pools: Vec<PoolRow>,
    /// Each team's GPUs in each pool against its quota, with what it borrowed.
    pub teams: Vec<TeamRow>,
    /// Jobs ended per minute over the last hour, from the store.
    pub activity: Activity,
}

/// How many jobs of the caller's scope ended in each of the last [`ACTIVITY_MINUTES`]
/// minutes, the current minute last. From the store (Redis keeps no per-minute history),
/// so a store outage leaves it empty with the error said.
#[derive(Debug, Serialize, Default)]
pub struct Activity {
    /// Start of the first minute, ms.
    pub since_ms: u64,
    /// Jobs that succeeded, per minute.
    pub succeeded: Vec<u64>,
    /// Jobs that failed or were dead-lettered, per minute.
    pub failed: Vec<u64>,
    /// Why the store could not be read.
    pub error: Option<String>,
}

/// The activity chart's span.
pub const ACTIVITY_MINUTES: u64 = 60;

/// The most running jobs the dashboard lists; the job list has them all.
pub const RUNNING_SHOWN: usize = 50;

impl Activity {
    fn failed(since_ms: u64, e: &dyn std::fmt::Display) -> Activity {
        Activity {
            since_ms,
            error: Some(e.to_string()),
            ..Activity::default()
        }
    }

    /// Buckets the store's `(minute start, state, count)` rows.
    fn of(rows: &[(u64, JobState, u64)], since_ms: u64) -> Activity {
        let n = ACTIVITY_MINUTES as usize;
        let mut a = Activity {
            since_ms,
            succeeded: vec![0; n],
            failed: vec![0; n],
            error: None,
        };
        for &(minute, state, count) in rows {
            let Some(i) = minute.checked_sub(since_ms).map(|d| (d / 60_000) as usize) else {
                continue;
            };
            match (state, i < n) {
                (JobState::Succeeded, true) => a.succeeded[i] += count,
                (JobState::Failed | JobState::Dead, true) => a.failed[i] += count,
                _ => {}
            }
        }
        a
    }
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub redis_ok: bool,
    pub redis_ms: f64,
    pub store: String,
    pub store_ok: bool,
    pub store_error: Option<String>,
    /// Transitions waiting in the outbox for the store.
    pub store_pending: u64,
}

#[derive(Debug, Serialize)]
pub struct Capacity {
    pub busy: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct QueueRow {
    pub priority: Priority,
    pub depth: u64,
    /// Of `depth`, jobs held up by their team, group or pool.
    pub parked: u64,
    pub oldest_age_ms: Option<u64>,
    /// Estimated time until the last job of this priority starts, at the recent rate.
    pub eta_ms: Option<u64>,
}

impl App {
    /// Everything the dashboard shows. A team caller sees its own team's jobs and
    /// rows; queue depths, pools and workers are the pool's.
    pub async fn dashboard(&self, caller: &Caller) -> AppResult<Dashboard> {
        caller.require(Role::Viewer, "reading the status")?;
        let queue = self.queue();
        let t = Instant::now();
        queue.ping().await?;
        let redis_ms = t.elapsed().as_secs_f64() * 1000.0;
        let status = queue.status().await?;
        let now = now_ms();
        let since = (now / 60_000 + 1 - ACTIVITY_MINUTES) * 60_000;
        let (store_ok, store_error, activity) = match self.store().await {
            Ok(s) => match s.ended_per_minute(since, caller.team.as_deref()).await {
                Ok(rows) => (true, None, Activity::of(&rows, since)),
                Err(e) => (false, Some(e.to_string()), Activity::failed(since, &e)),
            },
            Err(e) => (false, Some(e.to_string()), Activity::failed(since, &e)),
        };
        let finished = queue.finished_since(now.saturating_sub(RATE_WINDOW_MS)).await?;
        let per_ms = finished as f64 / RATE_WINDOW_MS as f64;
        let mut ahead = 0;
        let queues = status
            .priorities
            .iter()
            .map(|p| {
                ahead += p.depth;
                QueueRow {
                    priority: p.priority,
                    depth: p.depth,
                    parked: p.parked,
                    oldest_age_ms: p.oldest_enqueued_at.map(|t| now.saturating_sub(t)),
                    eta_ms: (p.depth > 0 && per_ms > 0.0).then(|| (ahead as f64 / per_ms) as u64),
                }
            })
            .collect();
        let running = queue
            .running_jobs(caller.team.as_deref(), RUNNING_SHOWN)
            .await?
            .into_iter()
            .map(JobRecord::redacted)
            .collect();
        let recent_failures = queue
            .recent_failures(10)
            .await?
            .into_iter()
            .filter(|j| caller.sees_team(&j.spec.team))
            .map(JobRecord::redacted)
            .collect();
        let config = queue.admission().await?.unwrap_or_default();
        let (pools, mut teams) = super::quotas::rows(&config, &status.pools, &status.usage);
        teams.retain(|t| caller.sees_team(&t.team));
        Ok(Dashboard {
            activity,
            pools,
            teams,
            generated_at: now,
            health: Health {
                redis_ok: true,
                redis_ms,
                store: self.store_display_url(),
                store_ok,
                store_error,
                store_pending: status.outbox,
            },
            capacity: Capacity {
                busy: status.running,
                total: status.workers.iter().map(|w| u64::from(w.concurrency)).sum(),
            },
            queues,
            retrying: status.retrying,
            dead: status.dead,
            throughput_per_min: per_ms * 60_000.0,
            running,
            recent_failures,
            workers: status.workers,
        })
    }
}

impl App {
    /// Live workers, from their heartbeats.
    pub async fn workers(&self, caller: &Caller) -> AppResult<Vec<WorkerInfo>> {
        caller.require(Role::Viewer, "reading workers")?;
        Ok(self.queue().workers().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_jobs_count_in_their_minute_and_only_successes_and_failures_are_drawn() {
        let since = 1_000 * 60_000;
        let last = since + (ACTIVITY_MINUTES - 1) * 60_000;
        let rows = [
            (since - 60_000, JobState::Succeeded, 7), // before the hour
            (since, JobState::Succeeded, 2),
            (since, JobState::Failed, 1),
            (since, JobState::Cancelled, 5), // neither
            (last, JobState::Dead, 3),
            (last + 60_000, JobState::Succeeded, 9), // after it
        ];
        let a = Activity::of(&rows, since);
        assert_eq!((a.succeeded.len(), a.failed.len()), (60, 60));
        assert_eq!((a.succeeded[0], a.failed[0]), (2, 1));
        assert_eq!((a.succeeded[59], a.failed[59]), (0, 3));
        assert_eq!(a.succeeded.iter().sum::<u64>() + a.failed.iter().sum::<u64>(), 6);
    }
}
