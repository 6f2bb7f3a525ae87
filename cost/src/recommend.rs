//! Concrete savings for a finished run, each priced and explained with its numbers.
//!
//! A rule only fires when the run's own data supports it, and its saving is the price of
//! the run as it happened minus the price of the alternative, both from the same pricing
//! (`[started_at, ended_at)` with the run's resources, priority and capacity), so savings
//! compare like with like. Rules:
//!
//! - **off-peak**: the run spent time at peak and was not urgent; the alternative starts
//!   at the next off-peak start and lasts as long.
//! - **spot**: the run was on demand and checkpoints, so an interruption only costs a
//!   re-run (priced in by [`Spot::expected_cost`](crate::Spot::expected_cost)).
//! - **larger batch**: a similar run with a larger batch size reached the same accuracy
//!   (within `accuracy_tolerance`, absolute, on the 0..1 scale) in less time; the
//!   alternative lasts as long as the fastest such run.
//! - **fewer GPUs**: utilisation was below `low_utilisation`; the work fits on
//!   `ceil(gpus × utilisation)` GPUs, assumed to take as long (the GPUs were not the
//!   bottleneck).
//! - **early stopping**: loss plateaued: from some epoch on, no later epoch improved on it
//!   by more than `plateau_min_improvement` (relative), over at least `plateau_epochs`
//!   epochs; the saving is the cost of the epochs after it.

use crate::money::Money;
use crate::pricing::{Pricing, Quote, Usage};
use chrono::{DateTime, TimeDelta, Utc};
use common::{JobSpec, Priority};
use serde::Serialize;

/// One progress line of the run, as the worker parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochMetrics {
    /// Epoch number (1-based) the line reports.
    pub epoch: u32,
    /// Training or validation loss, if reported.
    pub loss: Option<f64>,
    /// Accuracy on a 0..1 scale, if reported.
    pub accuracy: Option<f64>,
}

/// A past run of the same model type, epochs and GPUs, for the batch-size rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimilarRun {
    /// Its batch size.
    pub batch_size: u32,
    /// Its wall-clock seconds.
    pub run_secs: u64,
    /// Its final accuracy on a 0..1 scale, if it reported one.
    pub final_accuracy: Option<f64>,
}

/// A finished run to look for savings in.
#[derive(Debug, Clone, Copy)]
pub struct FinishedRun<'a> {
    /// Its spec (resources, priority, batch size).
    pub spec: &'a JobSpec,
    /// Whether it ran on spot capacity.
    pub spot: bool,
    /// Start of its (last) attempt.
    pub started_at: DateTime<Utc>,
    /// End of its (last) attempt.
    pub ended_at: DateTime<Utc>,
    /// Its actual cost, all attempts; quoted in the explanations.
    pub cost: Money,
    /// Its progress lines, in any order.
    pub progress: &'a [EpochMetrics],
    /// Whether it resumes from checkpoints (a condition for spot).
    pub checkpoints: bool,
    /// Mean GPU utilisation on a 0..1 scale, if measured.
    pub gpu_utilisation: Option<f64>,
}

/// Thresholds of the rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecommendConfig {
    /// How much lower (absolute, 0..1 scale) a larger batch's accuracy may be and still
    /// count as similar. Default 0.005: half a percentage point, about run-to-run noise.
    pub accuracy_tolerance: f64,
    /// Utilisation below which fewer GPUs are suggested. Default 0.5.
    pub low_utilisation: f64,
    /// Epochs without real improvement that make a plateau. Default 3, like the usual
    /// early-stopping patience.
    pub plateau_epochs: u32,
    /// Relative loss improvement below which an epoch does not count. Default 0.01 (1%).
    pub plateau_min_improvement: f64,
}

impl Default for RecommendConfig {
    fn default() -> Self {
        RecommendConfig {
            accuracy_tolerance: 0.005,
            low_utilisation: 0.5,
            plateau_epochs: 3,
            plateau_min_improvement: 0.01,
        }
    }
}

