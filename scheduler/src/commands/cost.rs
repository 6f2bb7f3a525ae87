//! Cost estimates at submit time: `scheduler cost estimate`, and the estimate line that
//! `enqueue` and `batch` print. Budgets, reports, forecasts and recommendations are the
//! open part of the cost issue; the arithmetic for them lives in the `cost` crate.

use crate::cli::{CostCompareArgs, CostEstimateArgs, CostReportArgs, IdArgs};
use crate::format::{print_json, short_duration};
use crate::{CliError, CliResult};
use chrono::{DateTime, Utc};
use common::store::JobStore;
use common::JobSpec;
use cost::{CostModel, DurationEstimate, Quote, RunSample, Usage};
use serde::Serialize;

/// Runs considered per estimate.
const HISTORY: usize = 50;

/// A priced spec.
#[derive(Debug, Serialize)]
pub(crate) struct Estimate {
    pub(crate) name: String,
    pub(crate) duration_secs: u64,
    pub(crate) basis: String,
    pub(crate) cost: String,
    pub(crate) cost_micros: i64,
    pub(crate) peak_hours: f64,
    pub(crate) off_peak_hours: f64,
    pub(crate) start: DateTime<Utc>,
}

/// Loads the pricing file (`--pricing`/GPUQ_PRICING) or the built-in default.
pub(crate) fn model(path: Option<&std::path::Path>) -> CliResult<CostModel> {
    match path {
        None => Ok(CostModel::builtin()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CliError::BadInput(format!("cannot read pricing file {}: {e}", p.display())))?;
            CostModel::from_toml(&text).map_err(|e| CliError::BadInput(format!("{}: {e}", p.display())))
        }
    }
}

/// Recent successful runs of `model_type` from the store (none without a store).
async fn history(store: Option<&JobStore>, model_type: &str) -> CliResult<Vec<RunSample>> {
    let mut history = Vec::new();
    if let Some(store) = store {
        for (json, run_ms, finished) in store.successful_runs(model_type, HISTORY).await? {
            let Ok(past) = serde_json::from_str::<JobSpec>(&json) else {
                continue;
            };
            history.push(RunSample {
                model_type: past.model_type,
                epochs: past.epochs,
                batch_size: past.batch_size,
                gpus: past.resources.gpus,
                run_secs: (run_ms / 1000).max(1),
                finished_at: DateTime::from_timestamp_millis(finished as i64).unwrap_or_default(),
            });
        }
    }
    Ok(history)
}

/// Prices specs with history from the store when it has any, reading each model type's
/// history once however many specs share it (a batch, a team's queued jobs).
pub(crate) struct Estimator<'a> {
    model: &'a CostModel,
    store: Option<&'a JobStore>,
    histories: std::collections::HashMap<String, Vec<RunSample>>,
}

impl<'a> Estimator<'a> {
    pub(crate) fn new(model: &'a CostModel, store: Option<&'a JobStore>) -> Self {
        Estimator {
            model,
            store,
            histories: Default::default(),
        }
    }

    /// The pricing model it uses.
    pub(crate) fn model(&self) -> &'a CostModel {
        self.model
    }

    /// Prices `spec` starting at `start` (or at its own later start, when deferred).
    pub(crate) async fn estimate(
        &mut self,
        spec: &JobSpec,
        spot: bool,
        start: DateTime<Utc>,
    ) -> CliResult<Estimate> {
        if !self.histories.contains_key(&spec.model_type) {
            let h = history(self.store, &spec.model_type).await?;
            self.histories.insert(spec.model_type.clone(), h);
        }
        Ok(priced(
            self.model,
            spec,
            &self.histories[&spec.model_type],
            spot,
            start,
        ))
    }

    /// The summed cost of `specs` starting now.
    pub(crate) async fn total(&mut self, specs: &[&JobSpec]) -> CliResult<cost::Money> {
        let now = Utc::now();
        let mut total = cost::Money::ZERO;
        for spec in specs {
            total += cost::Money::from_micros(self.estimate(spec, false, now).await?.cost_micros);
        }
        Ok(total)
    }
}

