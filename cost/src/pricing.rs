//! What an hour of resources costs, and the price of an interval of real time.
//!
//! A job's price integrates its hourly rate over the real time it runs: the interval is
//! cut into peak and off-peak pieces on the wall clock of the pricing time zone
//! (`windows::integrate`), each piece is charged at its rate, and the sum is multiplied by
//! the priority multiplier and, on spot capacity, by the spot factor.
//!
//! All arithmetic is on integers. The hourly rate of a set of resources is rounded once
//! to a micro-unit; the integral over the pieces (with the priority multiplier) is
//! rounded once; the spot factor is applied to that and rounded once. Every rounding is
//! half away from zero, so a price is deterministic to the micro-unit.

use crate::money::{div_round, Currency, Money, Ratio, SCALE};
use crate::windows::integrate::{self, Piece};
use crate::windows::OffPeak;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use common::{JobSpec, Priority, Resources};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

const MS_PER_HOUR: i128 = 3_600_000;
/// The longest interval priced: a century. Nothing runs that long; the cap keeps an absurd
/// input (a corrupt timestamp, an overflowing estimate) from walking millions of days.
const MAX_SPAN_MS: i64 = 100 * 366 * 86_400_000;
const MILLICORES_PER_CORE: i128 = 1000;
const BYTES_PER_GIB: i128 = 1 << 30;

/// Prices read from a pricing file (see `pricing.default.toml`); build one with
/// [`CostModel::from_toml`](crate::CostModel::from_toml).
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    pub(crate) currency: Currency,
    pub(crate) time_zone: Tz,
    /// Per GPU-hour by lower-cased GPU type.
    pub(crate) gpu_rates: BTreeMap<String, Money>,
    /// Per GPU-hour for GPUs of unknown or unspecified type.
    pub(crate) default_gpu_rate: Money,
    pub(crate) cpu_core_rate: Money,
    pub(crate) memory_gib_rate: Money,
    pub(crate) off_peak: Option<OffPeak>,
    /// Multipliers for urgent, normal and background, in that order.
    pub(crate) priority: [Ratio; 3],
    pub(crate) spot: Spot,
}

/// Spot capacity: cheaper, but an attempt may be interrupted and run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spot {
    /// Fraction taken off on-demand prices (0.7 = 70% off).
    pub discount: Ratio,
    /// Probability that a spot attempt is interrupted before it finishes.
    pub interruption_rate: Ratio,
}

impl Spot {
    /// The expected cost on spot of work that costs `on_demand` on demand:
    /// `on_demand × (1 − discount) / (1 − interruption_rate)`.
    ///
    /// Each attempt is taken to be interrupted independently with probability `p`, and an
    /// interrupted attempt to be lost whole and run again, so the expected number of
    /// attempts is `1 / (1 − p)` (a geometric series). That overstates the re-run cost of
    /// a job that resumes from checkpoints and of interruptions that strike early, and
    /// that is the intent: an estimate shown before submission, or a saving recommended
    /// after it, should not make spot look cheaper than it will be.
    pub fn expected_cost(&self, on_demand: Money) -> Money {
        let num = on_demand.micros() as i128 * self.discount.complement().ppm() as i128;
        let den = self.interruption_rate.complement().ppm() as i128;
        Money::from_wide(div_round(num, den))
    }
}

/// What is paid for: the resources held, at which priority, on which capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// GPUs, CPU and memory held for the whole run.
    pub resources: Resources,
    /// Scheduling priority; its multiplier applies to the whole cost.
    pub priority: Priority,
    /// Whether the run is on spot capacity.
    pub spot: bool,
}

impl Usage {
    /// The usage of a job spec, on spot capacity or not.
    pub fn of(spec: &JobSpec, spot: bool) -> Usage {
        Usage {
            resources: spec.resources.clone(),
            priority: spec.priority,
            spot,
        }
    }
}

/// The price of an interval, with how it splits between peak and off-peak time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quote {
    /// What the interval costs, all multipliers and discounts included.
    pub total: Money,
    /// The resources' on-demand peak rate per hour, before priority and spot.
    pub hourly_rate: Money,
    /// Real milliseconds charged at peak rates.
    pub peak_ms: u64,
    /// Real milliseconds charged at off-peak rates.
    pub off_peak_ms: u64,
}

impl Pricing {
    /// The currency of every amount.
    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    /// The zone of the off-peak window and of budget months.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The off-peak window, if the file defines one.
    pub fn off_peak(&self) -> Option<&OffPeak> {
        self.off_peak.as_ref()
    }

    /// The spot discount and interruption rate.
    pub fn spot(&self) -> Spot {
        self.spot
    }

