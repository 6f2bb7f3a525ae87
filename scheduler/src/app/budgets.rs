//! Monthly budgets per team (and per `experiment` label), and the check every enqueue
//! makes before anything is written.
//!
//! Projected spend = actual cost of the month's ended attempts (recorded by `serve` when
//! each attempt ends) + the estimates of the team's queued, retrying and running jobs (in
//! full: a conservative reading of what is committed) + the new jobs' estimates. At or
//! over the warn ratio (default 70%) the submission goes through with a warning; over 100%
//! it is refused whole (`over_budget`) and nothing is enqueued.

use super::costs::Estimator;
use super::{App, AppError, AppResult, Caller, Role};
use chrono::Utc;
use common::store::{BudgetRow, JobStore};
use common::JobSpec;
use cost::{BudgetCheck, BudgetDecision, BudgetScope, Money, Month, Ratio};

/// A budget to set.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSet {
    /// The team.
    pub team: String,
    /// An `experiment` label value, for a budget of that experiment only.
    #[serde(default)]
    pub experiment: Option<String>,
    /// `YYYY-MM`; default this month in the pricing's time zone.
    #[serde(default)]
    pub month: Option<String>,
    /// The amount, a decimal in the pricing's currency (`"500"`, `"12.50"`).
    pub amount: String,
    /// Warn at this share of the budget (`"0.7"`, `"70%"`).
    #[serde(default = "default_warn")]
    pub warn: String,
}

fn default_warn() -> String {
    "0.7".into()
}

/// A budget with what is spent and committed against it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Standing {
    /// The budget.
    pub budget: BudgetRow,
    /// Spent this month, micro-units.
    pub spent_micros: i64,
    /// The estimates of the scope's unfinished jobs, micro-units.
    pub committed_micros: i64,
}

impl App {
    /// The month named, or this month in the pricing's time zone.
    pub(crate) fn month_of(&self, given: Option<&str>) -> AppResult<Month> {
        match given {
            Some(m) => m
                .parse()
                .map_err(|e| AppError::bad_input(format!("month {m:?}: {e}"))),
            None => Ok(Month::of(Utc::now(), self.pricing().pricing.time_zone())),
        }
    }

    /// Sets (or replaces) a budget (admins only). Returns what was stored.
    pub async fn set_budget(&self, caller: &Caller, b: &BudgetSet) -> AppResult<BudgetRow> {
        caller.require(Role::Admin, "setting budgets")?;
        if !common::is_safe_name(&b.team) {
            return Err(AppError::bad_input(format!(
                "team {:?}: must be 1 to 63 letters, digits, '-', '_' or '.'",
                b.team
            )));
        }
        let month = self.month_of(b.month.as_deref())?;
        let amount = Money::parse(&b.amount)
            .map_err(|e| AppError::bad_input(format!("amount {:?}: {e}", b.amount)))?;
        if !amount.is_positive() {
            return Err(AppError::bad_input(format!(
                "amount {:?}: must be more than zero",
                b.amount
            )));
        }
        let warn =
            Ratio::parse(&b.warn).map_err(|e| AppError::bad_input(format!("warn {:?}: {e}", b.warn)))?;
        if warn.ppm() == 0 || warn.ppm() > Ratio::ONE.ppm() {
            return Err(AppError::bad_input(format!(
                "warn {:?}: must be in (0, 1]",
                b.warn
            )));
        }
        let row = BudgetRow {
            team: b.team.clone(),
            experiment: b.experiment.clone().unwrap_or_default(),
            month: month.to_string(),
            amount_micros: amount.micros(),
            warn_ppm: warn.ppm(),
        };
        self.store().await?.set_budget(&row).await?;
        // Other processes' cached budgets go stale now.
        self.settings_changed().await?;
        let detail = format!(
            "{} for {month}, warns at {warn}",
            self.pricing().pricing.currency().format(amount)
        );
        self.audit(caller, "budget.set", &b.team, &detail).await;
        Ok(row)
    }