fn priced(
    model: &CostModel,
    spec: &JobSpec,
    history: &[RunSample],
    spot: bool,
    start: DateTime<Utc>,
) -> Estimate {
    // A deferred job starts when it is due, not now.
    let start = spec.not_before.map(utc).filter(|t| *t > start).unwrap_or(start);
    let est: DurationEstimate = model.estimates.estimate(spec, history);
    let quote: Quote = model
        .pricing
        .quote_for(&Usage::of(spec, spot), start, est.duration());
    Estimate {
        name: spec.name.clone(),
        duration_secs: est.secs,
        basis: est.basis.to_string(),
        cost: model.pricing.currency().format(quote.total),
        cost_micros: quote.total.micros(),
        peak_hours: quote.peak_ms as f64 / 3.6e6,
        off_peak_hours: quote.off_peak_ms as f64 / 3.6e6,
        start,
    }
}

impl Estimate {
    /// One line for people.
    pub(crate) fn line(&self) -> String {
        format!(
            "estimate for {}: ~{} and {} ({:.1} h peak, {:.1} h off-peak); basis: {}",
            self.name,
            short_duration(self.duration_secs * 1000),
            self.cost,
            self.peak_hours,
            self.off_peak_hours,
            self.basis
        )
    }
}

pub(crate) async fn estimate_command(
    store_url: &str,
    pricing: Option<&std::path::Path>,
    a: CostEstimateArgs,
) -> CliResult<()> {
    let text = super::read_input(&a.file)?;
    let specs = common::parse_batch(&text).map_err(|e| CliError::BadInput(e.to_string()))?;
    let model = model(pricing)?;
    let store = JobStore::open(store_url).await.ok();
    let start = a
        .start
        .map(|ms| DateTime::from_timestamp_millis(ms as i64).unwrap_or_else(Utc::now))
        .unwrap_or_else(Utc::now);
    let mut estimator = Estimator::new(&model, store.as_ref());
    let mut out = Vec::new();
    for spec in &specs {
        out.push(estimator.estimate(spec, a.spot, start).await?);
    }
    if a.json {
        print_json(&out);
    } else {
        for e in &out {
            println!("{}", e.line());
        }
    }
    Ok(())
}

/// Prints the estimate of what was just enqueued to stderr. Estimating never blocks an
/// enqueue: without a readable store the default table is used, and a failure is a note.
pub(crate) async fn print_for_enqueue(store_url: &str, pricing: Option<&std::path::Path>, specs: &[JobSpec]) {
    let model = match model(pricing) {
        Ok(m) => m,
        Err(e) => return eprintln!("note: no cost estimate: {e}"),
    };
    let store = JobStore::open(store_url).await.ok();
    let mut estimator = Estimator::new(&model, store.as_ref());
    let mut total = cost::Money::ZERO;
    let mut last = None;
    let now = Utc::now();
    for spec in specs {
        let e = match estimator.estimate(spec, false, now).await {
            Ok(e) => e,
            Err(e) => return eprintln!("note: no cost estimate: {e}"),
        };
        total += cost::Money::from_micros(e.cost_micros);
        last = Some(e);
    }
    match (specs.len(), last) {
        (1, Some(e)) => eprintln!("{}", e.line()),
        (n, Some(_)) => eprintln!(
            "estimate for {n} jobs: {} in total",
            model.pricing.currency().format(total)
        ),
        _ => {}
    }
}

/// The pricer the store uses to record what each attempt cost when it ends. Spot is not a
/// spec field yet, so attempts are priced on demand.
pub(crate) fn attempt_pricer(model: CostModel) -> std::sync::Arc<common::store::Pricer> {
    std::sync::Arc::new(move |spec: &str, start: u64, end: u64| {
        let spec: JobSpec = serde_json::from_str(spec).ok()?;
        let at = |ms: u64| DateTime::from_timestamp_millis(ms as i64);
        Some(
            model
                .pricing
                .actual_cost(&Usage::of(&spec, false), at(start)?, at(end)?)
                .micros(),
        )
    })
}

