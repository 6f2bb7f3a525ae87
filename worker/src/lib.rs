//! The worker: claims jobs from the queue and runs each attempt through a launcher,
//! keeping its leases alive with heartbeats and recovering those of dead workers.
//!
//! `run` only wires the parts together: `claim` (taking work), `attempt` (running one),
//! `report` (recording the end), `heartbeat` (liveness, reaping, cancel watch),
//! `launch` (local process, no-op; Kubernetes in its own module later).

mod attempt;
mod claim;
pub mod devices;
mod heartbeat;
pub mod launch;
mod metrics;
mod output;
mod report;
mod running;
pub mod supervise;

use common::cli::{LogFormat, RedisArgs};
use common::queue::RedisQueue;
use common::{Backoff, WorkerId};
use launch::{Launcher, LocalLauncher, NoopLauncher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which launcher runs the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LauncherKind {
    /// A local child process per attempt (argv, no shell).
    Local,
    /// A batch/v1 Job per attempt on Kubernetes (in-cluster config or kubeconfig).
    Kube,
    /// Runs nothing and succeeds: for measuring the queue itself.
    Noop,
    /// Holds each attempt for its `sim_run_ms` label, then succeeds: real claims and
    /// GPU accounting without processes (`loadtests replay`).
    Sim,
}

/// Command-line configuration of a worker process.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Runs GPU training jobs from the queue",
    args_override_self = true
)]
pub struct Config {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Jobs run at once by this process.
    #[arg(long, env = "GPUQ_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Where jobs run.
    #[arg(long, env = "GPUQ_LAUNCHER", value_enum, default_value_t = LauncherKind::Local)]
    pub launcher: LauncherKind,
    /// Worker id (default: HOST-PID-RANDOM).
    #[arg(long, env = "GPUQ_WORKER_ID")]
    pub id: Option<String>,
    /// How often the heartbeat is refreshed.
    #[arg(long, env = "GPUQ_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long a heartbeat lives (the lease): a worker silent this long is presumed dead
    /// and its jobs recovered. A worker that cannot refresh it stops its own attempts a
    /// little before (see the README). Default: 60s for local jobs, 2m for Kubernetes Jobs
    /// (a fenced kube worker leaves its Jobs running for the next attempt to adopt).
    #[arg(long, env = "GPUQ_HEARTBEAT_TTL", value_parser = humantime::parse_duration)]
    pub heartbeat_ttl: Option<Duration>,
    /// On SIGTERM, how long running jobs may take to finish before they are stopped and handed back.
    #[arg(long, env = "GPUQ_GRACE_PERIOD", default_value = "25s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// Time between SIGTERM and SIGKILL when a job's process is stopped.
    #[arg(long, env = "GPUQ_KILL_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: Duration,
    /// Delay before the first retry of a failed attempt; doubles with each attempt.
    #[arg(long, env = "GPUQ_RETRY_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Ceiling of the retry delay.
    #[arg(long, env = "GPUQ_RETRY_BACKOFF_MAX", default_value = "10m", value_parser = humantime::parse_duration)]
    pub retry_backoff_max: Duration,
    /// Longest an idle worker blocks on Redis before looking again (due retries, lost wake-ups).
    #[arg(long, env = "GPUQ_IDLE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How often running jobs are checked for cancel requests.
    #[arg(long, env = "GPUQ_CANCEL_CHECK_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub cancel_check_interval: Duration,
    /// Directory for job checkpoints (GPUQ_CHECKPOINT_DIR = WORK_DIR/JOB_ID/checkpoint),
    /// each job's directory mode 0700. Default: $XDG_STATE_HOME/gpuq/work, else
    /// ~/.local/state/gpuq/work (not a world-writable place like /tmp).
    #[arg(long, env = "GPUQ_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// A variable of the worker's environment that local jobs also get (repeatable). Jobs
    /// start from a cleared environment: PATH, HOME, LANG, LC_*, TZ, LD_LIBRARY_PATH,
    /// CUDA_* and NVIDIA_* are passed; REDIS_URL, DATABASE_URL and the rest are not.
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Where local jobs' secret references are read: `SECRET/KEY` of team T is the file
    /// DIR/T/SECRET/KEY (a job reads only its own team's).
    #[arg(long, env = "GPUQ_SECRETS_DIR")]
    pub secrets_dir: Option<std::path::PathBuf>,
    /// GPU devices this worker gives to its jobs: a list (`0,1,2,3`, or GPU UUIDs), `all`
    /// (from CUDA_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES when set, else `nvidia-smi
    /// -L`), or `none`. It claims only jobs whose GPUs fit its free devices, and gives
    /// each attempt exactly its own in CUDA_VISIBLE_DEVICES. A local worker without it
    /// claims only jobs that need no GPU. Not for Kubernetes workers (the cluster places
    /// the pods).
    #[arg(long, env = "GPUQ_GPUS")]
    pub gpus: Option<devices::GpuArg>,
    /// A pool whose jobs this worker claims (repeatable, or comma-separated). Default:
    /// `default` (jobs that name no gpu_type) for a local worker, every pool for the
    /// others. Its devices count in the capacity of the first pool named.
    #[arg(long = "pool", env = "GPUQ_POOLS", value_delimiter = ',')]
    pub pools: Vec<String>,
    #[command(flatten)]
    pub kube: launch::KubeArgs,
    /// Address of the HTTP server for /metrics, /healthz and /readyz. Default 0.0.0.0:9091,
    /// or a free port when another worker on this host has it (the address chosen is in
    /// the startup log and the heartbeat); an address given here must be free.
    #[arg(long, env = "GPUQ_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Log format (auto: JSON when not on a terminal inside a container).
    #[arg(long, env = "GPUQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// Settings derived from the configuration, shared by the worker's tasks.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub heartbeat_ttl: Duration,
    /// How long after its last acknowledged heartbeat the worker stops all its attempts.
    pub fence_after: Duration,
    /// How long the worker needs, once Redis is back, to heartbeat and stop what it lost.
    pub reappear: Duration,
    pub reap_interval: Duration,
    pub cancel_check_interval: Duration,
    pub retry_backoff: Backoff,
    pub work_dir: PathBuf,
}

