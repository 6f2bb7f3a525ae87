//! Recorded queue depths: the input the HPA model is replayed against.

use std::path::PathBuf;

use crate::{manifest, Error, Result, Seconds};

/// A queue-depth time series: `(seconds, queued)` samples in time order, read as a step
/// function (a value holds until the next sample), as the HPA sees a gauge between scrapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    samples: Vec<(Seconds, f64)>,
}

impl Trace {
    /// Loads a CSV trace from a file under `k8s/` (see [`Trace::parse`]).
    pub fn load(relative: &str) -> Result<Self> {
        let path = manifest::root().join(relative);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `seconds,queued` lines. Blank lines, `#` comments and a `seconds,queued` header
    /// are skipped; times must increase. `path` is only for error messages.
    pub fn parse(text: &str, path: PathBuf) -> Result<Self> {
        let mut samples: Vec<(Seconds, f64)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line == "seconds,queued" {
                continue;
            }
            let error = |message: &str| Error::Trace {
                path: path.clone(),
                line: index + 1,
                message: message.into(),
            };
            let (at, queued) = line
                .split_once(',')
                .ok_or_else(|| error("expected `seconds,queued`"))?;
            let at: Seconds = at
                .trim()
                .parse()
                .map_err(|_| error("seconds is not a whole number"))?;
            let queued: f64 = queued
                .trim()
                .parse()
                .map_err(|_| error("queued is not a number"))?;
            if !queued.is_finite() || queued < 0.0 {
                return Err(error("queued must be zero or more"));
            }
            if samples.last().is_some_and(|&(last, _)| at <= last) {
                return Err(error("times must increase"));
            }
            samples.push((at, queued));
        }
        if samples.is_empty() {
            return Err(Error::Trace {
                path,
                line: 0,
                message: "no samples".into(),
            });
        }
        Ok(Self { samples })
    }

    /// The queue depth at `at`: the last sample at or before it, or 0 before the first.
    pub fn at(&self, at: Seconds) -> f64 {
        let index = self.samples.partition_point(|&(t, _)| t <= at);
        index.checked_sub(1).map_or(0.0, |i| self.samples[i].1)
    }

    /// The time of the last sample.
    pub fn end(&self) -> Seconds {
        self.samples.last().map_or(0, |&(t, _)| t)
    }

    /// The largest queue depth, and the first time it was seen.
    pub fn peak(&self) -> (Seconds, f64) {
        self.samples
            .iter()
            .copied()
            .fold((0, 0.0), |best, s| if s.1 > best.1 { s } else { best })
    }

    /// All samples.
    pub fn samples(&self) -> &[(Seconds, f64)] {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace> {
        Trace::parse(text, PathBuf::from("t.csv"))
    }

    #[test]
    fn reads_as_a_step_function() {
        let trace = parse("# a burst\nseconds,queued\n0,0\n30,500\n\n60,250\n").unwrap();
        assert_eq!(trace.at(0), 0.0);
        assert_eq!(trace.at(29), 0.0);
        assert_eq!(trace.at(30), 500.0);
        assert_eq!(trace.at(59), 500.0);
        assert_eq!(trace.at(1000), 250.0);
        assert_eq!(trace.end(), 60);
        assert_eq!(trace.peak(), (30, 500.0));
    }

    #[test]
    fn is_zero_before_the_first_sample() {
        assert_eq!(parse("10,4").unwrap().at(5), 0.0);
    }

    #[test]
    fn names_the_line_at_fault() {
        let err = parse("0,1\n15;2\n").unwrap_err().to_string();
        assert_eq!(err, "t.csv:2: expected `seconds,queued`");
        let err = parse("0,1\n0,2\n").unwrap_err().to_string();
        assert_eq!(err, "t.csv:2: times must increase");
        assert!(parse("0,-1").is_err());
        assert!(parse("# nothing\n").is_err());
    }

    #[test]
    fn the_recorded_burst_loads() {
        let trace = Trace::load("testdata/queue-depth-burst.csv").unwrap();
        assert_eq!(trace.peak(), (390, 565.0));
        assert_eq!(trace.at(300), 504.0);
        assert!(trace.end() >= 3600);
    }
}