/// What to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecommendationKind {
    /// Start in the off-peak window.
    OffPeak {
        /// When the window would have started.
        start: DateTime<Utc>,
    },
    /// Run on spot capacity.
    Spot,
    /// Use a larger batch size.
    LargerBatch {
        /// The batch size that did as well, faster.
        batch_size: u32,
    },
    /// Request fewer GPUs.
    FewerGpus {
        /// GPUs that would have sufficed.
        gpus: u32,
    },
    /// Stop training when loss plateaus.
    EarlyStopping {
        /// The epoch after which training could have stopped.
        after_epoch: u32,
    },
}

/// One recommendation: what to change, what it would have saved, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// What to change.
    pub kind: RecommendationKind,
    /// What it would have saved on this run (always positive).
    pub saves: Money,
    /// One sentence with the numbers the recommendation rests on.
    pub basis: String,
}

/// The recommendations that apply to `run`, largest saving first.
pub fn recommend(
    pricing: &Pricing,
    run: &FinishedRun<'_>,
    similar: &[SimilarRun],
    config: &RecommendConfig,
) -> Vec<Recommendation> {
    let usage = Usage::of(run.spec, run.spot);
    let actual = pricing.quote(&usage, run.started_at, run.ended_at);
    let ctx = Ctx {
        pricing,
        run,
        usage,
        actual,
    };
    let mut out: Vec<Recommendation> = [
        ctx.off_peak(),
        ctx.spot(),
        ctx.larger_batch(similar, config),
        ctx.fewer_gpus(config),
        ctx.early_stopping(config),
    ]
    .into_iter()
    .flatten()
    .filter(|r| r.saves.is_positive())
    .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.saves));
    out
}

/// What every rule needs: the run, its usage and its price as it happened.
struct Ctx<'a> {
    pricing: &'a Pricing,
    run: &'a FinishedRun<'a>,
    usage: Usage,
    actual: Quote,
}

