//! `cost estimate|compare|report|forecast|recommend`: what jobs will cost, did cost, and
//! could cost less.

use crate::app::{App, Caller, ReportRequest};
use crate::cli::CostCommand;
use crate::format::{print_json, short_duration};
use crate::{CliError, CliResult};
use common::JobSpec;

pub(crate) async fn run(app: &App, caller: &Caller, command: CostCommand) -> CliResult<()> {
    let currency = app.pricing().pricing.currency();
    match command {
        CostCommand::Estimate(a) => {
            let text = super::read_input(&a.file)?;
            let specs = common::parse_batch(&text).map_err(|e| CliError::BadInput(e.to_string()))?;
            let out = app.estimate(caller, &specs, a.spot, a.start).await?;
            if a.json {
                print_json(&out);
            } else {
                for e in &out {
                    println!("{}", e.line());
                }
            }
        }
        CostCommand::Compare(a) => {
            let text = super::read_input(&a.file)?;
            let spec = JobSpec::from_json(text.trim()).map_err(|e| CliError::BadInput(e.to_string()))?;
            let rows = app
                .compare(caller, &spec, &a.batch_size, &a.gpus, a.all_options)
                .await?;
            if a.json {
                print_json(&rows);
                return Ok(());
            }
            println!(
                "{:<24} {:>6} {:>5} {:>22} {:>10} {:>12}",
                "SCENARIO", "BATCH", "GPUS", "START", "TIME", "COST"
            );
            for r in &rows {
                println!(
                    "{:<24} {:>6} {:>5} {:>22} {:>10} {:>12}",
                    r.scenario.label,
                    r.scenario.batch_size,
                    r.scenario.gpus,
                    r.start.format("%Y-%m-%d %H:%M UTC"),
                    short_duration(r.estimate.secs * 1000),
                    currency.format(r.quote.total)
                );
            }
        }
        CostCommand::Report(a) => {
            let req = ReportRequest {
                from: a.from,
                to: a.to,
                by: a.by.clone(),
            };
            let report = app.cost_report(caller, &req).await.map_err(|e| match e {
                // The CLI's flags are --by, --from and --to.
                crate::app::AppError::BadInput { message, .. } => CliError::BadInput(format!("--{message}")),
                e => e.into(),
            })?;
            if a.csv {
                print!("{}", report.to_csv());
            } else if a.json {
                print_json(&report);
            } else {
                println!(
                    "{:<20} {:>14} {:>6} {:>12} {:>9}",
                    "GROUP", "COST", "RUNS", "AVG", "TREND"
                );
                for l in &report.lines {
                    println!(
                        "{:<20} {:>14} {:>6} {:>12} {:>9}",
                        l.group,
                        currency.format(l.cost),
                        l.runs,
                        currency.format(l.avg_cost),
                        l.change_pct
                            .map(|p| format!("{p:+.1}%"))
                            .unwrap_or_else(|| "new".into())
                    );
                }
                println!(
                    "{:<20} {:>14} {:>6}",
                    "total",
                    currency.format(report.total.cost),
                    report.total.runs
                );
                let p = &report.preemption;
                if p.attempts > 0 {
                    println!(
                        "{:<20} {:>14} {:>6}  ({:.3} GPU-h lost since the victims' last checkpoints; part of the total)",
                        "preemption losses",
                        currency.format(p.cost),
                        p.attempts,
                        p.lost_gpu_hours
                    );
                }
            }
        }
        CostCommand::Forecast(a) => {
            let (f, done) = app.forecast(caller, &a.id).await?;
            if a.json {
                print_json(&f);
            } else {
                let job = app.job(caller, &a.id).await?;
                println!(
                    "job {}: {} so far, epoch {done} of {}",
                    a.id,
                    currency.format(f.so_far),
                    job.spec.epochs
                );
                match (f.projected_total, f.projected_end) {
                    (Some(total), Some(end)) => {
                        println!("projected total {} (ends about {end})", currency.format(total))
                    }
                    _ => println!("no projection until the first epoch completes"),
                }
            }
        }
        CostCommand::Recommend(a) => {
            let (cost, recs) = app.recommend(caller, &a.id).await?;
            if a.json {
                print_json(&recs);
                return Ok(());
            }
            println!("run {} cost {}", a.id, currency.format(cost));
            if recs.is_empty() {
                println!("no savings found for this run");
            }
            for r in &recs {
                println!("  save {:>10}  {}", currency.format(r.saves), r.basis);
            }
        }
    }
    Ok(())
}
