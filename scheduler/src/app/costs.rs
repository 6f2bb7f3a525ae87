//! Costs: estimates before a job runs, comparisons of configurations, reports of what
//! was spent, forecasts of running jobs and recommendations for finished ones. The
//! arithmetic lives in the `cost` crate; this is where it meets the queue and the store.

use super::{App, AppError, AppResult, Caller, Role};
use chrono::{DateTime, Utc};
use common::store::JobStore;
use common::{JobId, JobSpec};
use cost::{CostModel, DurationEstimate, Quote, RunSample, Usage};
use serde::Serialize;

/// Runs considered per estimate.
const HISTORY: usize = 50;

/// A priced spec.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// The spec's name.
    pub name: String,
    /// Expected run time.
    pub duration_secs: u64,
    /// What the duration is based on (history, the default table).
    pub basis: String,
    /// The cost, formatted in the pricing's currency.
    pub cost: String,
    /// The cost in micro-units.
    pub cost_micros: i64,
    /// Hours at peak rates.
    pub peak_hours: f64,
    /// Hours at off-peak rates.
    pub off_peak_hours: f64,
    /// When it is priced to start.
    pub start: DateTime<Utc>,
}

impl Estimate {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "estimate for {}: ~{} and {} ({:.1} h peak, {:.1} h off-peak); basis: {}",
            self.name,
            crate::format::short_duration(self.duration_secs * 1000),
            self.cost,
            self.peak_hours,
            self.off_peak_hours,
            self.basis
        )
    }
}

/// What an enqueue will cost: the one job's estimate, or a batch's total.
#[derive(Debug, Clone, Serialize)]
pub struct CostSummary {
    /// Jobs priced.
    pub jobs: usize,
    /// Their summed cost, formatted.
    pub total: String,
    /// In micro-units.
    pub total_micros: i64,
    /// The estimate of a single job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single: Option<Estimate>,
}

impl CostSummary {
    /// One line for people.
    pub fn line(&self) -> String {
        match &self.single {
            Some(e) => e.line(),
            None => format!("estimate for {} jobs: {} in total", self.jobs, self.total),
        }
    }
}

/// Recent successful runs of `model_type` from the store (none without a store).
async fn history(store: Option<&JobStore>, model_type: &str) -> AppResult<Vec<RunSample>> {
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
    /// The process's histories, when it keeps them (see `app::cache`).
    shared: Option<&'a super::cache::Cache>,
}