impl Config {
    /// The lease length: the flag, else the launcher's default.
    pub fn heartbeat_ttl(&self) -> Duration {
        self.heartbeat_ttl.unwrap_or(match self.launcher {
            LauncherKind::Kube => Duration::from_secs(120),
            LauncherKind::Local | LauncherKind::Noop | LauncherKind::Sim => Duration::from_secs(60),
        })
    }

    /// The longest stopping an attempt may take: local processes get SIGTERM, then
    /// SIGKILL after the kill grace; a Kubernetes Job is detached, not deleted, when the
    /// lease is at stake.
    fn stop_time(&self) -> Duration {
        match self.launcher {
            LauncherKind::Local => self.kill_grace + Duration::from_millis(500),
            LauncherKind::Kube => Duration::from_secs(2),
            LauncherKind::Noop | LauncherKind::Sim => Duration::ZERO,
        }
    }

    /// When the worker fences itself: the lease minus the stop time minus one heartbeat
    /// interval of safety margin.
    fn fence_after(&self) -> Option<Duration> {
        self.heartbeat_ttl()
            .checked_sub(self.stop_time())?
            .checked_sub(self.heartbeat_interval)
            .filter(|d| *d >= self.heartbeat_interval)
    }

    /// Checks what clap cannot; called once at start.
    pub fn validate(&self) -> Result<(), String> {
        if self.fence_after().is_none() {
            return Err(format!(
                "--heartbeat-ttl ({}) must be at least twice --heartbeat-interval ({}) plus the time stopping a job takes ({}): \
                 a worker that cannot heartbeat stops its jobs before its lease ends",
                humantime::format_duration(self.heartbeat_ttl()),
                humantime::format_duration(self.heartbeat_interval),
                humantime::format_duration(self.stop_time())
            ));
        }
        if let Some(id) = &self.id {
            // Ids are parts of Redis keys and of tab-separated history entries.
            if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "--id {id:?} must be 1 to 200 characters without spaces or control characters"
                ));
            }
        }
        if self.gpus.is_some() && self.launcher == LauncherKind::Kube {
            return Err(
                "--gpus is for workers that run jobs on their own devices; a Kubernetes worker's pods get GPUs from the cluster"
                    .into(),
            );
        }
        for pool in &self.pools {
            if !common::is_safe_name(pool) {
                return Err(format!(
                    "--pool {pool:?} must be 1 to 63 letters, digits, '-', '_' or '.'"
                ));
            }
        }
        if self.heartbeat_interval.is_zero()
            || self.idle_timeout.is_zero()
            || self.cancel_check_interval.is_zero()
        {
            return Err("intervals must be longer than zero".into());
        }
        Ok(())
    }

    fn settings(&self) -> Settings {
        Settings {
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_ttl: self.heartbeat_ttl(),
            fence_after: self.fence_after().unwrap_or(self.heartbeat_interval),
            reappear: self.heartbeat_interval * 2 + self.stop_time(),
            reap_interval: self.heartbeat_interval,
            cancel_check_interval: self.cancel_check_interval,
            retry_backoff: Backoff::new(self.retry_backoff, self.retry_backoff_max),
            work_dir: self.work_dir.clone().unwrap_or_else(default_work_dir),
        }
    }

    /// The devices this worker hands out, found once at start.
    fn devices(&self) -> Result<devices::Devices, Error> {
        use devices::{Devices, GpuArg};
        Ok(match (&self.gpus, self.launcher) {
            (Some(GpuArg::List(ids)), _) => Devices::managed(ids.clone()),
            (Some(GpuArg::All), _) => Devices::managed(
                devices::detect(|k| std::env::var(k).ok())
                    .map_err(|e| Error::Queue(common::Error::InvalidInput(e)))?,
            ),
            (Some(GpuArg::None), _) | (None, LauncherKind::Local) => Devices::managed(Vec::new()),
            (None, _) => Devices::unmanaged(),
        })
    }

    /// The pools this worker claims from (empty: all).
    fn pools(&self) -> Vec<String> {
        if !self.pools.is_empty() {
            return self.pools.clone();
        }
        match self.launcher {
            LauncherKind::Local => vec![common::admission::DEFAULT_POOL.to_string()],
            _ => Vec::new(),
        }
    }

    async fn launcher(&self) -> Result<Arc<dyn Launcher>, Error> {
        Ok(match self.launcher {
            LauncherKind::Local => Arc::new(LocalLauncher {
                kill_grace: self.kill_grace,
                pass_env: self.pass_env.clone(),
                supervisor: std::env::current_exe().ok(),
                secrets_dir: self.secrets_dir.clone(),
            }),
            LauncherKind::Kube => Arc::new(
                launch::KubeLauncher::connect(self.kube.to_config())
                    .await
                    .map_err(|e| Error::Launcher(format!("cannot reach the Kubernetes API: {e}")))?,
            ),
            LauncherKind::Noop => Arc::new(NoopLauncher),
            LauncherKind::Sim => Arc::new(launch::SimLauncher),
        })
    }
}

