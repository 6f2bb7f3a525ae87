//! Monthly budgets per team (and per `experiment` label): `budget set|show`, and the check
//! `enqueue` and `batch` make before anything is written.
//!
//! Projected spend = actual cost of the month's ended attempts (recorded by `serve` when
//! each attempt ends) + the estimates of the team's queued, retrying and running jobs (in
//! full: a conservative reading of what is committed) + the new jobs' estimates. At or
//! over the warn ratio (default 70%) the submission goes through with a warning; over 100%
//! it is refused whole (exit code 2) and nothing is enqueued.

use super::cost::{model, Estimator};
use crate::cli::{BudgetSetArgs, BudgetShowArgs};
use crate::format::print_json;
use crate::{CliError, CliResult};
use chrono::Utc;
use common::store::{BudgetRow, JobStore};
use common::JobSpec;
use cost::{BudgetCheck, BudgetDecision, BudgetScope, CostModel, Money, Month, Ratio};
use std::path::Path;

fn month_of(model: &CostModel, given: Option<&str>) -> CliResult<Month> {
    match given {
        Some(m) => m
            .parse()
            .map_err(|e| CliError::BadInput(format!("--month {m:?}: {e}"))),
        None => Ok(Month::of(Utc::now(), model.pricing.time_zone())),
    }
}

pub(crate) async fn set(store: &JobStore, pricing: Option<&Path>, a: BudgetSetArgs) -> CliResult<()> {
    let model = model(pricing)?;
    let month = month_of(&model, a.month.as_deref())?;
    let amount =
        Money::parse(&a.amount).map_err(|e| CliError::BadInput(format!("amount {:?}: {e}", a.amount)))?;
    if !amount.is_positive() {
        return Err(CliError::BadInput(format!(
            "amount {:?}: must be more than zero",
            a.amount
        )));
    }
    let warn = Ratio::parse(&a.warn).map_err(|e| CliError::BadInput(format!("--warn {:?}: {e}", a.warn)))?;
    if warn.ppm() == 0 || warn.ppm() > Ratio::ONE.ppm() {
        return Err(CliError::BadInput(format!(
            "--warn {:?}: must be in (0, 1]",
            a.warn
        )));
    }
    store
        .set_budget(&BudgetRow {
            team: a.team.clone(),
            experiment: a.experiment.clone().unwrap_or_default(),
            month: month.to_string(),
            amount_micros: amount.micros(),
            warn_ppm: warn.ppm(),
        })
        .await?;
    let scope = a
        .experiment
        .map(|e| format!(" experiment {e}"))
        .unwrap_or_default();
    println!(
        "budget for team {}{scope} in {month}: {} (warns at {warn})",
        a.team,
        model.pricing.currency().format(amount)
    );
    Ok(())
}

/// A budget with what is spent and committed against it.
#[derive(Debug, serde::Serialize)]
struct Standing {
    budget: BudgetRow,
    spent_micros: i64,
    committed_micros: i64,
}

pub(crate) async fn show(store: &JobStore, pricing: Option<&Path>, a: BudgetShowArgs) -> CliResult<()> {
    let model = model(pricing)?;
    let month = month_of(&model, a.month.as_deref())?;
    let mut estimator = Estimator::new(&model, Some(store));
    let mut out = Vec::new();
    for b in store.budgets(&month.to_string(), a.team.as_deref()).await? {
        let (spent, committed) = standing(store, &mut estimator, month, &b.team, &b.experiment).await?;
        out.push(Standing {
            budget: b,
            spent_micros: spent.micros(),
            committed_micros: committed.micros(),
        });
    }
    if a.json {
        print_json(&out);
        return Ok(());
    }
    if out.is_empty() {
        println!("no budgets for {month}");
        return Ok(());
    }
    let c = model.pricing.currency();
    println!(
        "{:<16} {:<14} {:<8} {:>14} {:>14} {:>14} {:>6}",
        "TEAM", "EXPERIMENT", "MONTH", "BUDGET", "SPENT", "COMMITTED", "USED"
    );
    for s in &out {
        let used = Ratio::of(
            Money::from_micros(s.spent_micros + s.committed_micros),
            Money::from_micros(s.budget.amount_micros),
        );
        println!(
            "{:<16} {:<14} {:<8} {:>14} {:>14} {:>14} {:>6}",
            s.budget.team,
            if s.budget.experiment.is_empty() {
                "-"
            } else {
                s.budget.experiment.as_str()
            },
            s.budget.month,
            c.format(Money::from_micros(s.budget.amount_micros)),
            c.format(Money::from_micros(s.spent_micros)),
            c.format(Money::from_micros(s.committed_micros)),
            used.map(|r| r.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// Spent this month and committed (estimates of unfinished jobs) for one budget scope.
pub(crate) async fn standing(
    store: &JobStore,
    estimator: &mut Estimator<'_>,
    month: Month,
    team: &str,
    experiment: &str,
) -> CliResult<(Money, Money)> {
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

/// Checks `specs` (about to be enqueued together) against every budget they fall under.
/// Refuses the whole submission if any budget would go over 100%.
pub(crate) async fn enforce(store_url: &str, pricing: Option<&Path>, specs: &[JobSpec]) -> CliResult<()> {
    let model = model(pricing)?;
    let store = match JobStore::open(store_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: budgets not checked: {e}");
            return Ok(());
        }
    };
    let month = Month::of(Utc::now(), model.pricing.time_zone());
    let mut estimator = Estimator::new(&model, Some(&store));
    let mut teams: Vec<&str> = specs.iter().map(|s| s.team.as_str()).collect();
    teams.sort();
    teams.dedup();
    for team in teams {
        for b in store.budgets(&month.to_string(), Some(team)).await? {
            let new: Vec<&JobSpec> = specs
                .iter()
                .filter(|s| s.team == team && in_scope(s, &b.experiment))
                .collect();
            if new.is_empty() {
                continue;
            }
            let new_cost = estimator.total(&new).await?;
            let (spent, committed) = standing(&store, &mut estimator, month, team, &b.experiment).await?;
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
                    return Err(CliError::BadInput(
                        message.unwrap_or_else(|| "over budget".into()),
                    ));
                }
                BudgetDecision::Warn { .. } => eprintln!("{}", message.unwrap_or_default()),
                BudgetDecision::Ok { .. } => {}
            }
        }
    }
    Ok(())
}
