//! Spend over time: each team's recorded attempt costs per day, for the dashboard's costs
//! page. Days are UTC days; the bucketing is a pure function so that it is tested apart.

use super::{App, AppError, AppResult, Caller, Role};
use common::store::AttemptCost;
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
    /// The last `days` UTC days of spend (today included), per team; a team caller's own
    /// team only.
    pub async fn daily_spend(&self, caller: &Caller, days: u32) -> AppResult<DailySpend> {
        caller.require(Role::Viewer, "reading costs")?;
        if days == 0 || days > MAX_DAYS {
            return Err(AppError::bad_input(format!(
                "days {days}: must be 1 to {MAX_DAYS}"
            )));
        }
        let now = common::now_ms();
        let start = (now / DAY_MS + 1).saturating_sub(u64::from(days)) * DAY_MS;
        let rows: Vec<AttemptCost> = self
            .store()
            .await?
            .attempt_costs(start, now + 1)
            .await?
            .into_iter()
            .filter(|c| caller.sees_team(&c.team))
            .collect();
        Ok(DailySpend::of(&rows, start, days))
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