fn utc(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

pub(crate) async fn report_command(
    store: &JobStore,
    pricing: Option<&std::path::Path>,
    a: CostReportArgs,
) -> CliResult<()> {
    let model = model(pricing)?;
    let by: cost::GroupBy =
        a.by.parse()
            .map_err(|e| CliError::BadInput(format!("--by {:?}: {e}", a.by)))?;
    let to = a.to.unwrap_or_else(common::now_ms);
    if to <= a.from {
        return Err(CliError::BadInput("--to must be after --from".into()));
    }
    // The previous period of the same length is needed for the trend.
    let previous_from = a.from.saturating_sub(to - a.from);
    let rows: Vec<cost::CostRow> = store
        .attempt_costs(previous_from, to)
        .await?
        .into_iter()
        .filter_map(|c| {
            Some(cost::CostRow {
                job_id: c.job_id.parse().ok()?,
                team: c.team,
                model_type: c.model_type,
                priority: c.priority.parse().ok()?,
                cost: cost::Money::from_micros(c.cost_micros),
                run_secs: c.run_ms / 1000,
                finished_at: utc(c.ended_at),
                preempted: c.preempted,
                lost_gpu_ms: c.lost_gpu_ms,
                lost: cost::Money::from_micros(c.lost_micros),
            })
        })
        .collect();
    let report = cost::report(&rows, utc(a.from), utc(to), by);
    if a.csv {
        print!("{}", report.to_csv());
    } else if a.json {
        print_json(&report);
    } else {
        let c = model.pricing.currency();
        println!(
            "{:<20} {:>14} {:>6} {:>12} {:>9}",
            "GROUP", "COST", "RUNS", "AVG", "TREND"
        );
        for l in &report.lines {
            println!(
                "{:<20} {:>14} {:>6} {:>12} {:>9}",
                l.group,
                c.format(l.cost),
                l.runs,
                c.format(l.avg_cost),
                l.change_pct
                    .map(|p| format!("{p:+.1}%"))
                    .unwrap_or_else(|| "new".into())
            );
        }
        println!(
            "{:<20} {:>14} {:>6}",
            "total",
            c.format(report.total.cost),
            report.total.runs
        );
        let p = &report.preemption;
        if p.attempts > 0 {
            println!(
                "{:<20} {:>14} {:>6}  ({:.3} GPU-h lost since the victims' last checkpoints; part of the total)",
                "preemption losses",
                c.format(p.cost),
                p.attempts,
                p.lost_gpu_hours
            );
        }
    }
    Ok(())
}

pub(crate) async fn forecast_command(
    queue: &common::queue::RedisQueue,
    pricing: Option<&std::path::Path>,
    a: IdArgs,
) -> CliResult<()> {
    let model = model(pricing)?;
    let job = queue
        .get(&a.id)
        .await?
        .ok_or_else(|| common::Error::NotFound(a.id.clone()))?;
    let (Some(started), common::JobState::Running) = (job.started_at, job.state) else {
        return Err(CliError::BadInput(format!(
            "job {} is {}; only running jobs have a forecast",
            a.id, job.state
        )));
    };
    // Progress is "epoch k/n" from the trainer's JSON lines.
    let done = job
        .progress
        .as_deref()
        .and_then(|p| p.strip_prefix("epoch "))
        .and_then(|p| p.split('/').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or(0);
    let f = cost::forecast(
        &model.pricing,
        &Usage::of(&job.spec, false),
        utc(started),
        Utc::now(),
        cost::Progress {
            epochs_done: done,
            epochs_total: job.spec.epochs,
        },
    );
    let c = model.pricing.currency();
    if a.json {
        print_json(&f);
    } else {
        println!(
            "job {}: {} so far, epoch {done} of {}",
            a.id,
            c.format(f.so_far),
            job.spec.epochs
        );
        match (f.projected_total, f.projected_end) {
            (Some(total), Some(end)) => println!("projected total {} (ends about {end})", c.format(total)),
            _ => println!("no projection until the first epoch completes"),
        }
    }
    Ok(())
}

pub(crate) async fn compare_command(
    store_url: &str,
    pricing: Option<&std::path::Path>,
    a: CostCompareArgs,
) -> CliResult<()> {
    let text = super::read_input(&a.file)?;
    let spec = JobSpec::from_json(text.trim()).map_err(|e| CliError::BadInput(e.to_string()))?;
    let model = model(pricing)?;
    let store = JobStore::open(store_url).await.ok();
    let history = history(store.as_ref(), &spec.model_type).await?;
    let base = cost::Scenario::baseline(&spec);
    let mut scenarios = vec![base.clone()];
    for &b in &a.batch_size {
        scenarios.push(cost::Scenario {
            label: format!("batch size {b}"),
            batch_size: b,
            ..base.clone()
        });
    }
    for &g in &a.gpus {
        scenarios.push(cost::Scenario {
            label: format!("{g} GPU(s)"),
            gpus: g,
            ..base.clone()
        });
    }
    if a.all_options {
        scenarios.push(cost::Scenario {
            label: "spot".into(),
            spot: true,
            ..base.clone()
        });
        scenarios.push(cost::Scenario {
            label: "off-peak start".into(),
            off_peak: true,
            ..base.clone()
        });
        scenarios.push(cost::Scenario {
            label: "spot, off-peak start".into(),
            spot: true,
            off_peak: true,
            ..base.clone()
        });
    }
    let rows = cost::compare(&model, &spec, &history, &scenarios, Utc::now());
    if a.json {
        print_json(&rows);
        return Ok(());
    }
    let c = model.pricing.currency();
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
            c.format(r.quote.total)
        );
    }
    Ok(())
}

