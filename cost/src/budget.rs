//! Monthly budgets: whether a submission fits, decided before anything is enqueued.
//!
//! A budget belongs to a team, optionally narrowed to one experiment (the job label
//! `experiment`), for one calendar month of the pricing time zone. The check counts what
//! was already spent this month, what is committed (the estimated cost of the scope's
//! queued and running jobs, which will be spent whatever happens next) and the new
//! submission (for a batch, the sum of its jobs, so a batch is admitted or refused whole).
//!
//! Thresholds are exact, on integers: the projection warns when it reaches the warn
//! ratio (`>=`: "at 70%" means 70% is reached) and blocks only when it goes over the
//! budget (`>`: spending the budget to the last micro-unit is allowed).

use crate::money::{Currency, Money, Ratio, SCALE};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};
use common::JobSpec;
use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Warn once a submission would bring spending to 70% of the budget.
pub const DEFAULT_WARN_RATIO: Ratio = Ratio::from_ppm(700_000);

/// The job label that names an experiment.
const EXPERIMENT_LABEL: &str = "experiment";

/// Whose budget: a team, or one experiment of a team.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BudgetScope {
    /// The team (`JobSpec::team`).
    pub team: String,
    /// The experiment (the job label `experiment`), or the whole team when `None`.
    pub experiment: Option<String>,
}

impl BudgetScope {
    /// Whether a job's cost counts against this budget.
    pub fn matches(&self, spec: &JobSpec) -> bool {
        spec.team == self.team
            && self
                .experiment
                .as_ref()
                .is_none_or(|e| spec.labels.get(EXPERIMENT_LABEL) == Some(e))
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "team {}", self.team)?;
        match &self.experiment {
            Some(e) => write!(f, ", experiment {e}"),
            None => Ok(()),
        }
    }
}