/// The default metrics address. Several workers on one GPU box are normal (one per set of
/// devices), so when it is taken the worker takes a free port instead.
const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9091";

async fn metrics_listener(addr: Option<&str>) -> Result<tokio::net::TcpListener, Error> {
    if let Some(addr) = addr {
        return common::http::bind(addr)
            .await
            .map_err(|e| Error::Queue(common::Error::InvalidInput(e)));
    }
    match tokio::net::TcpListener::bind(DEFAULT_METRICS_ADDR).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let l = common::http::bind("0.0.0.0:0")
                .await
                .map_err(|e| Error::Queue(common::Error::InvalidInput(e)))?;
            tracing::info!(taken = DEFAULT_METRICS_ADDR, chosen = ?l.local_addr().ok(),
                "the default metrics port is taken (another worker on this host?); serving metrics on a free port");
            Ok(l)
        }
        Err(e) => Err(Error::Queue(common::Error::InvalidInput(format!(
            "cannot listen on {DEFAULT_METRICS_ADDR}: {e}"
        )))),
    }
}

/// `$XDG_STATE_HOME/gpuq/work`, else `~/.local/state/gpuq/work`; without a home, a
/// directory of this user's under the temporary directory.
fn default_work_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|base| base.join("gpuq").join("work"))
        .unwrap_or_else(|| std::env::temp_dir().join("gpuq-work"))
}

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The queue (Redis) failed, or a setting was invalid.
    #[error(transparent)]
    Queue(#[from] common::Error),
    /// The launcher could not be set up (e.g. the Kubernetes API is unreachable).
    #[error("{0}")]
    Launcher(String),
}

impl Error {
    /// Process exit code: 2 for bad settings, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Queue(e) if e.is_bad_input() => 2,
            _ => 1,
        }
    }
}

