//! Pricing alternative configurations of one job side by side.
//!
//! A batch size or GPU count changes the run time, and the run time and start change the
//! price; so each scenario is estimated and then priced from its own start. This answers
//! "what if I used 4 GPUs, on spot, starting tonight?" before anything is submitted.

use crate::config::CostModel;
use crate::estimate::{DurationEstimate, RunSample};
use crate::pricing::{Quote, Usage};
use chrono::{DateTime, Utc};
use common::JobSpec;
use serde::Serialize;

/// One configuration to price: the job's spec with these fields replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// A name for the row, e.g. `"4×a100 spot"`.
    pub label: String,
    /// Batch size.
    pub batch_size: u32,
    /// GPU count.
    pub gpus: u32,
    /// On spot capacity.
    pub spot: bool,
    /// Delayed to the off-peak window ([`Pricing::off_peak_start`](crate::Pricing::off_peak_start)).
    pub off_peak: bool,
}

impl Scenario {
    /// The spec as submitted: its batch size and GPUs, on demand, starting now.
    pub fn baseline(spec: &JobSpec) -> Scenario {
        Scenario {
            label: "as submitted".into(),
            batch_size: spec.batch_size,
            gpus: spec.resources.gpus,
            spot: false,
            off_peak: false,
        }
    }
}

/// A priced scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    /// The scenario priced.
    pub scenario: Scenario,
    /// When it would start.
    pub start: DateTime<Utc>,
    /// How long it would run, and on what basis.
    pub estimate: DurationEstimate,
    /// What it would cost.
    pub quote: Quote,
}

/// Prices each scenario of `spec` (its model type, epochs, GPU type, CPU, memory and
/// priority stay), estimating run times from `history`; in the order given.
pub fn compare(
    model: &CostModel,
    spec: &JobSpec,
    history: &[RunSample],
    scenarios: &[Scenario],
    now: DateTime<Utc>,
) -> Vec<ComparisonRow> {
    scenarios
        .iter()
        .map(|scenario| {
            let mut variant = spec.clone();
            variant.batch_size = scenario.batch_size;
            variant.resources.gpus = scenario.gpus;
            let estimate = model.estimates.estimate(&variant, history);
            let start = if scenario.off_peak {
                model.pricing.off_peak_start(now)
            } else {
                now
            };
            let usage = Usage::of(&variant, scenario.spot);
            let quote = model.pricing.quote_for(&usage, start, estimate.duration());
            ComparisonRow {
                scenario: scenario.clone(),
                start,
                estimate,
                quote,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::tests::{at, SIMPLE};
    use crate::Money;

    #[test]
    fn prices_each_scenario_from_its_own_estimate_and_start() {
        let model = CostModel::from_toml(SIMPLE).unwrap();
        let mut spec = JobSpec::new("bert-ft", "search", vec!["x".into()]);
        spec.model_type = "bert".into();
        spec.epochs = 10;
        spec.resources.gpus = 1;
        spec.resources.cpu = 1.0;
        // 360 s per epoch at batch 32 on 1 GPU: 1 h for 10 epochs.
        let history = [RunSample {
            model_type: "bert".into(),
            epochs: 10,
            batch_size: 32,
            gpus: 1,
            run_secs: 3600,
            finished_at: at(2024, 4, 1, 0, 0),
        }];
        let base = Scenario::baseline(&spec);
        let scenarios = [
            base.clone(),
            Scenario {
                label: "2 GPUs".into(),
                gpus: 2,
                ..base.clone()
            },
            Scenario {
                label: "batch 128".into(),
                batch_size: 128,
                ..base.clone()
            },
            Scenario {
                label: "tonight".into(),
                off_peak: true,
                ..base.clone()
            },
            Scenario {
                label: "spot".into(),
                spot: true,
                ..base.clone()
            },
        ];
        let now = at(2024, 5, 1, 12, 0);
        let rows = compare(&model, &spec, &history, &scenarios, now);
        let got: Vec<(u64, Money)> = rows.iter().map(|r| (r.estimate.secs, r.quote.total)).collect();
        let usd = |s: &str| Money::parse(s).unwrap();
        assert_eq!(
            got,
            [
                (3600, usd("2")),        // 1 GPU-hour at peak
                (1800, usd("2")),        // linear GPU scaling in the test file: same GPU-hours
                (1800, usd("1")),        // (32/128)^0.5 = half the time
                (3600, usd("1")),        // from 22:00, half price
                (3600, usd("0.631579")), // 2 × 0.3 / 0.95
            ]
        );
        assert_eq!(rows[3].start, at(2024, 5, 1, 22, 0));
        assert_eq!(rows[0].start, now);
    }
}
