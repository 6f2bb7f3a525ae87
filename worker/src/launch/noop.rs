//! A launcher that runs nothing and succeeds at once: measures the queue, not the jobs.

use super::{AttemptContext, BoxFuture, LaunchResult, Launcher};

/// Succeeds every attempt immediately.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopLauncher;

impl Launcher for NoopLauncher {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn run<'a>(&'a self, _ctx: AttemptContext<'a>) -> BoxFuture<'a, LaunchResult> {
        Box::pin(async { LaunchResult::Exited(0) })
    }
}