/// Runs the worker until `shutdown` fires, then drains: stop claiming, let running jobs
/// finish within the grace period, stop and hand back the rest, stop heartbeats.
pub async fn run(config: Config, queue: RedisQueue, shutdown: CancellationToken) -> Result<(), Error> {
    let settings = Arc::new(config.settings());
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let worker = config
        .id
        .clone()
        .map(WorkerId::from_raw)
        .unwrap_or_else(|| WorkerId::generate(&host));
    let launcher = config.launcher().await?;
    let devices = config.devices()?;
    let pools = config.pools();
    let running = running::RunningJobs::default();
    let draining = Arc::new(AtomicBool::new(false));
    let listener = metrics_listener(config.metrics_addr.as_deref()).await?;
    let mut info = common::WorkerInfo::starting(&worker, host, launcher.name(), config.concurrency);
    info.metrics_addr = listener.local_addr().ok().map(|a| a.to_string());
    info.pools = pools.clone();
    info.gpus = devices.all();
    let beat = heartbeat::Beat {
        info,
        running: running.clone(),
        draining: draining.clone(),
        devices: devices.clone(),
    };
    // The first heartbeat must exist before the first claim, or the reaper could take
    // the lease of a worker it has never seen alive.
    let liveness = heartbeat::Liveness::new(tokio::time::Instant::now());
    heartbeat::publish(&queue, &beat, &settings, &liveness).await?;
    tracing::info!(worker = %worker, concurrency = config.concurrency, launcher = launcher.name(),
        lease = ?settings.heartbeat_ttl, fence_after = ?settings.fence_after,
        metrics = ?listener.local_addr().ok(), "worker started");
    match devices.free() {
        Some(0) => tracing::info!(pools = ?pools,
            "no GPU devices (--gpus): this worker claims only jobs that need no GPU"),
        Some(n) => tracing::info!(pools = ?pools, gpus = ?devices.all(),
            "giving each job its own of these {n} GPU devices"),
        None => {
            tracing::info!(pools = ?pools, "holding no devices: only admission limits the GPUs of what it claims")
        }
    }

    let metrics = Arc::new(metrics::WorkerMetrics::new(config.concurrency));
    let background = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(common::http::serve(
        listener,
        endpoints(&queue, &metrics, &running),
        background.clone(),
    ));
    tasks.spawn(heartbeat::heartbeat_loop(
        queue.clone(),
        beat,
        settings.clone(),
        liveness.clone(),
        metrics.clone(),
        background.clone(),
    ));
    tasks.spawn(heartbeat::fence_loop(
        running.clone(),
        liveness.clone(),
        settings.clone(),
        background.clone(),
    ));
    tasks.spawn(heartbeat::reaper_loop(
        queue.clone(),
        settings.clone(),
        background.clone(),
    ));
    tasks.spawn(heartbeat::cancel_watch_loop(
        queue.clone(),
        running.clone(),
        settings.clone(),
        background.clone(),
    ));

    let reporter_stop = CancellationToken::new();
    let (reporter, reporter_task) = report::Reporter::start(
        queue.clone(),
        worker.clone(),
        metrics.clone(),
        reporter_stop.clone(),
    );
    let deps = Arc::new(attempt::AttemptDeps {
        queue: queue.clone(),
        worker: worker.clone(),
        launcher,
        running: running.clone(),
        settings: settings.clone(),
        metrics: metrics.clone(),
        reporter,
        hard_stop: CancellationToken::new(),
        devices,
        pools,
    });
    let slots = Arc::new(Semaphore::new(config.concurrency as usize));
    let attempts = TaskTracker::new();
    claim::claim_loop(deps.clone(), slots, &attempts, config.idle_timeout, shutdown).await;

    draining.store(true, Ordering::Relaxed);
    attempts.close();
    // Work the next worker adopts (Kubernetes Jobs) is handed back at once, still running:
    // waiting for a training run to end would only hold up a scale-down or a rollout.
    let grace = if deps.launcher.adoptable() {
        Duration::ZERO
    } else {
        config.grace_period
    };
    tracing::info!(running = running.len(), ?grace, "draining");
    if tokio::time::timeout(grace, attempts.wait()).await.is_err() {
        tracing::warn!(
            running = running.len(),
            "grace period over; stopping running jobs and handing them back"
        );
        deps.hard_stop.cancel();
        attempts.wait().await;
    }
    // Every attempt has returned, so every end it reported has been recorded.
    reporter_stop.cancel();
    let _ = reporter_task.await;
    background.cancel();
    tasks.close();
    tasks.wait().await;
    if let Err(e) = queue.remove_heartbeat(&worker).await {
        tracing::warn!(error = %e, "could not remove the heartbeat; it expires by itself");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// /metrics renders this worker's registry (slots busy counted at scrape time);
/// /readyz answers when Redis does.
fn endpoints(
    queue: &RedisQueue,
    metrics: &Arc<metrics::WorkerMetrics>,
    running: &running::RunningJobs,
) -> common::http::Endpoints {
    let (m, r) = (metrics.clone(), running.clone());
    let q = queue.clone();
    common::http::Endpoints {
        metrics: Arc::new(move || {
            let (m, r) = (m.clone(), r.clone());
            Box::pin(async move {
                m.slots_busy.set(r.len() as i64);
                common::http::render(&m.registry)
            })
        }),
        ready: Arc::new(move || {
            let q = q.clone();
            Box::pin(async move { q.ping().await.map_err(|e| format!("Redis: {e}")) })
        }),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Config::command().debug_assert();
    }

    #[test]
    fn worker_ids_must_fit_keys_and_history_entries() {
        use clap::Parser;
        let check = |id: &str| {
            super::Config::try_parse_from(["worker", "--id", id])
                .unwrap()
                .validate()
        };
        assert!(check("gpu-node-7_a.1").is_ok());
        for bad in ["has space", "tab\there", ""] {
            let err = check(bad).unwrap_err();
            assert!(err.starts_with("--id"), "{err}");
        }
    }
}
