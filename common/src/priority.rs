//! Job priority: strict, three levels.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Strict priority: no `Normal` job starts while an `Urgent` one is queued.
///
/// Parsed from `p0|p1|p2` or `urgent|normal|background`; shown as `p0|p1|p2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Priority {
    /// P0: incidents, deadlines.
    Urgent,
    /// P1: the default.
    #[default]
    Normal,
    /// P2: sweeps and backfills that may wait.
    Background,
}

impl Priority {
    /// All priorities, most urgent first: the order workers drain them in.
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Background];

    /// The short name used in Redis keys and output (`p0`, `p1`, `p2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "p0",
            Priority::Normal => "p1",
            Priority::Background => "p2",
        }
    }

    /// The long name (`urgent`, `normal`, `background`).
    pub fn alias(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Background => "background",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "p0" | "urgent" => Ok(Priority::Urgent),
            "p1" | "normal" => Ok(Priority::Normal),
            "p2" | "background" => Ok(Priority::Background),
            _ => Err(format!(
                "unknown priority {s:?}; expected p0|p1|p2 or urgent|normal|background"
            )),
        }
    }
}

impl TryFrom<String> for Priority {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Priority> for String {
    fn from(p: Priority) -> String {
        p.as_str().to_string()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("p0".parse::<Priority>(), Ok(Priority::Urgent));
        assert_eq!("URGENT".parse::<Priority>(), Ok(Priority::Urgent));
        assert_eq!("normal".parse::<Priority>(), Ok(Priority::Normal));
        assert_eq!("p2".parse::<Priority>(), Ok(Priority::Background));
        assert!("p3".parse::<Priority>().is_err());
        assert!("high".parse::<Priority>().is_err());
    }

    #[test]
    fn orders_most_urgent_first() {
        let mut v = vec![Priority::Background, Priority::Urgent, Priority::Normal];
        v.sort();
        assert_eq!(v, Priority::ALL);
    }
}
