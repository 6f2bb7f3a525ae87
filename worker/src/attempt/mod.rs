//! One attempt of one job: launch it, enforce its timeout, stop it on cancel or forced
//! shutdown, stream its output, and report the outcome.

mod end;
use end::report;

use crate::launch::{AttemptContext, LaunchResult, Launcher};
use crate::output::OutputSink;
use crate::running::{AttemptTokens, Interruption, RunningJobs};
use crate::Settings;
use common::queue::{ClaimedJob, Outcome, RedisQueue};
use common::WorkerId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why an attempt was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Timeout,
    Cancelled,
    Shutdown,
    /// The worker could not refresh its heartbeat: the job is handed back uncounted.
    Fenced,
    /// The lease is gone: the job belongs to another attempt now; nothing is reported.
    LeaseLost,
    /// A preemption victim: stopped with its grace, handed back uncounted.
    Preempted,
}

/// What the attempt needs from its worker.
pub(crate) struct AttemptDeps {
    pub(crate) queue: RedisQueue,
    pub(crate) worker: WorkerId,
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) running: RunningJobs,
    pub(crate) settings: Arc<Settings>,
    pub(crate) metrics: Arc<crate::metrics::WorkerMetrics>,
    /// Records attempt ends, several per Redis call when many end together.
    pub(crate) reporter: crate::report::Reporter,
    /// Fired when the shutdown grace period is over: running attempts are stopped and
    /// their jobs handed back to the queue.
    pub(crate) hard_stop: CancellationToken,
    /// The devices attempts are given (`--gpus`), and which pools this worker serves.
    pub(crate) devices: crate::devices::Devices,
    pub(crate) pools: Vec<String>,
}

/// Runs the attempt and reports it; the permit frees the worker slot when this returns.
/// The claim loop registered the attempt (with `tokens`); it leaves the registry once its
/// end is reported, so until then the lease check counts it as held here.
pub(crate) async fn run(
    job: ClaimedJob,
    tokens: AttemptTokens,
    deps: Arc<AttemptDeps>,
    _permit: OwnedSemaphorePermit,
    grant: crate::devices::Grant,
) {
    let span = tracing::info_span!("attempt", job_id = %job.id, attempt = job.attempt, worker = %deps.worker);
    async move {
        tracing::info!(priority = %job.priority, name = %job.spec.name, "attempt started");
        let mut secrets = job.spec.secret_values();
        secrets.extend(deps.launcher.secret_values(&job));
        let (sink, output) = OutputSink::start(deps.queue.clone(), job.id.clone(), secrets);
        let result = supervise(&job, &deps, &tokens, output, grant.devices()).await;
        // The process tree has ended: its devices are free. They go back before the end
        // is reported, so the claim that the report's wake-up triggers (here or on
        // another worker of this host) already counts them: a preemptor waiting for this
        // victim's GPUs starts at once rather than at the next idle timeout.
        drop(grant);
        if matches!(result, AttemptEnd::Finished(LaunchResult::Error(_))) {
            deps.metrics.launcher_errors.inc();
        }
        sink.finish().await;
        tokens.ended.cancel();
        report(&deps, &job, result).await;
        deps.running.remove(&job);
    }
    .instrument(span)
    .await
}

/// The end of an attempt, before it is turned into a queue outcome.
pub(crate) enum AttemptEnd {
    Finished(LaunchResult),
    Stopped(StopReason, LaunchResult),
}