    /// The month's budgets with their standing; a team caller's own only.
    pub async fn budgets(
        &self,
        caller: &Caller,
        month: Option<&str>,
        team: Option<String>,
    ) -> AppResult<Vec<Standing>> {
        caller.require(Role::Viewer, "reading budgets")?;
        let team = caller.team_filter(team)?;
        let month = self.month_of(month)?;
        let store = self.store().await?;
        let mut estimator = self.estimator(Some(store));
        let mut out = Vec::new();
        for b in self
            .budget_rows(store, &month.to_string(), team.as_deref())
            .await?
        {
            let (spent, committed) = standing(store, &mut estimator, month, &b.team, &b.experiment).await?;
            out.push(Standing {
                budget: b,
                spent_micros: spent.micros(),
                committed_micros: committed.micros(),
            });
        }
        Ok(out)
    }

    /// Checks `specs` (about to be enqueued together) against every budget they fall
    /// under. Refuses the whole submission if any budget would go over 100%; returns the
    /// warnings otherwise. A store that cannot be read leaves budgets unchecked, with a
    /// warning: a job store outage must not stop training.
    pub(crate) async fn enforce_budgets(&self, specs: &[JobSpec]) -> AppResult<Vec<String>> {
        let store = match self.store().await {
            Ok(s) => s,
            Err(e) => return Ok(vec![format!("warning: budgets not checked: {e}")]),
        };
        let model = self.pricing();
        let month = Month::of(Utc::now(), model.pricing.time_zone());
        let mut estimator = self.estimator(Some(store));
        let mut teams: Vec<&str> = specs.iter().map(|s| s.team.as_str()).collect();
        teams.sort();
        teams.dedup();
        let mut warnings = Vec::new();
        for team in teams {
            for b in self.budget_rows(store, &month.to_string(), Some(team)).await? {
                let new: Vec<&JobSpec> = specs
                    .iter()
                    .filter(|s| s.team == team && in_scope(s, &b.experiment))
                    .collect();
                if new.is_empty() {
                    continue;
                }
                let new_cost = estimator.total(&new).await?;
                let (spent, committed) = standing(store, &mut estimator, month, team, &b.experiment).await?;
                let check = BudgetCheck {
                    budget: Money::from_micros(b.amount_micros),
                    spent,
                    committed,
                    estimate: new_cost,
                    warn_ratio: Ratio::from_ppm(b.warn_ppm),
                };
                let decision = check.check();
                let scope = BudgetScope {
                    team: team.to_string(),
                    experiment: (!b.experiment.is_empty()).then(|| b.experiment.clone()),
                };
                let message = decision.message(&scope, month, model.pricing.currency());
                match decision {
                    BudgetDecision::Block { .. } => {
                        return Err(AppError::BadInput {
                            code: "over_budget",
                            message: message.unwrap_or_else(|| "over budget".into()),
                        });
                    }
                    BudgetDecision::Warn { .. } => warnings.push(message.unwrap_or_default()),
                    BudgetDecision::Ok { .. } => {}
                }
            }
        }
        Ok(warnings)
    }
}

/// Spent this month and committed (estimates of unfinished jobs) for one budget scope.
pub(crate) async fn standing(
    store: &JobStore,
    estimator: &mut Estimator<'_>,
    month: Month,
    team: &str,
    experiment: &str,
) -> AppResult<(Money, Money)> {
    let (from, to) = month.bounds(estimator.model().pricing.time_zone());
    let spent = store
        .spent(
            team,
            experiment,
            from.timestamp_millis() as u64,
            to.timestamp_millis() as u64,
        )
        .await?;
    let unfinished = store.unfinished(team).await?;
    let in_scope: Vec<&JobSpec> = unfinished
        .iter()
        .map(|j| &j.spec)
        .filter(|s| in_scope(s, experiment))
        .collect();
    let committed = estimator.total(&in_scope).await?;
    Ok((Money::from_micros(spent), committed))
}

fn in_scope(spec: &JobSpec, experiment: &str) -> bool {
    experiment.is_empty() || spec.labels.get("experiment").map(String::as_str) == Some(experiment)
}
