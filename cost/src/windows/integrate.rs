//! Splitting an interval of real time into peak and off-peak pieces.
//!
//! Cost is charged on real elapsed time, and each instant is classified by the wall clock
//! of the pricing time zone at that instant. So on a spring-forward night a wall-clock
//! hour that does not exist costs nothing, and on a fall-back night the repeated hour is
//! charged twice, at whatever rate its wall-clock time says.
//!
//! The classification can only change where the wall clock crosses the window's start or
//! end, or where the zone's UTC offset changes. Between two offset changes the wall clock
//! is real time plus a constant, so the crossings are found with integer arithmetic.
//! Offset changes are found by sampling the offset every hour and bisecting to the
//! millisecond where it differs; this assumes a zone never changes its offset twice
//! within one hour, which holds for every zone in the tz database.

use super::{OffPeak, DAY_MS};
use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

/// How far apart the UTC offset is sampled when looking for its changes.
const PROBE_MS: i64 = 3_600_000;

/// A stretch of real time, in ms since the Unix epoch, priced at one rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) from_ms: i64,
    pub(crate) to_ms: i64,
    pub(crate) off_peak: bool,
}

impl Piece {
    pub(crate) fn len_ms(&self) -> i64 {
        self.to_ms - self.from_ms
    }
}

/// Splits `[from_ms, to_ms)` into maximal pieces of constant classification, in order.
/// Without an off-peak window the whole interval is one peak piece.
pub(crate) fn pieces(tz: Tz, window: Option<&OffPeak>, from_ms: i64, to_ms: i64) -> Vec<Piece> {
    if to_ms <= from_ms {
        return Vec::new();
    }
    let Some(window) = window else {
        return vec![Piece {
            from_ms,
            to_ms,
            off_peak: false,
        }];
    };
    let mut out: Vec<Piece> = Vec::new();
    for (a, b, offset) in offset_segments(tz, from_ms, to_ms) {
        for piece in split_segment(window, a, b, offset) {
            match out.last_mut() {
                Some(last) if last.off_peak == piece.off_peak => last.to_ms = piece.to_ms,
                _ => out.push(piece),
            }
        }
    }
    out
}

/// The first instant at or after `from_ms` where the classification turns from peak to
/// off-peak, looking up to eight days ahead.
pub(crate) fn next_window_start(tz: Tz, window: &OffPeak, from_ms: i64) -> Option<i64> {
    // Starting one millisecond early makes `from_ms` itself count when it is a start.
    let pieces = pieces(tz, Some(window), from_ms - 1, from_ms + 8 * DAY_MS);
    pieces
        .windows(2)
        .find(|pair| !pair[0].off_peak && pair[1].off_peak)
        .map(|pair| pair[1].from_ms)
}

/// Whether the instant `at_ms` is off-peak.
pub(crate) fn is_off_peak(tz: Tz, window: &OffPeak, at_ms: i64) -> bool {
    window.contains((at_ms + offset_ms(tz, at_ms)).rem_euclid(DAY_MS))
}

/// The zone's UTC offset at an instant, in milliseconds (local = UTC + offset).
pub(crate) fn offset_ms(tz: Tz, at_ms: i64) -> i64 {
    let utc = DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .naive_utc();
    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc() as i64 * 1000
}

/// `[from, to)` cut where the UTC offset changes: `(start, end, offset_ms)` triples.
fn offset_segments(tz: Tz, from_ms: i64, to_ms: i64) -> Vec<(i64, i64, i64)> {
    let mut segments = Vec::new();
    let (mut seg_start, mut seg_offset) = (from_ms, offset_ms(tz, from_ms));
    let mut lo = from_ms;
    while lo < to_ms - 1 {
        let hi = (lo + PROBE_MS).min(to_ms - 1);
        let hi_offset = offset_ms(tz, hi);
        if hi_offset != seg_offset {
            let change = first_change(tz, lo, hi, seg_offset);
            segments.push((seg_start, change, seg_offset));
            seg_start = change;
            seg_offset = offset_ms(tz, change);
            // Re-examine the rest of this probe step from the change onwards.
            lo = change;
            continue;
        }
        lo = hi;
    }
    segments.push((seg_start, to_ms, seg_offset));
    segments
}

