//! Exponential backoff, shared by job retries and by reconnecting to Redis.

use std::time::Duration;

/// Exponential backoff: `base * 2^(n-1)`, capped at `max`, with up to 20% jitter
/// subtracted so that a fleet of workers does not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub base: Duration,
    /// Ceiling for any delay.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// Delay before retry number `n` (1-based), without jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Delay before retry `n` with jitter: somewhere in `[0.8, 1.0] * delay(n)`.
    pub fn jittered(&self, n: u32) -> Duration {
        let d = self.delay(n);
        let nanos = uuid::Uuid::new_v4().as_u128() as u64 % 1000;
        d.mul_f64(1.0 - 0.2 * nanos as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(4), Duration::from_secs(8));
        assert_eq!(b.delay(5), Duration::from_secs(10));
        assert_eq!(b.delay(100), Duration::from_secs(10));
        for n in 1..8 {
            let j = b.jittered(n);
            assert!(j <= b.delay(n) && j >= b.delay(n).mul_f64(0.8));
        }
    }
}