impl Ctx<'_> {
    fn money(&self, m: Money) -> String {
        self.pricing.currency().format(m)
    }

    fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.pricing.time_zone())
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    fn duration(&self) -> TimeDelta {
        self.run.ended_at - self.run.started_at
    }

    fn off_peak(&self) -> Option<Recommendation> {
        let window = self.pricing.off_peak()?;
        if self.run.spec.priority == Priority::Urgent || self.actual.peak_ms == 0 {
            return None;
        }
        let start = self.pricing.next_off_peak_start(self.run.started_at)?;
        let alt = self.pricing.quote(&self.usage, start, start + self.duration());
        Some(Recommendation {
            kind: RecommendationKind::OffPeak { start },
            saves: self.actual.total - alt.total,
            basis: format!(
                "It ran {} from {}, {} of it at peak rates; started at {} (off-peak {} is {} off) \
                 the same run would have cost {} instead of {}.",
                human(self.duration().num_milliseconds()),
                self.local(self.run.started_at),
                human(self.actual.peak_ms as i64),
                self.local(start),
                window,
                window.discount(),
                self.money(alt.total),
                self.money(self.actual.total),
            ),
        })
    }

    fn spot(&self) -> Option<Recommendation> {
        if self.run.spot || !self.run.checkpoints {
            return None;
        }
        let spot = self.pricing.spot();
        let usage = Usage {
            spot: true,
            ..self.usage.clone()
        };
        let alt = self.pricing.quote(&usage, self.run.started_at, self.run.ended_at);
        Some(Recommendation {
            kind: RecommendationKind::Spot,
            saves: self.actual.total - alt.total,
            basis: format!(
                "The job checkpoints, so a spot interruption only costs a re-run: at {} off with a {} \
                 interruption rate (each interrupted attempt counted as run again in full) this run \
                 would have cost {} instead of {}.",
                spot.discount,
                spot.interruption_rate,
                self.money(alt.total),
                self.money(self.actual.total),
            ),
        })
    }

    fn larger_batch(&self, similar: &[SimilarRun], config: &RecommendConfig) -> Option<Recommendation> {
        let accuracy = final_accuracy(self.run.progress)?;
        let secs = self.duration().num_seconds().max(0) as u64;
        let best = similar
            .iter()
            .filter(|s| s.batch_size > self.run.spec.batch_size && s.run_secs < secs)
            .filter(|s| {
                s.final_accuracy
                    .is_some_and(|a| a >= accuracy - config.accuracy_tolerance)
            })
            .min_by_key(|s| s.run_secs)?;
        let end = self.run.started_at + TimeDelta::seconds(best.run_secs as i64);
        let alt = self.pricing.quote(&self.usage, self.run.started_at, end);
        Some(Recommendation {
            kind: RecommendationKind::LargerBatch {
                batch_size: best.batch_size,
            },
            saves: self.actual.total - alt.total,
            basis: format!(
                "A similar run with batch size {} reached {:.1}% accuracy in {}, against {:.1}% in {} \
                 with batch size {} here (tolerance {:.1} points); that long, this run would have cost \
                 {} instead of {}.",
                best.batch_size,
                best.final_accuracy.unwrap_or_default() * 100.0,
                human(best.run_secs as i64 * 1000),
                accuracy * 100.0,
                human(self.duration().num_milliseconds()),
                self.run.spec.batch_size,
                config.accuracy_tolerance * 100.0,
                self.money(alt.total),
                self.money(self.actual.total),
            ),
        })
    }

    fn fewer_gpus(&self, config: &RecommendConfig) -> Option<Recommendation> {
        let util = self.run.gpu_utilisation?;
        let gpus = self.usage.resources.gpus;
        if !(0.0..config.low_utilisation).contains(&util) || gpus < 2 {
            return None;
        }
        // A hair below the product so 0.3 × 10 (3.0000000000000004) needs 3 GPUs, not 4.
        let needed = ((gpus as f64 * util - 1e-9).ceil() as u32).max(1);
        if needed >= gpus {
            return None;
        }
        let mut usage = self.usage.clone();
        usage.resources.gpus = needed;
        let alt = self.pricing.quote(&usage, self.run.started_at, self.run.ended_at);
        Some(Recommendation {
            kind: RecommendationKind::FewerGpus { gpus: needed },
            saves: self.actual.total - alt.total,
            basis: format!(
                "GPU utilisation averaged {:.0}% on {gpus} GPUs, about {:.1} GPUs' worth of work; on \
                 {needed} GPU(s) for the same {} this run would have cost {} instead of {}.",
                util * 100.0,
                gpus as f64 * util,
                human(self.duration().num_milliseconds()),
                self.money(alt.total),
                self.money(self.actual.total),
            ),
        })
    }

    fn early_stopping(&self, config: &RecommendConfig) -> Option<Recommendation> {
        let losses = losses_by_epoch(self.run.progress);
        let plateau = plateau_start(&losses, config)?;
        let (first, last) = (losses.first()?.0, losses.last()?.0);
        let (stop_epoch, stop_loss) = losses[plateau];
        let best_after = losses[plateau + 1..]
            .iter()
            .map(|l| l.1)
            .fold(f64::INFINITY, f64::min);
        // Epochs first..=last ran in [started_at, ended_at) at an even pace.
        let ran = (last - first + 1) as i64;
        let kept = (stop_epoch - first + 1) as i64;
        let stop_at =
            self.run.started_at + TimeDelta::milliseconds(self.duration().num_milliseconds() * kept / ran);
        let tail = self.pricing.quote(&self.usage, stop_at, self.run.ended_at);
        let wasted = last - stop_epoch;
        Some(Recommendation {
            kind: RecommendationKind::EarlyStopping {
                after_epoch: stop_epoch,
            },
            saves: tail.total,
            basis: format!(
                "Loss was {stop_loss:.4} after epoch {stop_epoch} and the {wasted} epochs after it improved it by \
                 less than {:.1}% (best {best_after:.4}); stopping after epoch {stop_epoch} would have saved \
                 {} of {} run time, which cost {}.",
                config.plateau_min_improvement * 100.0,
                human((self.run.ended_at - stop_at).num_milliseconds()),
                human(self.duration().num_milliseconds()),
                self.money(tail.total),
            ),
        })
    }
}

