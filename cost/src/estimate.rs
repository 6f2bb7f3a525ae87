//! How long a job will run, from the history of its model type or from a default table.
//!
//! A price is only as good as the duration it integrates over. With history, the estimate
//! is the median seconds per epoch of the most recent successful runs of the same model
//! type: the median, because one run that waited on a slow disk or a noisy neighbour
//! should not move the estimate. Each past run is first scaled to the job's batch size
//! and GPU count:
//!
//! ```text
//! secs_per_epoch(batch, gpus) = secs_per_epoch(b₀, g₀) × (b₀ / batch)^batch_exponent
//!                                                      × (g₀ / gpus)^gpu_exponent
//! ```
//!
//! A job without GPUs counts as one GPU. Durations are not money, so this module uses
//! `f64`; the result is rounded to whole seconds before anything is priced.

use chrono::{DateTime, Utc};
use common::JobSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How estimates are made; read from the `[estimate]` section of the pricing file.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateConfig {
    /// The median is taken over at most this many most recent runs.
    pub history_runs: usize,
    /// The batch size the default table is written for.
    pub reference_batch_size: u32,
    /// Time per epoch ∝ `batch_size^-batch_exponent`.
    pub batch_exponent: f64,
    /// Time per epoch ∝ `gpus^-gpu_exponent`.
    pub gpu_exponent: f64,
    /// Seconds per epoch on one GPU at the reference batch size for model types that
    /// match no keyword.
    pub default_secs_per_epoch: f64,
    /// Seconds per epoch on one GPU at the reference batch size, by lower-case keyword
    /// found in the model type; the longest matching keyword wins.
    pub secs_per_epoch: BTreeMap<String, f64>,
}

/// One past successful run, as the caller reads it from the job store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSample {
    /// The job's model type; only runs of the same type inform an estimate.
    pub model_type: String,
    /// Epochs the run trained.
    pub epochs: u32,
    /// Its batch size.
    pub batch_size: u32,
    /// Its GPU count.
    pub gpus: u32,
    /// Wall-clock seconds of the successful attempt.
    pub run_secs: u64,
    /// When it finished; the most recent runs are used.
    pub finished_at: DateTime<Utc>,
}

/// What an estimate rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Basis {
    /// The median of recent runs of the same model type.
    History {
        /// How many runs the median is over.
        runs: usize,
        /// The median, scaled to the job's batch size and GPU count.
        median_secs_per_epoch: f64,
    },
    /// The default table: no successful run of this model type is known.
    DefaultTable {
        /// The table entry used (`default` when no keyword matched).
        keyword: String,
        /// The entry, scaled to the job's batch size and GPU count.
        secs_per_epoch: f64,
    },
}

impl Basis {
    /// The seconds per epoch the estimate multiplies by the epochs.
    pub fn secs_per_epoch(&self) -> f64 {
        match self {
            Basis::History {
                median_secs_per_epoch,
                ..
            } => *median_secs_per_epoch,
            Basis::DefaultTable { secs_per_epoch, .. } => *secs_per_epoch,
        }
    }
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Basis::History {
                runs,
                median_secs_per_epoch,
            } => write!(
                f,
                "median of the {runs} most recent run(s) of this model type: {median_secs_per_epoch:.1} s per epoch"
            ),
            Basis::DefaultTable {
                keyword,
                secs_per_epoch,
            } => write!(
                f,
                "no history; default table entry {keyword:?}: {secs_per_epoch:.1} s per epoch"
            ),
        }
    }
}

/// An estimated run time and what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationEstimate {
    /// Estimated wall-clock seconds, at least 1.
    pub secs: u64,
    /// Where the seconds per epoch came from.
    pub basis: Basis,
}

impl DurationEstimate {
    /// The estimate as a `Duration`.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.secs)
    }
}

impl EstimateConfig {
    /// Estimates how long `spec` will run (its model type, epochs, batch size and GPUs),
    /// from the successful runs in `history` (any order; other model types are ignored).
    pub fn estimate(&self, spec: &JobSpec, history: &[RunSample]) -> DurationEstimate {
        let (batch, gpus) = (spec.batch_size, spec.resources.gpus);
        let mut runs: Vec<&RunSample> = history
            .iter()
            .filter(|r| r.model_type == spec.model_type && r.epochs > 0 && r.batch_size > 0)
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
        runs.truncate(self.history_runs.max(1));
        let basis = if runs.is_empty() {
            let (keyword, secs) = self.table_entry(&spec.model_type);
            Basis::DefaultTable {
                keyword,
                secs_per_epoch: secs * self.scale(self.reference_batch_size, 1, batch, gpus),
            }
        } else {
            let per_epoch: Vec<f64> = runs
                .iter()
                .map(|r| r.run_secs as f64 / r.epochs as f64 * self.scale(r.batch_size, r.gpus, batch, gpus))
                .collect();
            Basis::History {
                runs: runs.len(),
                median_secs_per_epoch: median(per_epoch),
            }
        };
        let secs = (basis.secs_per_epoch() * spec.epochs as f64).round().max(1.0) as u64;
        DurationEstimate { secs, basis }
    }