/// A calendar month, such as `2024-03`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// The month, if `month` is 1 to 12.
    pub fn new(year: i32, month: u32) -> Option<Month> {
        (1..=12).contains(&month).then_some(Month { year, month })
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month of the year, 1 to 12.
    pub fn month(self) -> u32 {
        self.month
    }

    /// The following month.
    pub fn next(self) -> Month {
        match self.month {
            12 => Month {
                year: self.year + 1,
                month: 1,
            },
            m => Month {
                year: self.year,
                month: m + 1,
            },
        }
    }

    /// The month `at` falls in, on the calendar of `tz` (the pricing time zone).
    pub fn of(at: DateTime<Utc>, tz: Tz) -> Month {
        let local = at.with_timezone(&tz);
        Month {
            year: local.year(),
            month: local.month(),
        }
    }

    /// The month as `[from, to)` in real time: from local midnight of its first day to
    /// local midnight of the next month's (the first instant after, if midnight is
    /// skipped by a clock change).
    pub fn bounds(self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.start(tz), self.next().start(tz))
    }

    fn start(self, tz: Tz) -> DateTime<Utc> {
        let midnight = NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .unwrap_or_default()
            .and_time(chrono::NaiveTime::MIN);
        tz.from_local_datetime(&midnight)
            .earliest()
            .or_else(|| GapInfo::new(&midnight, &tz).and_then(|gap| gap.end))
            .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = String;
    fn from_str(s: &str) -> Result<Month, String> {
        let bad = || format!("{s:?} is not a month like 2024-03");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        let (y, m) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        Month::new(y, m).ok_or_else(bad)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The figures a budget decision is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BudgetCheck {
    /// The month's budget.
    pub budget: Money,
    /// Actual cost of the scope's attempts this month so far.
    pub spent: Money,
    /// Estimated cost of the scope's queued and running jobs.
    pub committed: Money,
    /// Estimated cost of the submission (the sum over a batch).
    pub estimate: Money,
    /// Warn when the projection reaches this share of the budget.
    pub warn_ratio: Ratio,
}

/// Whether a submission may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum BudgetDecision {
    /// Below the warn ratio.
    Ok {
        /// Share of the budget used once the submission is counted.
        ratio: Ratio,
    },
    /// At or above the warn ratio, within the budget: go ahead, but say so.
    Warn {
        /// Share of the budget used once the submission is counted.
        ratio: Ratio,
        /// The month's budget.
        budget: Money,
        /// Spent so far.
        spent: Money,
        /// Queued and running jobs.
        committed: Money,
        /// The submission.
        estimate: Money,
    },
    /// Over the budget: refuse the whole submission.
    Block {
        /// The month's budget.
        budget: Money,
        /// Spent so far.
        spent: Money,
        /// Queued and running jobs.
        committed: Money,
        /// The submission.
        estimate: Money,
    },
}

impl BudgetCheck {
    /// A check with the default warn ratio (70%).
    pub fn new(budget: Money, spent: Money, committed: Money, estimate: Money) -> BudgetCheck {
        BudgetCheck {
            budget,
            spent,
            committed,
            estimate,
            warn_ratio: DEFAULT_WARN_RATIO,
        }
    }

    /// Spent, committed and the submission together.
    pub fn projected(&self) -> Money {
        self.spent + self.committed + self.estimate
    }

    /// Blocks when the projection is over the budget, warns when it reaches the warn
    /// ratio, and is Ok otherwise.
    pub fn check(&self) -> BudgetDecision {
        let projected = self.projected();
        let (budget, spent, committed, estimate) = (self.budget, self.spent, self.committed, self.estimate);
        if projected > budget {
            return BudgetDecision::Block {
                budget,
                spent,
                committed,
                estimate,
            };
        }
        let Some(ratio) = Ratio::of(projected, budget) else {
            // A zero budget with nothing projected: nothing to warn about.
            return BudgetDecision::Ok { ratio: Ratio::ZERO };
        };
        // Exact: projected / budget >= warn, without the rounding of `ratio`.
        let reached = projected.micros() as i128 * SCALE as i128
            >= self.warn_ratio.ppm() as i128 * budget.micros() as i128;
        if reached {
            BudgetDecision::Warn {
                ratio,
                budget,
                spent,
                committed,
                estimate,
            }
        } else {
            BudgetDecision::Ok { ratio }
        }
    }
}

impl BudgetDecision {
    /// Whether the submission must be refused.
    pub fn is_blocked(&self) -> bool {
        matches!(self, BudgetDecision::Block { .. })
    }

    /// What to tell the submitter, or `None` when there is nothing to say.
    pub fn message(&self, scope: &BudgetScope, month: Month, currency: &Currency) -> Option<String> {
        let m = |x: Money| currency.format(x);
        match *self {
            BudgetDecision::Ok { .. } => None,
            BudgetDecision::Warn {
                ratio,
                budget,
                spent,
                committed,
                estimate,
            } => Some(format!(
                "warning: this submission brings {scope} to {ratio} of its {month} budget of {}: \
                 spent {} + committed {} (queued and running jobs) + this submission {} = {}",
                m(budget),
                m(spent),
                m(committed),
                m(estimate),
                m(spent + committed + estimate),
            )),
            BudgetDecision::Block {
                budget,
                spent,
                committed,
                estimate,
            } => {
                let projected = spent + committed + estimate;
                let share = Ratio::of(projected, budget).map_or(String::new(), |r| format!(", {r} of it"));
                Some(format!(
                    "blocked: this submission would take {scope} over its {month} budget of {}: \
                     spent {} + committed {} (queued and running jobs) + this submission {} = {}{share}, \
                     {} over; nothing was enqueued",
                    m(budget),
                    m(spent),
                    m(committed),
                    m(estimate),
                    m(projected),
                    m(projected - budget),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    fn check(spent: &str, committed: &str, estimate: &str) -> BudgetDecision {
        BudgetCheck::new(usd("1000"), usd(spent), usd(committed), usd(estimate)).check()
    }

    #[test]
    fn warns_from_exactly_the_warn_ratio() {
        assert!(matches!(
            check("400", "200", "99.999999"),
            BudgetDecision::Ok { .. }
        ));
        let at_70 = check("400", "200", "100");
        assert!(matches!(at_70, BudgetDecision::Warn { ratio, .. } if ratio == DEFAULT_WARN_RATIO));
        assert!(matches!(
            check("400", "200", "100.000001"),
            BudgetDecision::Warn { .. }
        ));
    }

    #[test]
    fn blocks_only_over_the_budget() {
        let at_100 = check("400", "200", "400");
        assert!(matches!(
            at_100,
            BudgetDecision::Warn {
                ratio: Ratio::ONE,
                ..
            }
        ));
        let over = check("400", "200", "400.000001");
        assert_eq!(
            over,
            BudgetDecision::Block {
                budget: usd("1000"),
                spent: usd("400"),
                committed: usd("200"),
                estimate: usd("400.000001"),
            }
        );
        assert!(over.is_blocked());
    }

    #[test]
    fn committed_cost_counts() {
        // Nothing spent yet, but queued and running jobs already take 95%.
        assert!(matches!(check("0", "950", "40"), BudgetDecision::Warn { .. }));
        assert!(check("0", "950", "60").is_blocked());
        assert!(matches!(check("0", "0", "60"), BudgetDecision::Ok { .. }));
    }

    #[test]
    fn a_batch_is_checked_as_a_whole() {
        let jobs = [usd("150"), usd("150"), usd("150")];
        // Each job alone would only warn (600 + 150 = 75%)...
        assert!(!check("600", "0", "150").is_blocked());
        // ...but the batch would reach 1050: it is refused whole.
        let batch = BudgetCheck::new(usd("1000"), usd("600"), Money::ZERO, jobs.iter().sum()).check();
        assert!(batch.is_blocked());
    }

    #[test]
    fn custom_warn_ratio_and_zero_budget() {
        let mut c = BudgetCheck::new(usd("100"), usd("50"), Money::ZERO, Money::ZERO);
        c.warn_ratio = Ratio::parse("0.5").unwrap();
        assert!(matches!(c.check(), BudgetDecision::Warn { .. }));
        c.warn_ratio = Ratio::parse("0.500001").unwrap();
        assert!(matches!(c.check(), BudgetDecision::Ok { .. }));
        let zero = BudgetCheck::new(Money::ZERO, Money::ZERO, Money::ZERO, Money::ZERO);
        assert_eq!(zero.check(), BudgetDecision::Ok { ratio: Ratio::ZERO });
        let zero = BudgetCheck::new(Money::ZERO, Money::ZERO, Money::ZERO, usd("0.01"));
        assert!(zero.check().is_blocked());
    }

    #[test]
    fn messages_state_the_figures() {
        let scope = BudgetScope {
            team: "vision".into(),
            experiment: Some("ft-3".into()),
        };
        let month = Month::new(2024, 3).unwrap();
        let usd_ = Currency::usd();
        let block = check("600", "300", "150").message(&scope, month, &usd_).unwrap();
        assert_eq!(
            block,
            "blocked: this submission would take team vision, experiment ft-3 over its 2024-03 budget \
             of $1,000.00: spent $600.00 + committed $300.00 (queued and running jobs) + this submission \
             $150.00 = $1,050.00, 105% of it, $50.00 over; nothing was enqueued"
        );
        let warn = check("600", "0", "150").message(&scope, month, &usd_).unwrap();
        assert!(warn.starts_with("warning: this submission brings team vision, experiment ft-3 to 75% of its 2024-03 budget of $1,000.00"), "{warn}");
        assert_eq!(check("0", "0", "1").message(&scope, month, &usd_), None);
    }

    #[test]
    fn scopes_match_team_and_experiment() {
        let mut spec = JobSpec::new("j", "vision", vec!["x".into()]);
        let team = BudgetScope {
            team: "vision".into(),
            experiment: None,
        };
        let exp = BudgetScope {
            team: "vision".into(),
            experiment: Some("ft-3".into()),
        };
        assert!(team.matches(&spec) && !exp.matches(&spec));
        spec.labels.insert("experiment".into(), "ft-3".into());
        assert!(team.matches(&spec) && exp.matches(&spec));
        spec.team = "search".into();
        assert!(!team.matches(&spec));
    }

    #[test]
    fn months_follow_the_pricing_zone() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let t = Utc.with_ymd_and_hms(2024, 3, 31, 23, 30, 0).unwrap();
        assert_eq!(Month::of(t, Tz::UTC).to_string(), "2024-03");
        assert_eq!(Month::of(t, berlin).to_string(), "2024-04");
        let (from, to) = "2024-04".parse::<Month>().unwrap().bounds(berlin);
        assert_eq!(from, Utc.with_ymd_and_hms(2024, 3, 31, 22, 0, 0).unwrap());
        assert_eq!(to, Utc.with_ymd_and_hms(2024, 4, 30, 22, 0, 0).unwrap());
        let (from, to) = Month::new(2023, 12).unwrap().bounds(Tz::UTC);
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("2023-12-01 00:00:00 UTC".into(), "2024-01-01 00:00:00 UTC".into())
        );
        assert!("2024-13".parse::<Month>().is_err());
    }
}