/// The accuracy of the latest epoch that reported one.
fn final_accuracy(progress: &[EpochMetrics]) -> Option<f64> {
    progress
        .iter()
        .filter(|m| m.accuracy.is_some_and(f64::is_finite))
        .max_by_key(|m| m.epoch)
        .and_then(|m| m.accuracy)
}

/// `(epoch, loss)` sorted by epoch, one per epoch (the last line wins, as after a re-run).
fn losses_by_epoch(progress: &[EpochMetrics]) -> Vec<(u32, f64)> {
    let mut by_epoch = std::collections::BTreeMap::new();
    for m in progress {
        if let Some(loss) = m.loss.filter(|l| l.is_finite()) {
            by_epoch.insert(m.epoch, loss);
        }
    }
    by_epoch.into_iter().collect()
}

/// The index of the earliest epoch that no later epoch improves on by more than the
/// threshold, with at least `plateau_epochs` epochs after it.
fn plateau_start(losses: &[(u32, f64)], config: &RecommendConfig) -> Option<usize> {
    let last = losses.last()?.0;
    (0..losses.len()).find(|&i| {
        let (epoch, loss) = losses[i];
        let best_after = losses[i + 1..].iter().map(|l| l.1).fold(f64::INFINITY, f64::min);
        last - epoch >= config.plateau_epochs
            && loss - best_after <= config.plateau_min_improvement * loss.abs()
    })
}