    /// The factor turning seconds per epoch at (`from_batch`, `from_gpus`) into seconds
    /// per epoch at (`to_batch`, `to_gpus`).
    pub fn scale(&self, from_batch: u32, from_gpus: u32, to_batch: u32, to_gpus: u32) -> f64 {
        let ratio = |from: u32, to: u32| from.max(1) as f64 / to.max(1) as f64;
        ratio(from_batch, to_batch).powf(self.batch_exponent)
            * ratio(from_gpus, to_gpus).powf(self.gpu_exponent)
    }

    /// The longest keyword contained in `model_type` (case-insensitive), or `default`.
    fn table_entry(&self, model_type: &str) -> (String, f64) {
        let model_type = model_type.to_ascii_lowercase();
        self.secs_per_epoch
            .iter()
            .filter(|(keyword, _)| model_type.contains(keyword.as_str()))
            .max_by_key(|(keyword, _)| keyword.len())
            .map(|(k, s)| (k.clone(), *s))
            .unwrap_or_else(|| ("default".into(), self.default_secs_per_epoch))
    }
}

/// The middle value; the mean of the two middle values for an even count.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::tests::{at, SIMPLE};
    use crate::CostModel;

    fn config() -> EstimateConfig {
        CostModel::from_toml(SIMPLE).unwrap().estimates
    }

    fn spec(model: &str, epochs: u32, batch: u32, gpus: u32) -> JobSpec {
        let mut s = JobSpec::new("j", "t", vec!["x".into()]);
        s.model_type = model.into();
        s.epochs = epochs;
        s.batch_size = batch;
        s.resources.gpus = gpus;
        s
    }

    fn run(model: &str, epochs: u32, batch: u32, run_secs: u64, day: u32) -> RunSample {
        RunSample {
            model_type: model.into(),
            epochs,
            batch_size: batch,
            gpus: 1,
            run_secs,
            finished_at: at(2024, 5, day, 12, 0),
        }
    }

    #[test]
    fn median_of_the_most_recent_runs() {
        // Seconds per epoch: 100, 120, 110, 500, 90 (days 10..14); day 1 is too old for
        // history_runs = 5 and would drag the median down.
        let history = vec![
            run("bert", 10, 32, 1000, 10),
            run("bert", 5, 32, 600, 11),
            run("bert", 2, 32, 220, 12),
            run("bert", 1, 32, 500, 13),
            run("bert", 10, 32, 900, 14),
            run("bert", 10, 32, 10, 1),
            run("gpt", 10, 32, 99_999, 15),
        ];
        let e = config().estimate(&spec("bert", 20, 32, 1), &history);
        assert_eq!(
            e.basis,
            Basis::History {
                runs: 5,
                median_secs_per_epoch: 110.0
            }
        );
        assert_eq!(e.secs, 2200);
        // An even count averages the middle two of 100, 110, 120, 500: 115.
        let e = config().estimate(&spec("bert", 2, 32, 1), &history[..4]);
        assert_eq!(e.basis.secs_per_epoch(), 115.0);
        assert_eq!(e.secs, 230);
    }

    #[test]
    fn scales_by_batch_size_and_gpus() {
        // 100 s/epoch at batch 32 on 1 GPU; at batch 128: × (32/128)^0.5 = 50; on 2 GPUs
        // (gpu_exponent 1.0 in the test file): 25.
        let history = vec![run("bert", 10, 32, 1000, 10)];
        let e = config().estimate(&spec("bert", 20, 128, 1), &history);
        assert_eq!(e.secs, 1000);
        let e = config().estimate(&spec("bert", 20, 128, 2), &history);
        assert_eq!(e.secs, 500);
        // CPU-only jobs count as one GPU.
        let e = config().estimate(&spec("bert", 20, 32, 0), &history);
        assert_eq!(e.secs, 2000);
    }

    #[test]
    fn default_table_by_longest_keyword() {
        let c = config();
        let e = c.estimate(&spec("ResNet50-ft", 2, 32, 1), &[]);
        assert_eq!(
            e.basis,
            Basis::DefaultTable {
                keyword: "resnet50".into(),
                secs_per_epoch: 1200.0
            }
        );
        assert_eq!(e.secs, 2400);
        let e = c.estimate(&spec("resnet18", 1, 32, 1), &[]);
        assert_eq!(e.basis.secs_per_epoch(), 900.0);
        // Unknown model, batch 8 on 4 GPUs: 600 × (32/8)^0.5 × (1/4)^1 = 300.
        let e = c.estimate(&spec("mystery", 3, 8, 4), &[]);
        assert_eq!(e.secs, 900);
        assert!(e.basis.to_string().contains("\"default\""), "{}", e.basis);
    }

    #[test]
    fn basis_serializes_with_its_kind() {
        let b = Basis::History {
            runs: 3,
            median_secs_per_epoch: 12.5,
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"kind":"history","runs":3,"median_secs_per_epoch":12.5}"#
        );
    }
}