/// The first millisecond in `(lo, hi]` whose offset differs from `lo_offset`, given that
/// `hi`'s does.
fn first_change(tz: Tz, mut lo: i64, mut hi: i64, lo_offset: i64) -> i64 {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_ms(tz, mid) == lo_offset {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Pieces of `[a, b)`, over which the UTC offset is constant, cut where the wall clock
/// crosses the window's start or end.
fn split_segment(window: &OffPeak, a: i64, b: i64, offset: i64) -> Vec<Piece> {
    let local_a = a + offset;
    let mut cuts: Vec<i64> = Vec::new();
    for boundary in [window.start_ms(), window.end_ms()] {
        // The first local instant strictly after `local_a` whose time of day is `boundary`.
        let mut local = local_a + DAY_MS - (local_a - boundary).rem_euclid(DAY_MS);
        while local - offset < b {
            cuts.push(local - offset);
            local += DAY_MS;
        }
    }
    cuts.sort_unstable();
    cuts.push(b);
    let mut pieces = Vec::with_capacity(cuts.len());
    let mut from = a;
    for to in cuts {
        pieces.push(Piece {
            from_ms: from,
            to_ms: to,
            off_peak: window.contains((from + offset).rem_euclid(DAY_MS)),
        });
        from = to;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Ratio;
    use chrono::{NaiveDate, Utc};

    const H: i64 = 3_600_000;

    fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap();
        Utc.from_utc_datetime(&naive).timestamp_millis()
    }

    fn window(s: &str, e: &str) -> OffPeak {
        OffPeak::new(s, e, Ratio::parse("0.5").unwrap()).unwrap()
    }

    /// (peak ms, off-peak ms) over an interval.
    fn split(tz: Tz, w: &OffPeak, from: i64, to: i64) -> (i64, i64) {
        let ps = pieces(tz, Some(w), from, to);
        let sum = |off: bool| ps.iter().filter(|p| p.off_peak == off).map(Piece::len_ms).sum();
        assert_eq!(ps.iter().map(Piece::len_ms).sum::<i64>(), to - from);
        (sum(false), sum(true))
    }

    #[test]
    fn splits_at_the_window_boundaries() {
        let w = window("22:00", "06:00");
        let t21 = utc_ms(2024, 5, 1, 21, 0);
        assert_eq!(split(Tz::UTC, &w, t21, t21 + 2 * H), (H, H));
        let ps = pieces(Tz::UTC, Some(&w), t21, t21 + 2 * H);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[1].from_ms, utc_ms(2024, 5, 1, 22, 0));
        // A whole day: 8 hours off-peak, 16 at peak, whatever the start.
        for start_hour in [0, 5, 6, 13, 22, 23] {
            let t = utc_ms(2024, 5, 1, start_hour, 0);
            assert_eq!(
                split(Tz::UTC, &w, t, t + 24 * H),
                (16 * H, 8 * H),
                "start {start_hour}"
            );
        }
    }

    #[test]
    fn boundary_instants_belong_to_the_window_that_starts() {
        let w = window("22:00", "06:00");
        assert!(is_off_peak(Tz::UTC, &w, utc_ms(2024, 5, 1, 22, 0)));
        assert!(!is_off_peak(Tz::UTC, &w, utc_ms(2024, 5, 1, 22, 0) - 1));
        assert!(!is_off_peak(Tz::UTC, &w, utc_ms(2024, 5, 2, 6, 0)));
        assert!(is_off_peak(Tz::UTC, &w, utc_ms(2024, 5, 2, 6, 0) - 1));
        let t22 = utc_ms(2024, 5, 1, 22, 0);
        assert_eq!(split(Tz::UTC, &w, t22, t22 + H), (0, H));
        let t6 = utc_ms(2024, 5, 2, 6, 0);
        assert_eq!(split(Tz::UTC, &w, t6, t6 + H), (H, 0));
        assert_eq!(split(Tz::UTC, &w, t6 - H, t6), (0, H));
    }

    #[test]
    fn berlin_spring_forward_night_is_one_hour_shorter() {
        // 2024-03-31: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let w = window("22:00", "06:00");
        // 22:00 CET (21:00 UTC) to 06:00 CEST (04:00 UTC): 7 real hours off-peak.
        let from = utc_ms(2024, 3, 30, 11, 0);
        assert_eq!(split(berlin, &w, from, from + 24 * H), (17 * H, 7 * H));
        // The wall-clock hour 02:00-03:00 does not exist: it is priced as nothing.
        let gap = window("02:00", "03:00");
        let night = utc_ms(2024, 3, 30, 22, 0);
        assert_eq!(split(berlin, &gap, night, night + 6 * H), (6 * H, 0));
    }

    #[test]
    fn berlin_fall_back_night_is_one_hour_longer() {
        // 2024-10-27: 03:00 CEST falls back to 02:00 CET at 01:00 UTC.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let w = window("22:00", "06:00");
        // 22:00 CEST (20:00 UTC) to 06:00 CET (05:00 UTC): 9 real hours off-peak.
        let from = utc_ms(2024, 10, 26, 10, 0);
        assert_eq!(split(berlin, &w, from, from + 24 * H), (15 * H, 9 * H));
        // The wall-clock hour 02:00-03:00 happens twice: 2 real hours in the window.
        let fold = window("02:00", "03:00");
        let night = utc_ms(2024, 10, 26, 22, 0);
        assert_eq!(split(berlin, &fold, night, night + 6 * H), (4 * H, 2 * H));
        // A window starting inside the repeated hour is entered twice.
        let inside = window("02:30", "05:00");
        let ps = pieces(berlin, Some(&inside), night, night + 6 * H);
        let starts: Vec<bool> = ps.iter().map(|p| p.off_peak).collect();
        assert_eq!(starts, [false, true, false, true]);
        // 02:30-03:00 CEST, then 02:30-05:00 CET: 3 real hours.
        assert_eq!(split(berlin, &inside, night, night + 6 * H), (3 * H, 3 * H));
    }

    #[test]
    fn same_instant_is_classified_in_the_pricing_zone() {
        let w = window("22:00", "06:00");
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 21:30 UTC in May is 23:30 in Berlin.
        let t = utc_ms(2024, 5, 1, 21, 30);
        assert!(!is_off_peak(Tz::UTC, &w, t));
        assert!(is_off_peak(berlin, &w, t));
    }

    #[test]
    fn next_window_start_respects_zone_and_now() {
        let w = window("22:00", "06:00");
        let noon = utc_ms(2024, 5, 1, 12, 0);
        assert_eq!(
            next_window_start(Tz::UTC, &w, noon),
            Some(utc_ms(2024, 5, 1, 22, 0))
        );
        let exactly = utc_ms(2024, 5, 1, 22, 0);
        assert_eq!(next_window_start(Tz::UTC, &w, exactly), Some(exactly));
        // Inside the window: the next start is tomorrow's.
        assert_eq!(
            next_window_start(Tz::UTC, &w, exactly + 1),
            Some(utc_ms(2024, 5, 2, 22, 0))
        );
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            next_window_start(berlin, &w, noon),
            Some(utc_ms(2024, 5, 1, 20, 0))
        );
    }

    #[test]
    fn finds_offset_changes_to_the_millisecond() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let from = utc_ms(2024, 3, 30, 0, 0);
        let segs = offset_segments(berlin, from, from + 48 * H);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].1, utc_ms(2024, 3, 31, 1, 0));
        assert_eq!((segs[0].2, segs[1].2), (H, 2 * H));
        assert!(pieces(berlin, Some(&window("22:00", "06:00")), from, from).is_empty());
    }
}