impl<'a> Estimator<'a> {
    pub(crate) fn new(model: &'a CostModel, store: Option<&'a JobStore>) -> Self {
        Estimator {
            model,
            store,
            histories: Default::default(),
            shared: None,
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
    ) -> AppResult<Estimate> {
        if !self.histories.contains_key(&spec.model_type) {
            let h = match self.shared.and_then(|c| c.history(&spec.model_type)) {
                Some(h) => h,
                None => {
                    let h = history(self.store, &spec.model_type).await?;
                    if let (Some(c), Some(_)) = (self.shared, self.store) {
                        c.put_history(&spec.model_type, h.clone());
                    }
                    h
                }
            };
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
    pub(crate) async fn total(&mut self, specs: &[&JobSpec]) -> AppResult<cost::Money> {
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

/// What a job's estimate depends on: jobs alike in these cost the same (the key that
/// `summarise_cost` prices each configuration of a batch under, once).
type PricedAs<'a> = (
    &'a str,
    u32,
    u32,
    &'a common::Resources,
    Option<u64>,
    common::Priority,
);

fn priced_as(spec: &JobSpec) -> PricedAs<'_> {
    (
        &spec.model_type,
        spec.epochs,
        spec.batch_size,
        &spec.resources,
        spec.not_before,
        spec.priority,
    )
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

/// The latest time an operation takes: the end of year 9999, in ms.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// Refuses a time past [`MAX_TIME_MS`] (it would not be a date), naming it.
pub fn check_time(name: &str, ms: Option<u64>) -> AppResult<()> {
    match ms {
        Some(t) if t > MAX_TIME_MS => Err(AppError::bad_input(format!(
            "{name} {t}: not a time (ms since the epoch, at most {MAX_TIME_MS})"
        ))),
        _ => Ok(()),
    }
}

/// A report's grouping, named in the error when it is not one.
pub(crate) fn group_by(raw: &str) -> AppResult<cost::GroupBy> {
    raw.parse()
        .map_err(|e| AppError::bad_input(format!("by {raw:?}: {e}")))
}

/// Start of the period of the same length that ends at `from`, for the report's trend.
pub(crate) fn previous_from(from: u64, to: u64) -> u64 {
    from.saturating_sub(to - from)
}

/// The report over `[from, to)` of `rows`, which also hold the previous period's.
pub(crate) fn report_of(
    rows: &[common::store::AttemptCost],
    from: u64,
    to: u64,
    by: cost::GroupBy,
) -> cost::Report {
    let rows: Vec<cost::CostRow> = rows
        .iter()
        .filter_map(|c| {
            Some(cost::CostRow {
                job_id: c.job_id.parse().ok()?,
                team: c.team.clone(),
                model_type: c.model_type.clone(),
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
    cost::report(&rows, utc(from), utc(to), by)
}

pub(crate) fn utc(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// Loads the pricing file (`--pricing`/GPUQ_PRICING) or the built-in default.
pub fn load_pricing(path: Option<&std::path::Path>) -> AppResult<CostModel> {
    match path {
        None => Ok(CostModel::builtin()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| AppError::bad_input(format!("cannot read pricing file {}: {e}", p.display())))?;
            CostModel::from_toml(&text).map_err(|e| AppError::bad_input(format!("{}: {e}", p.display())))
        }
    }
}

/// Prices specs as `cost estimate` does.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EstimateRequest {
    /// The specs to price.
    #[schema(value_type = Vec<common::JobSpec>)]
    pub jobs: Vec<serde_json::Value>,
    /// Price at spot rates.
    #[serde(default)]
    pub spot: bool,
    /// Start time to price at, ms (default now).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 253402300799999_u64)]
    pub start: Option<u64>,
}

/// A spec and the variations to compare it with.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    /// The base spec.
    #[schema(value_type = common::JobSpec)]
    pub spec: serde_json::Value,
    /// Batch sizes to try.
    #[serde(default)]
    pub batch_sizes: Vec<u32>,
    /// GPU counts to try.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// Also spot, off-peak, and both.
    #[serde(default)]
    pub all_options: bool,
}

/// A period and a grouping for a cost report.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// From, ms.
    pub from: u64,
    /// To, ms (default now).
    pub to: Option<u64>,
    /// `team`, `model_type`, `priority`, ...
    pub by: String,
}

/// Parses specs given as JSON values, validating each and naming the one that is wrong.
pub(crate) fn specs_from_values(values: Vec<serde_json::Value>) -> AppResult<Vec<JobSpec>> {
    let mut out = Vec::with_capacity(values.len());
    for (n, v) in values.into_iter().enumerate() {
        let spec = JobSpec::from_json(&v.to_string()).map_err(|e| AppError::BadInput {
            code: "invalid_spec",
            message: format!("job {}: {e}", n + 1),
        })?;
        out.push(spec);
    }
    Ok(out)
}

impl App {
    /// An estimator over `store` that shares this process's cached run histories.
    pub(crate) fn estimator<'a>(&'a self, store: Option<&'a JobStore>) -> Estimator<'a> {
        let mut e = Estimator::new(self.pricing(), store);
        e.shared = Some(&self.cache);
        e
    }

    /// Prices `specs` starting at `start` (default now).
    pub async fn estimate(
        &self,
        caller: &Caller,
        specs: &[JobSpec],
        spot: bool,
        start: Option<u64>,
    ) -> AppResult<Vec<Estimate>> {
        caller.require(Role::Viewer, "estimating")?;
        check_time("start", start)?;
        let start = start.map(utc).unwrap_or_else(Utc::now);
        let store = self.store_if_open().await;
        let mut estimator = self.estimator(store);
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            out.push(estimator.estimate(spec, spot, start).await?);
        }
        Ok(out)
    }

    /// What enqueueing `specs` now will cost. Never fails an enqueue: without a readable
    /// store the default table is used, and an error is the caller's note.
    pub(crate) async fn summarise_cost(&self, specs: &[JobSpec]) -> AppResult<Option<CostSummary>> {
        let store = self.store_if_open().await;
        let mut estimator = self.estimator(store);
        let now = Utc::now();
        let mut total = cost::Money::ZERO;
        let mut last = None;
        // A batch is mostly a few configurations many times over (a sweep): price each
        // configuration once, and, within a minute, once for every enqueue.
        let mut priced: std::collections::HashMap<String, i64> = Default::default();
        let minute = now.timestamp() as u64 / 60;
        // A job with the configuration of the one before (a sweep's usual run) costs
        // what it did, without building the key.
        let mut previous: Option<(PricedAs<'_>, i64)> = None;
        for spec in specs {
            let config = priced_as(spec);
            if let Some((p, micros)) = &previous {
                if *p == config {
                    total += cost::Money::from_micros(*micros);
                    continue;
                }
            }
            let key = serde_json::to_string(&config).unwrap_or_default();
            let micros = match priced.get(&key) {
                Some(m) => *m,
                None => {
                    let shared_key = (key.clone(), minute);
                    let e = match self.cache.estimate(&shared_key) {
                        Some(e) => Estimate {
                            name: spec.name.clone(),
                            ..e
                        },
                        None => {
                            let e = estimator.estimate(spec, false, now).await?;
                            self.cache.put_estimate(shared_key, e.clone());
                            e
                        }
                    };
                    priced.insert(key, e.cost_micros);
                    let m = e.cost_micros;
                    last = Some(e);
                    m
                }
            };
            total += cost::Money::from_micros(micros);
            previous = Some((config, micros));
        }
        Ok(last.map(|e| CostSummary {
            jobs: specs.len(),
            total: self.pricing().pricing.currency().format(total),
            total_micros: total.micros(),
            single: (specs.len() == 1).then_some(e),
        }))
    }

    /// The scenarios of `cost compare`: the spec as given, then each variation.
    pub async fn compare(
        &self,
        caller: &Caller,
        spec: &JobSpec,
        batch_sizes: &[u32],
        gpus: &[u32],
        all_options: bool,
    ) -> AppResult<Vec<cost::ComparisonRow>> {
        caller.require(Role::Viewer, "comparing costs")?;
        let history = history(self.store_if_open().await, &spec.model_type).await?;
        let base = cost::Scenario::baseline(spec);
        let mut scenarios = vec![base.clone()];
        for &b in batch_sizes {
            scenarios.push(cost::Scenario {
                label: format!("batch size {b}"),
                batch_size: b,
                ..base.clone()
            });
        }
        for &g in gpus {
            scenarios.push(cost::Scenario {
                label: format!("{g} GPU(s)"),
                gpus: g,
                ..base.clone()
            });
        }
        if all_options {
            for (label, spot, off_peak) in [
                ("spot", true, false),
                ("off-peak start", false, true),
                ("spot, off-peak start", true, true),
            ] {
                scenarios.push(cost::Scenario {
                    label: label.into(),
                    spot,
                    off_peak,
                    ..base.clone()
                });
            }
        }
        Ok(cost::compare(
            self.pricing(),
            spec,
            &history,
            &scenarios,
            Utc::now(),
        ))
    }

    /// What was spent, grouped, with the trend against the previous period of the same
    /// length. A team caller's report covers its own team only.
    pub async fn cost_report(&self, caller: &Caller, r: &ReportRequest) -> AppResult<cost::Report> {
        caller.require(Role::Viewer, "reading cost reports")?;
        let by = group_by(&r.by)?;
        check_time("from", Some(r.from))?;
        check_time("to", r.to)?;
        let to = r.to.unwrap_or_else(common::now_ms);
        if to <= r.from {
            return Err(AppError::bad_input("to must be after from"));
        }
        let rows = self
            .visible_attempts(caller, previous_from(r.from, to), to)
            .await?;
        Ok(report_of(&rows, r.from, to, by))
    }

    /// The recorded attempt costs that ended in `[from, to)`, of the caller's teams.
    pub(crate) async fn visible_attempts(
        &self,
        caller: &Caller,
        from: u64,
        to: u64,
    ) -> AppResult<Vec<common::store::AttemptCost>> {
        let mut rows = self.store().await?.attempt_costs(from, to).await?;
        rows.retain(|c| caller.sees_team(&c.team));
        Ok(rows)
    }

    /// Recommendations for a finished run, with what it cost. The run's progress comes
    /// from its output in Redis (kept with the job until retention removes it); similar
    /// runs are the store's successful runs of the same model type, epochs and GPUs. A job
    /// is taken to checkpoint when its spec carries the label `checkpoints=true`; GPU
    /// utilisation is not measured yet, so the fewer-GPUs rule stays silent.
    pub async fn recommend(
        &self,
        caller: &Caller,
        id: &JobId,
    ) -> AppResult<(cost::Money, Vec<cost::Recommendation>)> {
        caller.require(Role::Viewer, "reading recommendations")?;
        let store = self.store_if_open().await;
        let job = match self.queue().get_unexplained(id).await? {
            Some(j) => Some(j),
            None => match store {
                Some(s) => s.get(id).await?,
                None => None,
            },
        };
        let job = caller.visible(job, id.as_str())?;
        let (Some(started), Some(ended)) = (job.started_at, job.finished_at) else {
            return Err(AppError::Conflict(format!(
                "job {id} is {}; only finished runs get recommendations",
                job.state
            )));
        };
        let progress = epoch_metrics(&self.queue().logs(id, 1000).await?);
        let mut similar = Vec::new();
        if let Some(s) = store {
            for (json, run_ms, _) in s.successful_runs(&job.spec.model_type, HISTORY).await? {
                let Ok(past) = serde_json::from_str::<JobSpec>(&json) else {
                    continue;
                };
                let same = past.epochs == job.spec.epochs && past.resources.gpus == job.spec.resources.gpus;
                let Some(other) = past.id.clone().filter(|o| *o != job.id && same) else {
                    continue;
                };
                let final_accuracy = epoch_metrics(&self.queue().logs(&other, 1000).await?)
                    .last()
                    .and_then(|m| m.accuracy);
                similar.push(cost::SimilarRun {
                    batch_size: past.batch_size,
                    run_secs: run_ms / 1000,
                    final_accuracy,
                });
            }
        }
        let pricing = &self.pricing().pricing;
        let usage = Usage::of(&job.spec, false);
        let run = cost::FinishedRun {
            spec: &job.spec,
            spot: false,
            started_at: utc(started),
            ended_at: utc(ended),
            cost: pricing.actual_cost(&usage, utc(started), utc(ended)),
            progress: &progress,
            checkpoints: job.spec.labels.get("checkpoints").map(String::as_str) == Some("true"),
            gpu_utilisation: None,
        };
        let recs = cost::recommend(pricing, &run, &similar, &cost::RecommendConfig::default());
        Ok((run.cost, recs))
    }

    /// When `--off-peak` defers a job: the start of the next off-peak window, or `None`
    /// when the window is open now (or the pricing has none).
    pub fn off_peak_start(&self) -> Option<u64> {
        let now = Utc::now();
        let start = self.pricing().pricing.off_peak_start(now);
        (start > now).then(|| start.timestamp_millis() as u64)
    }
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
