//! Projecting a running job's total cost from the pace it has kept so far.
//!
//! The remaining epochs are assumed to take as long each as the epochs done so far took
//! on average: `remaining = elapsed × (total − done) / done`, in integer milliseconds.
//! The projected total prices the whole interval from the start to the projected end, so
//! a run that will cross into the off-peak window is projected at both rates.

use crate::money::{div_round, Money};
use crate::pricing::{Pricing, Usage};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How far a running attempt has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Epochs completed since the attempt started (not counting epochs restored from a
    /// checkpoint).
    pub epochs_done: u32,
    /// Epochs this attempt must complete in all.
    pub epochs_total: u32,
}

/// A running attempt's cost so far and where it is heading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Forecast {
    /// The cost from the start until now.
    pub so_far: Money,
    /// Observed seconds per epoch; `None` before the first epoch completes.
    pub secs_per_epoch: Option<f64>,
    /// When the attempt should end at its pace; `None` before the first epoch completes.
    pub projected_end: Option<DateTime<Utc>>,
    /// The cost from the start until the projected end.
    pub projected_total: Option<Money>,
}

/// Forecasts the cost of an attempt of `usage` that started at `started_at`, seen at
/// `now` with `progress`.
pub fn forecast(
    pricing: &Pricing,
    usage: &Usage,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
    progress: Progress,
) -> Forecast {
    let so_far = pricing.actual_cost(usage, started_at, now);
    let elapsed_ms = (now.timestamp_millis() - started_at.timestamp_millis()).max(0);
    if progress.epochs_done == 0 {
        return Forecast {
            so_far,
            secs_per_epoch: None,
            projected_end: None,
            projected_total: None,
        };
    }
    let left = progress.epochs_total.saturating_sub(progress.epochs_done) as i128;
    let remaining_ms = div_round(elapsed_ms as i128 * left, progress.epochs_done as i128) as i64;
    let end = DateTime::from_timestamp_millis(now.timestamp_millis().saturating_add(remaining_ms))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    Forecast {
        so_far,
        secs_per_epoch: Some(elapsed_ms as f64 / 1000.0 / progress.epochs_done as f64),
        projected_end: Some(end),
        projected_total: Some(pricing.actual_cost(usage, started_at, end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::tests::{at, gpus, simple};
    use common::Priority;

    #[test]
    fn projects_from_the_observed_pace() {
        let p = simple();
        let job = gpus(1, Priority::Normal, false);
        // 3 of 10 epochs in 1.5 h: 30 min per epoch, 3.5 h to go, ends 17:00.
        let f = forecast(
            &p,
            &job,
            at(2024, 5, 1, 12, 0),
            at(2024, 5, 1, 13, 30),
            Progress {
                epochs_done: 3,
                epochs_total: 10,
            },
        );
        assert_eq!(f.so_far, Money::parse("3").unwrap());
        assert_eq!(f.secs_per_epoch, Some(1800.0));
        assert_eq!(f.projected_end, Some(at(2024, 5, 1, 17, 0)));
        assert_eq!(f.projected_total, Some(Money::parse("10").unwrap()));
    }

    #[test]
    fn projection_crossing_into_off_peak_uses_both_rates() {
        let p = simple();
        let job = gpus(2, Priority::Urgent, false);
        // 1 of 4 epochs in 1 h from 20:00: ends at 00:00; 2 h peak + 2 h off-peak on 2
        // GPUs = 2 × (2 × 2 + 2 × 1) = 12, × 1.5 urgent = 18.
        let f = forecast(
            &p,
            &job,
            at(2024, 5, 1, 20, 0),
            at(2024, 5, 1, 21, 0),
            Progress {
                epochs_done: 1,
                epochs_total: 4,
            },
        );
        assert_eq!(f.so_far, Money::parse("6").unwrap());
        assert_eq!(f.projected_end, Some(at(2024, 5, 2, 0, 0)));
        assert_eq!(f.projected_total, Some(Money::parse("18").unwrap()));
    }

    #[test]
    fn no_projection_before_the_first_epoch_and_none_past_the_last() {
        let p = simple();
        let job = gpus(1, Priority::Normal, false);
        let (start, now) = (at(2024, 5, 1, 12, 0), at(2024, 5, 1, 12, 30));
        let f = forecast(
            &p,
            &job,
            start,
            now,
            Progress {
                epochs_done: 0,
                epochs_total: 5,
            },
        );
        assert_eq!((f.so_far, f.projected_total), (Money::parse("1").unwrap(), None));
        let f = forecast(
            &p,
            &job,
            start,
            now,
            Progress {
                epochs_done: 5,
                epochs_total: 5,
            },
        );
        assert_eq!(f.projected_total, Some(f.so_far));
    }
}
