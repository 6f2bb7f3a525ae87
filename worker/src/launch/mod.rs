//! Launchers run one attempt of a job somewhere: a local process, a Kubernetes pod, or
//! nowhere at all (the no-op launcher that load tests use to measure the queue alone).

mod kube;
mod local;
mod noop;
mod sim;

pub use kube::{CheckpointVolume, KubeArgs, KubeConfig, KubeLauncher};
pub use local::LocalLauncher;
pub use noop::NoopLauncher;
pub use sim::{SimLauncher, RUN_MS_LABEL};

use common::queue::ClaimedJob;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A boxed future, so launchers can be chosen at run time behind `Arc<dyn Launcher>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a launcher needs for one attempt.
pub struct AttemptContext<'a> {
    /// The claimed job.
    pub job: &'a ClaimedJob,
    /// Directory for the job's checkpoints, exported as `GPUQ_CHECKPOINT_DIR`.
    pub checkpoint_dir: PathBuf,
    /// Each line of the job's output goes here.
    pub output: mpsc::Sender<String>,
    /// Fired when the attempt must stop (cancel, timeout, shutdown): the launcher stops the
    /// work, waits for it to end and returns.
    pub stop: CancellationToken,
    /// Fired before `stop` when the worker lost, or is about to lose, its lease: work that
    /// can outlive the worker and be adopted by the job's next attempt (a Kubernetes Job)
    /// is left running, untouched; work that cannot (a local process) is stopped as usual.
    pub detach: CancellationToken,
    /// The GPU devices this attempt may use, when the worker hands out devices (`--gpus`):
    /// exported as `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`. `None` leaves
    /// the job's view alone (a Kubernetes pod gets its GPUs from the cluster).
    pub devices: Option<&'a [String]>,
    /// Set before `stop` fires when the attempt is a preemption victim: the work gets
    /// this long after SIGTERM (a Kubernetes Job: this deletion grace) to checkpoint and
    /// exit, instead of the launcher's usual kill grace.
    pub preempt_grace: std::sync::Arc<std::sync::Mutex<Option<std::time::Duration>>>,
    /// Fired during a preemption's grace when the work must stop now after all (the
    /// lease is at stake, or the shutdown grace is over): the launcher stops waiting for
    /// the grace and stops the work as for any stop, within the worker's stop time.
    pub hurry: CancellationToken,
}

impl AttemptContext<'_> {
    /// The preemption grace, when `stop` is a preemption.
    pub fn preempt_grace(&self) -> Option<std::time::Duration> {
        *self.preempt_grace.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How an attempt ended, from the launcher's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchResult {
    /// The work ran to its end with this exit code.
    Exited(i32),
    /// The work was killed by a signal (ours after `stop`, or someone else's).
    Killed(String),
    /// The work could not be started and retrying will not help (missing program, bad spec).
    Invalid(String),
    /// The launcher failed for a reason retrying may fix (API unreachable).
    Error(String),
    /// The work never started, for a reason outside the job (the namespace's
    /// ResourceQuota is full): the job goes back to the head of its queue and the
    /// attempt does not count.
    Requeue(String),
}

/// Runs attempts. Implementations must stop the work when `stop` fires and must not
/// return before the work has ended (or been handed to something that outlives them).
pub trait Launcher: Send + Sync + 'static {
    /// Short name for heartbeats and logs.
    fn name(&self) -> &'static str;
    /// True when the work outlives this worker and the job's next attempt adopts it (a
    /// Kubernetes Job): then a worker that shuts down or loses its lease detaches from it
    /// instead of stopping it.
    fn adoptable(&self) -> bool {
        false
    }
    /// Runs one attempt to its end.
    fn run<'a>(&'a self, ctx: AttemptContext<'a>) -> BoxFuture<'a, LaunchResult>;
    /// The values of the job's secret references this launcher resolves itself (local
    /// files), so that the job's output is masked where it repeats them. A launcher that
    /// never sees them (Kubernetes resolves `secretKeyRef` in the pod) has none.
    fn secret_values(&self, _job: &ClaimedJob) -> Vec<String> {
        Vec::new()
    }
}

/// The environment every job gets on top of its own, so training code can find its
/// identity, its parameters and where to checkpoint.
pub fn job_environment(ctx: &AttemptContext<'_>) -> Vec<(String, String)> {
    let job = ctx.job;
    let mut env: Vec<(String, String)> = vec![
        ("GPUQ_JOB_ID".into(), job.id.to_string()),
        ("GPUQ_ATTEMPT".into(), job.attempt.to_string()),
        ("GPUQ_EPOCHS".into(), job.spec.epochs.to_string()),
        ("GPUQ_BATCH_SIZE".into(), job.spec.batch_size.to_string()),
        (
            "GPUQ_CHECKPOINT_DIR".into(),
            ctx.checkpoint_dir.display().to_string(),
        ),
        ("GPUQ_PRIORITY".into(), job.priority.to_string()),
        ("GPUQ_TEAM".into(), job.spec.team.clone()),
    ];
    if let Some(devices) = ctx.devices {
        // Exactly its devices; none at all hides every GPU from a job that asked for none.
        let list = devices.join(",");
        env.push(("CUDA_VISIBLE_DEVICES".into(), list.clone()));
        env.push((
            "NVIDIA_VISIBLE_DEVICES".into(),
            if list.is_empty() { "void".into() } else { list },
        ));
    }
    env
}