/// Epoch metrics from a trainer's JSON progress lines (`{"epoch":k,"loss":..,"accuracy":..}`).
fn epoch_metrics(lines: &[String]) -> Vec<cost::EpochMetrics> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(cost::EpochMetrics {
                epoch: u32::try_from(v.get("epoch")?.as_u64()?).ok()?,
                loss: v.get("loss").and_then(|x| x.as_f64()),
                accuracy: v.get("accuracy").and_then(|x| x.as_f64()),
            })
        })
        .collect()
}

/// Recommendations for a finished run. The run's progress comes from its output in Redis
/// (kept with the job until retention removes it); similar runs are the store's successful
/// runs of the same model type, epochs and GPUs whose output is still in Redis. A job is
/// taken to checkpoint when its spec carries the label `checkpoints=true`; GPU utilisation
/// is not measured yet, so the fewer-GPUs rule stays silent.
pub(crate) async fn recommend_command(
    queue: &common::queue::RedisQueue,
    store_url: &str,
    pricing: Option<&std::path::Path>,
    a: IdArgs,
) -> CliResult<()> {
    let model = model(pricing)?;
    let store = JobStore::open(store_url).await.ok();
    let job = match queue.get(&a.id).await? {
        Some(j) => j,
        None => match &store {
            Some(s) => s
                .get(&a.id)
                .await?
                .ok_or_else(|| common::Error::NotFound(a.id.clone()))?,
            None => return Err(common::Error::NotFound(a.id.clone()).into()),
        },
    };
    let (Some(started), Some(ended)) = (job.started_at, job.finished_at) else {
        return Err(CliError::BadInput(format!(
            "job {} is {}; only finished runs get recommendations",
            a.id, job.state
        )));
    };
    let progress = epoch_metrics(&queue.logs(&a.id, 1000).await?);
    let mut similar = Vec::new();
    if let Some(s) = &store {
        for (json, run_ms, _) in s.successful_runs(&job.spec.model_type, HISTORY).await? {
            let Ok(past) = serde_json::from_str::<JobSpec>(&json) else {
                continue;
            };
            let same = past.epochs == job.spec.epochs && past.resources.gpus == job.spec.resources.gpus;
            let Some(id) = past.id.clone().filter(|id| *id != job.id && same) else {
                continue;
            };
            let final_accuracy = epoch_metrics(&queue.logs(&id, 1000).await?)
                .last()
                .and_then(|m| m.accuracy);
            similar.push(cost::SimilarRun {
                batch_size: past.batch_size,
                run_secs: run_ms / 1000,
                final_accuracy,
            });
        }
    }
    let usage = Usage::of(&job.spec, false);
    let run = cost::FinishedRun {
        spec: &job.spec,
        spot: false,
        started_at: utc(started),
        ended_at: utc(ended),
        cost: model.pricing.actual_cost(&usage, utc(started), utc(ended)),
        progress: &progress,
        checkpoints: job.spec.labels.get("checkpoints").map(String::as_str) == Some("true"),
        gpu_utilisation: None,
    };
    let recs = cost::recommend(&model.pricing, &run, &similar, &cost::RecommendConfig::default());
    if a.json {
        print_json(&recs);
        return Ok(());
    }
    let c = model.pricing.currency();
    println!("run {} cost {}", a.id, c.format(run.cost));
    if recs.is_empty() {
        println!("no savings found for this run");
    }
    for r in &recs {
        println!("  save {:>10}  {}", c.format(r.saves), r.basis);
    }
    Ok(())
}

/// When `--off-peak` defers a job: the start of the next off-peak window, or `None` when
/// the window is open now (or the pricing file has none).
pub(crate) fn off_peak_start(pricing: Option<&std::path::Path>) -> CliResult<Option<u64>> {
    let model = model(pricing)?;
    let now = Utc::now();
    let start = model.pricing.off_peak_start(now);
    Ok((start > now).then(|| start.timestamp_millis() as u64))
}
