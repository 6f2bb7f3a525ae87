//! A launcher that holds its attempt for a time the job names and then succeeds: real
//! claims, real leases and real GPU accounting, no processes. `loadtests replay` drives
//! traces through it.

use super::{AttemptContext, BoxFuture, LaunchResult, Launcher};
use std::time::Duration;

/// The label a simulated job's run time is read from, in milliseconds.
pub const RUN_MS_LABEL: &str = "sim_run_ms";

/// Holds each attempt for its `sim_run_ms` label (0 when absent), then succeeds.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimLauncher;

impl Launcher for SimLauncher {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn run<'a>(&'a self, ctx: AttemptContext<'a>) -> BoxFuture<'a, LaunchResult> {
        Box::pin(async move {
            let ms = ctx
                .job
                .spec
                .labels
                .get(RUN_MS_LABEL)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => LaunchResult::Exited(0),
                _ = ctx.stop.cancelled() => LaunchResult::Killed("stopped".into()),
            }
        })
    }
}