/// `2h05m`, `12m30s` or `45s`.
fn human(ms: i64) -> String {
    let secs = (ms.max(0) + 500) / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::tests::{at, simple};

    fn spec(gpus: u32, priority: Priority) -> JobSpec {
        let mut s = JobSpec::new("j", "t", vec!["x".into()]);
        s.resources.gpus = gpus;
        s.priority = priority;
        s.batch_size = 32;
        s.epochs = 10;
        s
    }

    fn run<'a>(
        spec: &'a JobSpec,
        from_hour: u32,
        hours: i64,
        progress: &'a [EpochMetrics],
    ) -> FinishedRun<'a> {
        let started_at = at(2024, 5, 1, from_hour, 0);
        FinishedRun {
            spec,
            spot: false,
            started_at,
            ended_at: started_at + TimeDelta::hours(hours),
            cost: Money::ZERO,
            progress,
            checkpoints: false,
            gpu_utilisation: None,
        }
    }

    fn kinds(recs: &[Recommendation]) -> Vec<&RecommendationKind> {
        recs.iter().map(|r| &r.kind).collect()
    }

    fn usd(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn off_peak_when_it_ran_at_peak() {
        let p = simple();
        let s = spec(1, Priority::Normal);
        // 12:00-16:00 at $2 = $8; from 22:00 at $1 = $4.
        let recs = recommend(&p, &run(&s, 12, 4, &[]), &[], &RecommendConfig::default());
        assert_eq!(
            kinds(&recs),
            [&RecommendationKind::OffPeak {
                start: at(2024, 5, 1, 22, 0)
            }]
        );
        assert_eq!(recs[0].saves, usd("4"));
        assert_eq!(
            recs[0].basis,
            "It ran 4h00m from 2024-05-01 12:00 UTC, 4h00m of it at peak rates; started at 2024-05-01 22:00 UTC \
             (off-peak 22:00-06:00 is 50% off) the same run would have cost $4.00 instead of $8.00."
        );
        // Not when it already ran off-peak, nor for urgent jobs.
        assert!(recommend(&p, &run(&s, 22, 4, &[]), &[], &RecommendConfig::default()).is_empty());
        let urgent = spec(1, Priority::Urgent);
        assert!(recommend(&p, &run(&urgent, 12, 4, &[]), &[], &RecommendConfig::default()).is_empty());
    }

    #[test]
    fn spot_only_for_checkpointing_jobs() {
        let p = simple();
        let s = spec(1, Priority::Urgent);
        let mut r = run(&s, 12, 4, &[]);
        assert!(recommend(&p, &r, &[], &RecommendConfig::default()).is_empty());
        r.checkpoints = true;
        let recs = recommend(&p, &r, &[], &RecommendConfig::default());
        assert_eq!(kinds(&recs), [&RecommendationKind::Spot]);
        // Urgent: 4 h × $2 × 1.5 = $12 on demand; spot 12 × 0.3 / 0.95 = 3.789474.
        assert_eq!(recs[0].saves, usd("12") - usd("3.789474"));
        assert!(
            recs[0].basis.contains("at 70% off with a 5% interruption rate"),
            "{}",
            recs[0].basis
        );
        assert!(
            recs[0].basis.contains("$3.79 instead of $12.00"),
            "{}",
            recs[0].basis
        );
        r.spot = true;
        assert!(recommend(&p, &r, &[], &RecommendConfig::default()).is_empty());
    }

    #[test]
    fn larger_batch_when_history_reached_the_accuracy_faster() {
        let p = simple();
        let s = spec(1, Priority::Urgent);
        let progress = [EpochMetrics {
            epoch: 10,
            loss: None,
            accuracy: Some(0.90),
        }];
        let r = run(&s, 12, 4, &progress);
        let similar = |batch, hours: u64, acc| SimilarRun {
            batch_size: batch,
            run_secs: hours * 3600,
            final_accuracy: Some(acc),
        };
        let cfg = RecommendConfig::default();
        // Batch 128 reached 89.6% (within 0.5 points) in 2 h: the 2 h saved cost 2 × $2 × 1.5.
        let recs = recommend(&p, &r, &[similar(128, 2, 0.896), similar(64, 3, 0.95)], &cfg);
        assert_eq!(
            kinds(&recs),
            [&RecommendationKind::LargerBatch { batch_size: 128 }]
        );
        assert_eq!(recs[0].saves, usd("6"));
        assert!(
            recs[0].basis.starts_with(
                "A similar run with batch size 128 reached 89.6% accuracy in 2h00m, against 90.0% in 4h00m"
            ),
            "{}",
            recs[0].basis
        );
        // Not when the larger batch lost accuracy, was slower, or was not larger.
        for other in [
            similar(128, 2, 0.894),
            similar(128, 5, 0.95),
            similar(32, 1, 0.95),
            similar(16, 1, 0.95),
        ] {
            assert!(recommend(&p, &r, &[other], &cfg).is_empty(), "{other:?}");
        }
        // Not without an accuracy to compare.
        assert!(recommend(&p, &run(&s, 12, 4, &[]), &[similar(128, 2, 0.95)], &cfg).is_empty());
    }

    #[test]
    fn fewer_gpus_when_utilisation_was_low() {
        let p = simple();
        let s = spec(8, Priority::Urgent);
        let mut r = run(&s, 12, 1, &[]);
        r.gpu_utilisation = Some(0.3);
        let recs = recommend(&p, &r, &[], &RecommendConfig::default());
        // 8 × 0.3 = 2.4 → 3 GPUs: 5 GPU-hours × $2 × 1.5 saved.
        assert_eq!(kinds(&recs), [&RecommendationKind::FewerGpus { gpus: 3 }]);
        assert_eq!(recs[0].saves, usd("15"));
        assert!(
            recs[0]
                .basis
                .starts_with("GPU utilisation averaged 30% on 8 GPUs, about 2.4 GPUs' worth"),
            "{}",
            recs[0].basis
        );
        for (gpus, util) in [(8, 0.5), (8, 0.9), (1, 0.1)] {
            let s = spec(gpus, Priority::Urgent);
            let mut r = run(&s, 12, 1, &[]);
            r.gpu_utilisation = Some(util);
            assert!(
                recommend(&p, &r, &[], &RecommendConfig::default()).is_empty(),
                "{gpus} {util}"
            );
        }
        let s = spec(10, Priority::Urgent);
        let mut r = run(&s, 12, 1, &[]);
        r.gpu_utilisation = Some(0.3);
        assert_eq!(
            kinds(&recommend(&p, &r, &[], &RecommendConfig::default())),
            [&RecommendationKind::FewerGpus { gpus: 3 }]
        );
    }

    fn losses(values: &[f64]) -> Vec<EpochMetrics> {
        values
            .iter()
            .enumerate()
            .map(|(i, &l)| EpochMetrics {
                epoch: i as u32 + 1,
                loss: Some(l),
                accuracy: None,
            })
            .collect()
    }

    #[test]
    fn early_stopping_on_a_loss_plateau() {
        let p = simple();
        let s = spec(1, Priority::Urgent);
        // Loss stops improving after epoch 6 (0.3): epochs 7-10 improve it by < 1%.
        let progress = losses(&[1.0, 0.8, 0.6, 0.45, 0.35, 0.3, 0.299, 0.2985, 0.298, 0.2981]);
        let r = run(&s, 12, 10, &progress);
        let recs = recommend(&p, &r, &[], &RecommendConfig::default());
        assert_eq!(
            kinds(&recs),
            [&RecommendationKind::EarlyStopping { after_epoch: 6 }]
        );
        // The last 4 of 10 hours: 4 × $2 × 1.5.
        assert_eq!(recs[0].saves, usd("12"));
        assert!(recs[0].basis.starts_with("Loss was 0.3000 after epoch 6 and the 4 epochs after it improved it by less than 1.0% (best 0.2980)"), "{}", recs[0].basis);
        assert!(
            recs[0]
                .basis
                .ends_with("would have saved 4h00m of 10h00m run time, which cost $12.00."),
            "{}",
            recs[0].basis
        );
    }

    #[test]
    fn no_early_stopping_while_loss_still_improves() {
        let p = simple();
        let s = spec(1, Priority::Urgent);
        let cfg = RecommendConfig::default();
        // Still falling.
        let falling = losses(&[1.0, 0.8, 0.6, 0.45, 0.35, 0.3, 0.25, 0.2]);
        assert!(recommend(&p, &run(&s, 12, 8, &falling), &[], &cfg).is_empty());
        // Flat, then a late drop: no epoch is a plateau for all that follows.
        let late = losses(&[1.0, 0.99, 0.99, 0.99, 0.99, 0.5]);
        assert!(recommend(&p, &run(&s, 12, 6, &late), &[], &cfg).is_empty());
        // Flat for only 2 epochs (patience 3).
        let short = losses(&[1.0, 0.5, 0.3, 0.3, 0.3]);
        assert!(recommend(&p, &run(&s, 12, 5, &short), &[], &cfg).is_empty());
    }

    #[test]
    fn recommendations_sorted_by_saving() {
        let p = simple();
        let s = spec(8, Priority::Normal);
        let mut r = run(&s, 12, 2, &[]);
        r.gpu_utilisation = Some(0.2);
        r.checkpoints = true;
        let recs = recommend(&p, &r, &[], &RecommendConfig::default());
        // On demand 8 × 2 × $2 = $32. Spot: 32 - 32 × 0.3/0.95 = 21.894737; fewer GPUs (2):
        // 32 - 8 = 24; off-peak: 32 - 16 = 16.
        let got: Vec<(&RecommendationKind, Money)> = recs.iter().map(|r| (&r.kind, r.saves)).collect();
        assert_eq!(
            got,
            [
                (&RecommendationKind::FewerGpus { gpus: 2 }, usd("24")),
                (&RecommendationKind::Spot, usd("21.894737")),
                (
                    &RecommendationKind::OffPeak {
                        start: at(2024, 5, 1, 22, 0)
                    },
                    usd("16")
                ),
            ]
        );
        assert_eq!(human(90_000), "1m30s");
        assert_eq!(human(45_000), "45s");
    }
}
