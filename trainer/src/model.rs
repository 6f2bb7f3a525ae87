//! Logistic regression trained with mini-batch SGD.
//!
//! A linear model is the smallest thing that is still genuinely trained:
//! it has a real loss surface, real gradient steps and metrics that improve
//! epoch over epoch, yet it runs in milliseconds on a CPU and needs no
//! dependencies. All arithmetic is sequential, so results are bit-for-bit
//! reproducible for a given seed on a given machine.

use crate::data::Dataset;

/// Loss and accuracy of a model over a whole dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Metrics {
    /// Mean binary cross-entropy (log loss); `ln 2 ≈ 0.693` for an untrained model.
    pub(crate) loss: f64,
    /// Fraction of samples whose predicted class (probability ≥ 0.5) is right.
    pub(crate) accuracy: f64,
}

/// A logistic regression model.
///
/// Parameters live in one vector, weights first and the bias last, so they
/// can be checkpointed and restored as a single list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogisticRegression {
    params: Vec<f64>,
}

impl LogisticRegression {
    /// An untrained model (all zeros), which predicts 0.5 for everything.
    pub(crate) fn new(features: usize) -> Self {
        Self {
            params: vec![0.0; features + 1],
        }
    }

    /// Restores a model from [`LogisticRegression::params`] output
    /// (weights then bias); used when resuming from a checkpoint.
    pub(crate) fn from_params(params: Vec<f64>) -> Self {
        Self { params }
    }

    /// Weights followed by the bias.
    pub(crate) fn params(&self) -> &[f64] {
        &self.params
    }

    /// The raw score `w·x + b` for one sample.
    fn logit(&self, x: &[f64]) -> f64 {
        let (weights, bias) = self.params.split_at(x.len());
        bias[0] + weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }

    /// Runs one epoch of mini-batch SGD, visiting samples in `order`.
    ///
    /// Each step averages the gradient over the batch, so the learning rate
    /// means the same thing whatever the batch size. The last batch may be
    /// smaller than `batch_size`.
    pub(crate) fn train_epoch(&mut self, data: &Dataset, order: &[usize], batch_size: usize, lr: f64) {
        let features = data.features();
        let mut grad = vec![0.0; features + 1];
        for batch in order.chunks(batch_size.max(1)) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for &i in batch {
                let x = data.row(i);
                // d(log loss)/d(logit) = sigmoid(logit) - label.
                let error = sigmoid(self.logit(x)) - data.label(i);
                for (g, v) in grad.iter_mut().zip(x) {
                    *g += error * v;
                }
                grad[features] += error;
            }
            let step = lr / batch.len() as f64;
            for (p, g) in self.params.iter_mut().zip(&grad) {
                *p -= step * g;
            }
        }
    }

    /// Computes loss and accuracy over the whole dataset. Reporting on the
    /// full set (rather than averaging the noisy per-batch losses seen while
    /// training) makes the epoch-to-epoch trend easy to read.
    pub(crate) fn evaluate(&self, data: &Dataset) -> Metrics {
        let n = data.len();
        if n == 0 {
            return Metrics {
                loss: 0.0,
                accuracy: 0.0,
            };
        }
        let mut loss = 0.0;
        let mut correct = 0usize;
        for i in 0..n {
            let z = self.logit(data.row(i));
            let y = data.label(i);
            // log(1 + e^z) - y·z is the log loss written so it cannot overflow.
            loss += softplus(z) - y * z;
            if (z >= 0.0) == (y == 1.0) {
                correct += 1;
            }
        }
        Metrics {
            loss: loss / n as f64,
            accuracy: correct as f64 / n as f64,
        }
    }
}

/// The logistic function, evaluated so that `exp` never overflows.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)` without overflow for large `z` or precision loss for small.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{epoch_order, FEATURES};

    /// Trains a fresh model for `epochs` epochs and returns the per-epoch
    /// metrics plus the final model.
    fn train(seed: u64, epochs: u32) -> (Vec<Metrics>, LogisticRegression) {
        let data = Dataset::synthetic(seed, 2000, FEATURES);
        let mut model = LogisticRegression::new(FEATURES);
        let history = (1..=epochs)
            .map(|epoch| {
                model.train_epoch(&data, &epoch_order(seed, epoch, data.len()), 32, 0.1);
                model.evaluate(&data)
            })
            .collect();
        (history, model)
    }

    #[test]
    fn untrained_model_has_chance_loss() {
        let data = Dataset::synthetic(1, 100, FEATURES);
        let metrics = LogisticRegression::new(FEATURES).evaluate(&data);
        assert!((metrics.loss - std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn loss_decreases_over_epochs_and_model_learns() {
        let (history, _) = train(42, 5);
        let losses: Vec<f64> = history.iter().map(|m| m.loss).collect();
        assert!(losses[0] < std::f64::consts::LN_2, "losses: {losses:?}");
        assert!(losses[4] < losses[0], "losses: {losses:?}");
        assert!(history[4].accuracy > 0.8, "accuracy {}", history[4].accuracy);
    }

    #[test]
    fn same_seed_gives_bit_identical_results() {
        let (history_a, model_a) = train(9, 3);
        let (history_b, model_b) = train(9, 3);
        assert_eq!(history_a, history_b);
        assert_eq!(model_a, model_b);
        let (_, model_c) = train(10, 3);
        assert_ne!(model_a, model_c);
    }

    #[test]
    fn numerics_stay_finite_for_extreme_logits() {
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((softplus(1000.0) - 1000.0).abs() < 1e-9);
        assert!(softplus(-1000.0) >= 0.0 && softplus(-1000.0) < 1e-300);
    }
}
