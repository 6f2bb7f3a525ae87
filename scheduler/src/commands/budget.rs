//! `budget set|show`: monthly budgets per team (and per `experiment` label). The check
//! every enqueue makes is the application layer's (`app::budgets`).

use crate::app::{App, BudgetSet, Caller};
use crate::cli::{BudgetSetArgs, BudgetShowArgs};
use crate::format::print_json;
use crate::CliResult;
use cost::{Money, Ratio};

pub(crate) async fn set(app: &App, caller: &Caller, a: BudgetSetArgs) -> CliResult<()> {
    let row = app
        .set_budget(
            caller,
            &BudgetSet {
                team: a.team.clone(),
                experiment: a.experiment.clone(),
                month: a.month.clone(),
                amount: a.amount.clone(),
                warn: a.warn.clone(),
            },
        )
        .await?;
    let scope = a
        .experiment
        .map(|e| format!(" experiment {e}"))
        .unwrap_or_default();
    println!(
        "budget for team {}{scope} in {}: {} (warns at {})",
        a.team,
        row.month,
        app.pricing()
            .pricing
            .currency()
            .format(Money::from_micros(row.amount_micros)),
        Ratio::from_ppm(row.warn_ppm)
    );
    Ok(())
}

pub(crate) async fn show(app: &App, caller: &Caller, a: BudgetShowArgs) -> CliResult<()> {
    let out = app.budgets(caller, a.month.as_deref(), a.team.clone()).await?;
    if a.json {
        print_json(&out);
        return Ok(());
    }
    if out.is_empty() {
        println!("no budgets for {}", app.month_of(a.month.as_deref())?);
        return Ok(());
    }
    let c = app.pricing().pricing.currency();
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
