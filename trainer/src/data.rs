//! Deterministic synthetic data for the trainer.
//!
//! The queue's demo and tests need real work whose result is reproducible:
//! the same seed must give the same dataset, the same shuffles and therefore
//! the same trained weights, whether a job runs straight through or is
//! interrupted and resumed from a checkpoint. So everything random here comes
//! from a tiny seeded PRNG instead of an external crate or OS entropy.

/// Number of input features in the synthetic dataset.
///
/// Fixed rather than a flag: it is recorded in checkpoints, so a checkpoint
/// written by a build with a different feature count is rejected instead of
/// being loaded into a model of the wrong shape.
pub(crate) const FEATURES: usize = 12;

/// Standard deviation of the noise added to the hidden logit before
/// thresholding. It makes the classes overlap, so the loss plateaus at a
/// realistic value instead of falling towards zero.
const LABEL_NOISE: f64 = 1.0;

/// Stream offset so epoch shuffles never reuse the dataset's random stream.
const SHUFFLE_STREAM: u64 = 0xA076_1D64_78BD_642F;

/// SplitMix64: a tiny, fast, well-mixed 64-bit PRNG (Steele, Lea & Flood).
///
/// Chosen because it is a few lines long, has no bad seeds (0 is fine), and
/// gives statistically decent output, which is all synthetic data needs.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Creates a generator; every seed, including 0, gives a good stream.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Returns the next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a uniform float in `[0, 1)` built from the top 53 bits, so
    /// every value is exactly representable.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Returns a standard normal sample (Box–Muller), because Gaussian
    /// features and noise make a more realistic problem than uniform ones.
    pub(crate) fn next_normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is always finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Returns an index in `0..n` (multiply-shift; the bias is negligible
    /// for dataset-sized `n`). `n` must be non-zero.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Shuffles `items` in place with Fisher–Yates.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// A binary classification dataset stored row-major, so one sample's
/// features are a contiguous slice.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dataset {
    features: usize,
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Dataset {
    /// Generates `samples` rows from `seed`: standard normal features, and a
    /// label that is 1 when a hidden linear function plus Gaussian noise is
    /// positive. A linear model can learn it well but not perfectly, so loss
    /// and accuracy move visibly over the first epochs.
    pub(crate) fn synthetic(seed: u64, samples: usize, features: usize) -> Self {
        let mut rng = SplitMix64::new(seed);
        let true_weights: Vec<f64> = (0..features).map(|_| rng.next_normal()).collect();
        let true_bias = 0.5 * rng.next_normal();
        let mut x = Vec::with_capacity(samples * features);
        let mut y = Vec::with_capacity(samples);
        for _ in 0..samples {
            let mut logit = true_bias;
            for w in &true_weights {
                let value = rng.next_normal();
                logit += w * value;
                x.push(value);
            }
            logit += LABEL_NOISE * rng.next_normal();
            y.push(if logit > 0.0 { 1.0 } else { 0.0 });
        }
        Self { features, x, y }
    }

    /// Number of samples.
    pub(crate) fn len(&self) -> usize {
        self.y.len()
    }

    /// Number of features per sample.
    pub(crate) fn features(&self) -> usize {
        self.features
    }

    /// Features of sample `i`.
    pub(crate) fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// Label (0.0 or 1.0) of sample `i`.
    pub(crate) fn label(&self, i: usize) -> f64 {
        self.y[i]
    }
}

/// The sample order for one epoch.
///
/// It depends only on the seed and the epoch number (not on earlier epochs'
/// random draws), which is what lets a resumed run replay exactly the
/// shuffles an uninterrupted run would have used.
pub(crate) fn epoch_order(seed: u64, epoch: u32, samples: usize) -> Vec<usize> {
    let stream = SHUFFLE_STREAM.wrapping_mul(u64::from(epoch) + 1);
    let mut rng = SplitMix64::new(seed ^ stream);
    let mut order: Vec<usize> = (0..samples).collect();
    rng.shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_dataset_and_other_seeds_differ() {
        let a = Dataset::synthetic(7, 200, FEATURES);
        assert_eq!(a, Dataset::synthetic(7, 200, FEATURES));
        assert_ne!(a, Dataset::synthetic(8, 200, FEATURES));
        assert_eq!(a.len(), 200);
        assert_eq!(a.row(199).len(), FEATURES);
    }

    #[test]
    fn labels_are_binary_and_both_classes_occur() {
        let data = Dataset::synthetic(42, 1000, FEATURES);
        let positives = (0..data.len()).filter(|&i| data.label(i) == 1.0).count();
        assert!((0..data.len()).all(|i| data.label(i) == 0.0 || data.label(i) == 1.0));
        assert!(positives > 100 && positives < 900, "positives = {positives}");
    }

    #[test]
    fn uniform_floats_stay_in_range() {
        let mut rng = SplitMix64::new(0);
        for _ in 0..10_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.next_normal().is_finite());
        }
    }

    #[test]
    fn epoch_order_is_a_deterministic_permutation_that_changes_per_epoch() {
        let first = epoch_order(42, 1, 500);
        assert_eq!(first, epoch_order(42, 1, 500));
        assert_ne!(first, epoch_order(42, 2, 500));
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..500).collect::<Vec<_>>());
    }
}