    /// The multiplier applied to the cost of a job of this priority.
    pub fn priority_multiplier(&self, priority: Priority) -> Ratio {
        match priority {
            Priority::Urgent => self.priority[0],
            Priority::Normal => self.priority[1],
            Priority::Background => self.priority[2],
        }
    }

    /// Per GPU-hour by listed GPU type (lower case), without the default rate.
    pub fn gpu_rates(&self) -> impl Iterator<Item = (&str, Money)> {
        self.gpu_rates.iter().map(|(t, r)| (t.as_str(), *r))
    }

    /// Per CPU core per hour.
    pub fn cpu_core_rate(&self) -> Money {
        self.cpu_core_rate
    }

    /// Per GiB of memory per hour.
    pub fn memory_gib_rate(&self) -> Money {
        self.memory_gib_rate
    }

    /// Per GPU-hour for a GPU type (case-insensitive); the default rate for an unknown or
    /// unspecified type.
    pub fn gpu_rate(&self, gpu_type: Option<&str>) -> Money {
        gpu_type
            .and_then(|t| self.gpu_rates.get(&t.to_ascii_lowercase()))
            .copied()
            .unwrap_or(self.default_gpu_rate)
    }

    /// The on-demand peak price of holding `resources` for one hour: GPUs at their type's
    /// rate, CPU to the millicore, memory per GiB (2^30 bytes) to the byte; rounded once.
    pub fn hourly_rate(&self, resources: &Resources) -> Money {
        let gpu = resources.gpus as i128 * self.gpu_rate(resources.gpu_type.as_deref()).micros() as i128;
        let millicores = (resources.cpu.max(0.0) * 1000.0).round() as i128;
        let num = gpu * MILLICORES_PER_CORE * BYTES_PER_GIB
            + millicores * self.cpu_core_rate.micros() as i128 * BYTES_PER_GIB
            + resources.memory.0 as i128 * self.memory_gib_rate.micros() as i128 * MILLICORES_PER_CORE;
        Money::from_wide(div_round(num, MILLICORES_PER_CORE * BYTES_PER_GIB))
    }

    /// The price of running `usage` over `[start, end)` (nothing when `end <= start`;
    /// intervals over a century are priced for their first century).
    pub fn quote(&self, usage: &Usage, start: DateTime<Utc>, end: DateTime<Utc>) -> Quote {
        let hourly = self.hourly_rate(&usage.resources);
        let pieces = self.pieces(start, end);
        let discount = self.off_peak.map_or(Ratio::ZERO, |w| w.discount());
        let prio = self.priority_multiplier(usage.priority).ppm() as i128;
        let mut num: i128 = 0;
        let (mut peak_ms, mut off_peak_ms) = (0u64, 0u64);
        for piece in &pieces {
            let (factor, counter) = if piece.off_peak {
                (discount.complement(), &mut off_peak_ms)
            } else {
                (Ratio::ONE, &mut peak_ms)
            };
            *counter += piece.len_ms() as u64;
            num += hourly.micros() as i128 * factor.ppm() as i128 * piece.len_ms() as i128;
        }
        let den = MS_PER_HOUR * SCALE as i128 * SCALE as i128;
        let on_demand = Money::from_wide(div_round(num * prio, den));
        let total = if usage.spot {
            self.spot.expected_cost(on_demand)
        } else {
            on_demand
        };
        Quote {
            total,
            hourly_rate: hourly,
            peak_ms,
            off_peak_ms,
        }
    }

    /// The price of running `usage` for `duration` from `start`.
    pub fn quote_for(&self, usage: &Usage, start: DateTime<Utc>, duration: Duration) -> Quote {
        self.quote(usage, start, add(start, duration))
    }

    /// What one attempt cost, from its start to its end. Failed and preempted attempts
    /// cost money too: the caller sums every attempt of a job.
    pub fn actual_cost(&self, usage: &Usage, started_at: DateTime<Utc>, ended_at: DateTime<Utc>) -> Money {
        self.quote(usage, started_at, ended_at).total
    }

    /// Whether `at` falls in the off-peak window (never, without one).
    pub fn is_off_peak(&self, at: DateTime<Utc>) -> bool {
        self.off_peak
            .as_ref()
            .is_some_and(|w| integrate::is_off_peak(self.time_zone, w, at.timestamp_millis()))
    }

