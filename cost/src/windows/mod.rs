//! The daily off-peak window, defined on the local wall clock of the pricing time zone.
//!
//! Whether an instant is off-peak depends only on the wall-clock time of day at that
//! instant. A window is half-open, `[start, end)`: a job starting exactly at 22:00 is
//! off-peak from its first millisecond, and one starting exactly at 06:00 is at peak.
//! `integrate` turns an interval of real time into peak and off-peak pieces.

pub(crate) mod integrate;

use crate::money::Ratio;
use std::fmt;

/// Milliseconds in a wall-clock day (a day of `[start, end)` arithmetic, not a real day).
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The daily off-peak window and its discount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffPeak {
    start_min: u32,
    end_min: u32,
    discount: Ratio,
}

impl OffPeak {
    /// A window from `start` to `end` (`"HH:MM"`, local time; it may wrap past midnight)
    /// at `discount` off. Fails on malformed times, an empty window (`start == end`) or a
    /// discount outside `[0, 1]`.
    pub fn new(start: &str, end: &str, discount: Ratio) -> Result<OffPeak, String> {
        let start_min = parse_hh_mm(start)?;
        let end_min = parse_hh_mm(end)?;
        if start_min == end_min {
            return Err(format!(
                "start and end are both {start}; the window would be empty"
            ));
        }
        if !(Ratio::ZERO..=Ratio::ONE).contains(&discount) {
            return Err(format!("discount must be between 0 and 1, got {discount}"));
        }
        Ok(OffPeak {
            start_min,
            end_min,
            discount,
        })
    }

    /// The fraction taken off peak rates inside the window (0.5 = half price).
    pub fn discount(&self) -> Ratio {
        self.discount
    }

    /// Start of the window in milliseconds after local midnight.
    pub(crate) fn start_ms(&self) -> i64 {
        self.start_min as i64 * 60_000
    }

    /// End of the window in milliseconds after local midnight.
    pub(crate) fn end_ms(&self) -> i64 {
        self.end_min as i64 * 60_000
    }

    /// Whether a wall-clock time of day (ms after local midnight) lies in the window.
    pub(crate) fn contains(&self, time_of_day_ms: i64) -> bool {
        let (s, e) = (self.start_ms(), self.end_ms());
        if s < e {
            (s..e).contains(&time_of_day_ms)
        } else {
            time_of_day_ms >= s || time_of_day_ms < e
        }
    }
}

impl fmt::Display for OffPeak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start_min), hm(self.end_min))
    }
}

/// Minutes after midnight of `"HH:MM"` (00:00 to 23:59).
fn parse_hh_mm(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day like 22:00");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(s: &str, e: &str) -> OffPeak {
        OffPeak::new(s, e, Ratio::parse("0.5").unwrap()).unwrap()
    }

    #[test]
    fn half_open_and_wrapping() {
        let w = window("22:00", "06:00");
        let at = |h: i64, m: i64| w.contains((h * 60 + m) * 60_000);
        assert!(at(22, 0) && at(23, 59) && at(0, 0) && at(5, 59));
        assert!(!at(6, 0) && !at(21, 59) && !at(12, 0));
        let day = window("09:00", "17:00");
        assert!(day.contains(9 * 3_600_000) && !day.contains(17 * 3_600_000));
        assert_eq!(w.to_string(), "22:00-06:00");
    }

    #[test]
    fn rejects_bad_windows() {
        let half = Ratio::parse("0.5").unwrap();
        assert!(OffPeak::new("22:00", "22:00", half).is_err());
        assert!(OffPeak::new("24:00", "06:00", half).is_err());
        assert!(OffPeak::new("9:00", "17:00", half).is_err());
        assert!(OffPeak::new("22:00", "06:00", Ratio::parse("1.5").unwrap()).is_err());
    }
}