async fn supervise(
    job: &ClaimedJob,
    deps: &AttemptDeps,
    tokens: &AttemptTokens,
    output: tokio::sync::mpsc::Sender<String>,
    devices: Option<&[String]>,
) -> AttemptEnd {
    let stop = CancellationToken::new();
    let detach = CancellationToken::new();
    let preempt_grace = Arc::new(std::sync::Mutex::new(None));
    let hurry = CancellationToken::new();
    let ctx = AttemptContext {
        preempt_grace: preempt_grace.clone(),
        hurry: hurry.clone(),
        job,
        checkpoint_dir: deps.settings.work_dir.join(job.id.as_str()).join("checkpoint"),
        output,
        stop: stop.clone(),
        detach: detach.clone(),
        devices,
    };
    let launched = deps.launcher.run(ctx);
    tokio::pin!(launched);
    let timeout = Duration::from_secs(job.spec.timeout_secs);
    let reason = tokio::select! {
        result = &mut launched => return AttemptEnd::Finished(result),
        _ = tokio::time::sleep(timeout) => StopReason::Timeout,
        why = tokens.interrupted() => match why {
            Interruption::Cancelled => StopReason::Cancelled,
            Interruption::Fenced => StopReason::Fenced,
            Interruption::LeaseLost => StopReason::LeaseLost,
            Interruption::Preempted => StopReason::Preempted,
        },
        _ = deps.hard_stop.cancelled() => StopReason::Shutdown,
    };
    tracing::info!(?reason, "stopping attempt");
    if reason == StopReason::Preempted {
        // The launcher gives the work this long to checkpoint and exit before SIGKILL.
        let grace = tokens.preemption().map(|(_, g)| g);
        *preempt_grace.lock().unwrap_or_else(|p| p.into_inner()) = grace;
    }
    if detaches(reason, deps.launcher.adoptable()) {
        detach.cancel();
    }
    stop.cancel();
    if reason == StopReason::Preempted {
        // The grace may outlast the lease: if the worker fences itself (or loses the
        // lease, or must shut down now) meanwhile, the work stops at once, so it has
        // ended before the reaper can hand the job to another worker.
        let urgent = async {
            tokio::select! {
                _ = tokens.fenced.cancelled() => {}
                _ = tokens.lost.cancelled() => {}
                _ = deps.hard_stop.cancelled() => {}
            }
        };
        tokio::select! {
            result = &mut launched => return AttemptEnd::Stopped(reason, result),
            _ = urgent => {
                tracing::info!("preemption grace cut short: the lease is at stake");
                hurry.cancel();
            }
        }
    }
    AttemptEnd::Stopped(reason, launched.await)
}

/// Whether a stop leaves the work running for the job's next attempt to adopt. Work that
/// outlives its launcher (a Kubernetes Job) is left, not deleted, when the lease is at
/// stake (fenced, lost) and when the worker shuts down (an HPA scale-down, a rollout):
/// the job is handed back, the next worker adopts the running Job, and the training goes
/// on with one copy all along. A local process cannot be adopted; it is always stopped.
fn detaches(reason: StopReason, adoptable: bool) -> bool {
    adoptable
        && matches!(
            reason,
            StopReason::Fenced | StopReason::LeaseLost | StopReason::Shutdown
        )
}

impl AttemptEnd {
    /// Maps the end of an attempt to what the queue records. `None` means "hand the job
    /// back without counting the attempt" (worker shutdown).
    pub(crate) fn outcome(&self, job: &ClaimedJob, settings: &Settings) -> Option<Outcome> {
        let retry_after = settings.retry_backoff.jittered(job.attempt);
        let failed = |exit_code, reason: String| Outcome::Failed {
            exit_code,
            reason,
            retry_after,
        };
        Some(match self {
            AttemptEnd::Finished(LaunchResult::Exited(0)) => Outcome::Succeeded,
            AttemptEnd::Finished(r @ LaunchResult::Exited(code)) => failed(Some(*code), describe(r)),
            AttemptEnd::Finished(r @ LaunchResult::Killed(_)) => failed(None, describe(r)),
            AttemptEnd::Finished(LaunchResult::Invalid(why)) => Outcome::Fatal { reason: why.clone() },
            AttemptEnd::Finished(LaunchResult::Error(why)) => failed(None, format!("launcher error: {why}")),
            AttemptEnd::Stopped(StopReason::Timeout, ended) => {
                let limit = humantime::format_duration(Duration::from_secs(job.spec.timeout_secs));
                failed(
                    None,
                    format!("timed out after {limit} (then {})", describe(ended)),
                )
            }
            AttemptEnd::Stopped(StopReason::Cancelled, _) => Outcome::Cancelled,
            // A victim that finished its work within the grace simply succeeded.
            AttemptEnd::Stopped(StopReason::Preempted, LaunchResult::Exited(0)) => Outcome::Succeeded,
            AttemptEnd::Stopped(StopReason::Preempted, _) => return None,
            AttemptEnd::Finished(LaunchResult::Requeue(_)) => return None,
            AttemptEnd::Stopped(StopReason::Shutdown | StopReason::Fenced | StopReason::LeaseLost, _) => {
                return None
            }
        })
    }