    /// The next start of the off-peak window at or after `now`: `now` itself only when
    /// `now` is exactly a start. Inside the window this is the *next* window's start; use
    /// [`Pricing::off_peak_start`] to decide when a delayed job may begin. `None` without a
    /// window.
    pub fn next_off_peak_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let window = self.off_peak.as_ref()?;
        integrate::next_window_start(self.time_zone, window, now.timestamp_millis())
            .and_then(DateTime::from_timestamp_millis)
    }

    /// When a job submitted at `now` to run off-peak (`--off-peak`) may start: `now` if it
    /// is off-peak already (or if there is no window), else the next window's start.
    pub fn off_peak_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.is_off_peak(now) {
            return now;
        }
        self.next_off_peak_start(now).unwrap_or(now)
    }

    fn pieces(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Piece> {
        let from = start.timestamp_millis();
        let to = end.timestamp_millis().min(from.saturating_add(MAX_SPAN_MS));
        integrate::pieces(self.time_zone, self.off_peak.as_ref(), from, to)
    }
}

/// `start + duration`, saturating rather than panicking on absurd durations.
pub(crate) fn add(start: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(duration)
        .ok()
        .and_then(|d| start.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::CostModel;
    use chrono::{NaiveDate, TimeZone};
    use common::Memory;

    /// Round figures that make hand computation easy: a GPU-hour costs $2, nothing else
    /// costs anything, off-peak is half price from 22:00 to 06:00 UTC.
    pub(crate) const SIMPLE: &str = r#"
        currency = "USD"
        currency_symbol = "$"
        time_zone = "UTC"
        [rates]
        cpu_core = 0
        memory_gib = 0
        [rates.gpu]
        default = 2
        a100 = "4.00"
        [off_peak]
        start = "22:00"
        end = "06:00"
        discount = 0.5
        [priority]
        urgent = 1.5
        normal = 1
        background = 0.8
        [spot]
        discount = 0.7
        interruption_rate = 0.05
        [estimate]
        history_runs = 5
        reference_batch_size = 32
        batch_exponent = 0.5
        gpu_exponent = 1.0
        [estimate.secs_per_epoch]
        default = 600
        resnet = 900
        resnet50 = 1200
    "#;

    pub(crate) fn simple() -> Pricing {
        CostModel::from_toml(SIMPLE).unwrap().pricing
    }

    pub(crate) fn with_zone(zone: &str) -> Pricing {
        let text = SIMPLE.replace(r#"time_zone = "UTC""#, &format!("time_zone = {zone:?}"));
        CostModel::from_toml(&text).unwrap().pricing
    }

    pub(crate) fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap();
        Utc.from_utc_datetime(&naive)
    }

    pub(crate) fn gpus(n: u32, priority: Priority, spot: bool) -> Usage {
        Usage {
            resources: Resources {
                gpus: n,
                gpu_type: None,
                cpu: 1.0,
                memory: Memory(1 << 30),
            },
            priority,
            spot,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn hourly_rate_adds_gpus_cpu_and_memory() {
        let p = CostModel::builtin().pricing;
        let r = Resources {
            gpus: 2,
            gpu_type: Some("A100".into()),
            cpu: 8.5,
            memory: Memory(64 << 30),
        };
        // 2 × 3.67 + 8.5 × 0.04 + 64 × 0.005 = 7.34 + 0.34 + 0.32
        assert_eq!(p.hourly_rate(&r), Money::parse("8.00").unwrap());
        assert_eq!(p.gpu_rate(Some("mi300")), p.gpu_rate(None));
        // Half a GiB at 0.005 is 0.0025, exactly.
        let half = Resources {
            gpus: 0,
            gpu_type: None,
            cpu: 0.25,
            memory: Memory(512 << 20),
        };
        assert_eq!(p.hourly_rate(&half), Money::parse("0.0125").unwrap());
    }

    #[test]
    fn a_job_from_21_to_23_is_half_peak_half_off_peak() {
        let p = simple();
        let q = p.quote_for(&gpus(1, Priority::Normal, false), at(2024, 5, 1, 21, 0), 2 * HOUR);
        // 1 h × $2 + 1 h × $1.
        assert_eq!(q.total, Money::parse("3").unwrap());
        assert_eq!((q.peak_ms, q.off_peak_ms), (3_600_000, 3_600_000));
        let q = p.quote_for(&gpus(1, Priority::Normal, false), at(2024, 5, 1, 22, 0), HOUR);
        assert_eq!(q.total, Money::parse("1").unwrap());
        let q = p.quote_for(&gpus(1, Priority::Normal, false), at(2024, 5, 2, 6, 0), HOUR);
        assert_eq!(q.total, Money::parse("2").unwrap());
        let q = p.quote_for(&gpus(1, Priority::Normal, false), at(2024, 5, 2, 5, 0), HOUR);
        assert_eq!(q.total, Money::parse("1").unwrap());
        // A minute is 1/60 of an hour: $2/60 = 0.033333… rounds to 0.033333.
        let q = p.quote_for(
            &gpus(1, Priority::Normal, false),
            at(2024, 5, 1, 12, 0),
            Duration::from_secs(60),
        );
        assert_eq!(q.total, Money::from_micros(33_333));
    }

    #[test]
    fn same_instant_priced_in_the_pricing_zone() {
        // 20:00-22:00 UTC in May is 22:00-00:00 in Berlin: peak in UTC, off-peak in Berlin.
        let job = gpus(1, Priority::Normal, false);
        let start = at(2024, 5, 1, 20, 0);
        assert_eq!(
            simple().quote_for(&job, start, 2 * HOUR).total,
            Money::parse("4").unwrap()
        );
        let berlin = with_zone("Europe/Berlin");
        assert_eq!(
            berlin.quote_for(&job, start, 2 * HOUR).total,
            Money::parse("2").unwrap()
        );
    }

    #[test]
    fn dst_nights_are_priced_on_real_elapsed_time() {
        let berlin = with_zone("Europe/Berlin");
        let job = gpus(1, Priority::Normal, false);
        // Spring forward: 24 h from 12:00 CET = 17 h peak + 7 h off-peak = 34 + 7.
        let q = berlin.quote_for(&job, at(2024, 3, 30, 11, 0), 24 * HOUR);
        assert_eq!(q.total, Money::parse("41").unwrap());
        // Fall back: 24 h from 12:00 CEST = 15 h peak + 9 h off-peak = 30 + 9.
        let q = berlin.quote_for(&job, at(2024, 10, 26, 10, 0), 24 * HOUR);
        assert_eq!(q.total, Money::parse("39").unwrap());
    }

    #[test]
    fn priority_multipliers() {
        let p = simple();
        let start = at(2024, 5, 1, 12, 0);
        let cost = |prio| p.quote_for(&gpus(2, prio, false), start, 3 * HOUR).total;
        // 2 GPUs × 3 h × $2 = $12.
        assert_eq!(cost(Priority::Normal), Money::parse("12").unwrap());
        assert_eq!(cost(Priority::Urgent), Money::parse("18").unwrap());
        assert_eq!(cost(Priority::Background), Money::parse("9.6").unwrap());
    }

    #[test]
    fn spot_includes_expected_reruns() {
        let p = simple();
        let start = at(2024, 5, 1, 12, 0);
        // $12 on demand × 0.3 / 0.95 = 3.789473684… → 3.789474.
        let q = p.quote_for(&gpus(2, Priority::Normal, true), start, 3 * HOUR);
        assert_eq!(q.total, Money::from_micros(3_789_474));
        // Urgent on spot: $18 × 0.3 / 0.95 = 5.684210526… → 5.684211.
        let q = p.quote_for(&gpus(2, Priority::Urgent, true), start, 3 * HOUR);
        assert_eq!(q.total, Money::from_micros(5_684_211));
        // Without interruptions spot is just the discount.
        let none = Spot {
            discount: Ratio::parse("0.7").unwrap(),
            interruption_rate: Ratio::ZERO,
        };
        assert_eq!(
            none.expected_cost(Money::parse("12").unwrap()),
            Money::parse("3.6").unwrap()
        );
    }

    #[test]
    fn actual_cost_of_an_attempt_and_degenerate_intervals() {
        let p = simple();
        let job = gpus(1, Priority::Normal, false);
        let (s, e) = (at(2024, 5, 1, 21, 30), at(2024, 5, 1, 22, 30));
        assert_eq!(p.actual_cost(&job, s, e), Money::parse("1.5").unwrap());
        assert_eq!(p.actual_cost(&job, e, s), Money::ZERO);
        // An absurd end is priced for a century, promptly: 100 × 366 days × (16 × 2 + 8 × 1).
        let q = p.quote(&job, at(2024, 5, 1, 0, 0), DateTime::<Utc>::MAX_UTC);
        assert_eq!(q.total, Money::parse("1464000").unwrap());
    }

    #[test]
    fn off_peak_start_for_delayed_jobs() {
        let p = simple();
        assert_eq!(
            p.next_off_peak_start(at(2024, 5, 1, 12, 0)),
            Some(at(2024, 5, 1, 22, 0))
        );
        assert_eq!(p.off_peak_start(at(2024, 5, 1, 12, 0)), at(2024, 5, 1, 22, 0));
        assert_eq!(p.off_peak_start(at(2024, 5, 1, 23, 0)), at(2024, 5, 1, 23, 0));
        assert_eq!(
            p.next_off_peak_start(at(2024, 5, 1, 23, 0)),
            Some(at(2024, 5, 2, 22, 0))
        );
        let berlin = with_zone("Europe/Berlin");
        assert_eq!(
            berlin.next_off_peak_start(at(2024, 1, 1, 12, 0)),
            Some(at(2024, 1, 1, 21, 0))
        );
    }
}
