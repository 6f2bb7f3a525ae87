//! What has been spent, as against what will be (`costs.rs`): each team's recorded
//! attempt costs per day with the report beside them (the dashboard's costs page), a
//! job's recorded cost, and a running attempt's cost so far and its projection. Days are
//! UTC days; the bucketing is a pure function so that it is tested apart.

use super::costs::{group_by, previous_from, report_of, utc};
use super::{App, AppError, AppResult, Caller, Role};
use chrono::Utc;
use common::store::AttemptCost;
use common::{JobId, JobRecord, JobState};
use cost::Usage;
use serde::Serialize;

/// One day in milliseconds.
pub const DAY_MS: u64 = 86_400_000;

/// The longest period the page draws.
pub const MAX_DAYS: u32 = 366;

/// Each team's spend per day over `days` consecutive UTC days from `start_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySpend {
    /// Midnight UTC of the first day, ms.
    pub start_ms: u64,
    /// How many days.
    pub days: u32,
    /// Each team, in name order, with its spend per day in micro-units (`days` values).
    pub teams: Vec<(String, Vec<i64>)>,
}

impl DailySpend {
    /// Buckets `rows` by team and by the UTC day their attempt ended; rows outside the
    /// period are left out.
    pub fn of(rows: &[AttemptCost], start_ms: u64, days: u32) -> DailySpend {
        let mut teams: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
        for r in rows {
            let Some(offset) = r.ended_at.checked_sub(start_ms) else {
                continue;
            };
            let day = (offset / DAY_MS) as usize;
            if day >= days as usize {
                continue;
            }
            teams.entry(&r.team).or_insert_with(|| vec![0; days as usize])[day] += r.cost_micros;
        }
        DailySpend {
            start_ms,
            days,
            teams: teams.into_iter().map(|(t, v)| (t.to_string(), v)).collect(),
        }
    }
}

impl App {
    /// The last `days` UTC days of spend (today included), per team, and the cost report
    /// over them grouped `by`, from one read of the store; a team caller's own team only.
    pub async fn spend_and_report(
        &self,
        caller: &Caller,
        days: u32,
        by: &str,
    ) -> AppResult<(DailySpend, cost::Report)> {
        caller.require(Role::Viewer, "reading costs")?;
        if days == 0 || days > MAX_DAYS {
            return Err(AppError::bad_input(format!(
                "days {days}: must be 1 to {MAX_DAYS}"
            )));
        }
        let by = group_by(by)?;
        let now = common::now_ms();
        let start = (now / DAY_MS + 1).saturating_sub(u64::from(days)) * DAY_MS;
        // Up to and including this millisecond; the report's trend needs the period before.
        let to = now + 1;
        let rows = self
            .visible_attempts(caller, previous_from(start, to), to)
            .await?;
        Ok((
            DailySpend::of(&rows, start, days),
            report_of(&rows, start, to, by),
        ))
    }

    /// What the job's ended attempts cost, as recorded: the amount and how many attempt
    /// runs it covers. The caller must already have read the job (`App::job`).
    pub async fn recorded_cost(&self, job: &JobRecord) -> AppResult<(cost::Money, u64)> {
        let (micros, runs) = self.store().await?.job_spent(job.id.as_str()).await?;
        Ok((cost::Money::from_micros(micros), runs))
    }

    /// The projected cost of a running job from its progress so far.
    pub async fn forecast(&self, caller: &Caller, id: &JobId) -> AppResult<(cost::Forecast, u32)> {
        caller.require(Role::Viewer, "forecasting")?;
        let job = caller.visible(self.queue().get_unexplained(id).await?, id.as_str())?;
        self.forecast_of(&job).ok_or_else(|| {
            AppError::Conflict(format!(
                "job {id} is {}; only running jobs have a forecast",
                job.state
            ))
        })
    }

    /// [`Self::forecast`] of a record already read (and checked visible): the cost of
    /// its running attempt so far and, after its first epoch, at its end; with the epochs
    /// done. `None` for a job that is not running. No I/O.
    pub fn forecast_of(&self, job: &JobRecord) -> Option<(cost::Forecast, u32)> {
        let started = job.started_at.filter(|_| job.state == JobState::Running)?;
        // Progress is "epoch k/n" from the trainer's JSON lines.
        let done = job
            .progress
            .as_deref()
            .and_then(|p| p.strip_prefix("epoch "))
            .and_then(|p| p.split('/').next())
            .and_then(|k| k.parse().ok())
            .unwrap_or(0);
        let f = cost::forecast(
            &self.pricing().pricing,
            &Usage::of(&job.spec, false),
            utc(started),
            Utc::now(),
            cost::Progress {
                epochs_done: done,
                epochs_total: job.spec.epochs,
            },
        );
        Some((f, done))
    }

    /// What a running job's current attempt has cost so far at on-demand rates, formatted;
    /// `None` for a job that is not running. The dashboard prices each running row.
    pub fn cost_so_far(&self, job: &JobRecord) -> Option<String> {
        let (f, _) = self.forecast_of(job)?;
        Some(self.pricing().pricing.currency().format(f.so_far))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(team: &str, ended_at: u64, cost_micros: i64) -> AttemptCost {
        AttemptCost {
            job_id: "j".into(),
            attempt: 1,
            team: team.into(),
            model_type: "m".into(),
            priority: "p1".into(),
            run_ms: 1,
            ended_at,
            cost_micros,
            preempted: false,
            lost_gpu_ms: 0,
            lost_micros: 0,
        }
    }

    #[test]
    fn attempts_fall_into_their_teams_utc_day_and_the_period_bounds_them() {
        let start = 20_000 * DAY_MS;
        let rows = [
            row("vision", start - 1, 9),              // the day before: left out
            row("vision", start, 1),                  // first day's first ms
            row("vision", start + DAY_MS - 1, 2),     // first day's last ms
            row("nlp", start + DAY_MS, 4),            // second day
            row("vision", start + 2 * DAY_MS + 5, 8), // third day
            row("nlp", start + 3 * DAY_MS, 16),       // after the period: left out
        ];
        let s = DailySpend::of(&rows, start, 3);
        assert_eq!(
            s.teams,
            vec![
                ("nlp".to_string(), vec![0, 4, 0]),
                ("vision".to_string(), vec![3, 0, 8])
            ]
        );
        assert_eq!((s.start_ms, s.days), (start, 3));
    }
}
