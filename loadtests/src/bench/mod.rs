//! One module per benchmark.

pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod ceiling;
pub(crate) mod chaos;
pub(crate) mod depth;
pub(crate) mod drain;
pub(crate) mod enqueue;
pub(crate) mod footprint;
pub(crate) mod latency;
pub(crate) mod memory;
pub(crate) mod peer;
pub(crate) mod preemption;
pub(crate) mod replay;
pub(crate) mod ui;

use common::{JobSpec, Priority};

/// A job for the no-op launcher: what it would run does not matter.
pub(crate) fn noop(p: Priority) -> JobSpec {
    let mut s = JobSpec::new("bench", "bench", vec!["true".into()]);
    s.priority = p;
    s
}

/// `n` jobs per second over `secs`.
pub(crate) fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}
