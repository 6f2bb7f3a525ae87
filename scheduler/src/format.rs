//! Text formatting shared by the read commands.

use common::now_ms;
use std::time::{Duration, UNIX_EPOCH};

/// `2026-11-23T14:53:37.123Z` from ms since epoch.
pub(crate) fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A compact duration: `850ms`, `12s`, `3m05s`, `2h10m`.
pub(crate) fn short_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Time since `ms`, compact.
pub(crate) fn age(ms: u64) -> String {
    short_duration(now_ms().saturating_sub(ms))
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("our types always serialize")
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_are_compact() {
        assert_eq!(super::short_duration(850), "850ms");
        assert_eq!(super::short_duration(12_000), "12s");
        assert_eq!(super::short_duration(185_000), "3m05s");
        assert_eq!(super::short_duration(7_800_000), "2h10m");
        assert_eq!(super::timestamp(0), "1970-01-01T00:00:00.000Z");
    }
}