    /// Why the job is handed back without counting the attempt, when it is.
    pub(crate) fn release_reason(&self) -> Option<String> {
        match self {
            AttemptEnd::Stopped(StopReason::Shutdown, _) => Some("worker shutting down".into()),
            AttemptEnd::Stopped(StopReason::Fenced, _) => {
                Some("stopped by its worker, which could not refresh its heartbeat (fenced)".into())
            }
            AttemptEnd::Finished(LaunchResult::Requeue(why)) => {
                Some(format!("not started, handed back: {why}"))
            }
            // release.lua writes the preemptor and the GPU time lost into the history.
            AttemptEnd::Stopped(StopReason::Preempted, _) => Some(common::queue::PREEMPTED.into()),
            _ => None,
        }
    }
}

fn describe(result: &LaunchResult) -> String {
    match result {
        LaunchResult::Exited(code) => format!("exited with code {code}"),
        LaunchResult::Killed(sig) => format!("killed by {sig}"),
        LaunchResult::Invalid(why) | LaunchResult::Error(why) | LaunchResult::Requeue(why) => why.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::{detaches, AttemptEnd, StopReason};
    use crate::launch::LaunchResult;

    #[test]
    fn a_job_the_namespace_quota_refused_is_handed_back_uncounted() {
        let settings = crate::Settings {
            heartbeat_interval: std::time::Duration::from_secs(1),
            heartbeat_ttl: std::time::Duration::from_secs(60),
            fence_after: std::time::Duration::from_secs(50),
            reappear: std::time::Duration::from_secs(3),
            reap_interval: std::time::Duration::from_secs(1),
            cancel_check_interval: std::time::Duration::from_secs(1),
            retry_backoff: common::Backoff::new(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(2),
            ),
            work_dir: std::env::temp_dir(),
        };
        let job = common::queue::ClaimedJob {
            id: "j".parse().unwrap(),
            spec: common::JobSpec::new("j", "t", vec!["true".into()]),
            attempt: 1,
            attempt_limit: 1,
            priority: common::Priority::Normal,
            enqueued_at: 0,
            claim_token: String::new(),
        };
        let end = AttemptEnd::Finished(LaunchResult::Requeue("exceeded quota".into()));
        assert_eq!(
            end.outcome(&job, &settings),
            None,
            "no outcome: the attempt does not count"
        );
        assert_eq!(
            end.release_reason().as_deref(),
            Some("not started, handed back: exceeded quota")
        );
        let failed = AttemptEnd::Finished(LaunchResult::Error("API down".into()));
        assert!(failed.outcome(&job, &settings).is_some());

        // A preemption victim that finishes in its grace succeeds; one that stops is
        // handed back uncounted, as a preemption.
        let done = AttemptEnd::Stopped(StopReason::Preempted, LaunchResult::Exited(0));
        assert_eq!(
            done.outcome(&job, &settings),
            Some(common::queue::Outcome::Succeeded)
        );
        let stopped = AttemptEnd::Stopped(StopReason::Preempted, LaunchResult::Killed("SIGTERM".into()));
        assert_eq!(stopped.outcome(&job, &settings), None);
        assert_eq!(
            stopped.release_reason().as_deref(),
            Some(common::queue::PREEMPTED)
        );
        let failed = AttemptEnd::Stopped(StopReason::Preempted, LaunchResult::Exited(143));
        assert_eq!(failed.release_reason().as_deref(), Some(common::queue::PREEMPTED));
    }

    #[test]
    fn adoptable_work_is_left_running_when_the_worker_goes_or_loses_its_lease() {
        for reason in [StopReason::Fenced, StopReason::LeaseLost, StopReason::Shutdown] {
            assert!(detaches(reason, true), "{reason:?}");
            assert!(
                !detaches(reason, false),
                "a local process is always stopped: {reason:?}"
            );
        }
        for reason in [StopReason::Cancelled, StopReason::Timeout] {
            assert!(!detaches(reason, true), "{reason:?} stops the work itself");
        }
    }
}
