//! `scheduler demo`: the whole system on one machine, running real training jobs.
//!
//! Uses the Redis at `--redis-url` when one answers, else starts a private `redis-server`
//! on a free port; runs the scheduler loops in-process, starts worker processes, enqueues
//! a mixed-priority batch of trainer jobs (one of which fails once and resumes from its
//! checkpoint), shows them progress, and cleans up after itself.

use crate::cli::{Cli, DemoArgs, ServeArgs};
use crate::format::short_duration;
use crate::{CliError, CliResult};
use common::queue::RedisQueue;
use common::{JobId, JobRecord, JobSpec, JobState, Priority};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(cli: &Cli, args: &DemoArgs, shutdown: CancellationToken) -> CliResult<()> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (worker_bin, trainer_bin) = (bin_dir.join("worker"), bin_dir.join("trainer"));
    for b in [&worker_bin, &trainer_bin] {
        if !b.exists() {
            return Err(CliError::Infra(format!(
                "{} is missing; build everything first: cargo build --release --workspace --bins",
                b.display()
            )));
        }
    }
    let (url, _private_redis) = find_or_start_redis(&cli.redis.redis_url).await?;
    let namespace = format!("demo-{}", &JobId::generate().as_str()[24..]);
    let queue = RedisQueue::connect(&url, &namespace).await?;
    let scratch = std::env::temp_dir().join(format!("gpuq-{namespace}"));
    std::fs::create_dir_all(&scratch)?;
    println!(
        "Redis      {}{}",
        common::queue::mask_url(&url),
        if _private_redis.is_some() {
            " (private, started for this demo)"
        } else {
            ""
        }
    );
    println!("namespace  {namespace}");

    let loops = shutdown.child_token();
    let serve_args = ServeArgs {
        promote_interval: Duration::from_millis(200),
        reap_interval: Duration::from_secs(1),
        drain_interval: Duration::from_millis(100),
        redis_retention: Duration::ZERO,
        dead_retention: Duration::ZERO,
        store_retention: Duration::ZERO,
        retention_interval: Duration::from_secs(30),
        listen: None,
        quotas: None,
        quotas_interval: Duration::from_secs(10),
        cost_interval: Duration::from_secs(60),
        api: false,
        insecure_no_auth: false,
        api_max_waits: 64,
    };
    let store = common::store::JobStore::open(&common::store::sqlite_url(&scratch.join("jobs.db")))
        .await
        .map_err(crate::CliError::from)?;
    let app = crate::app::App::with_store(queue.clone(), store, cost::CostModel::builtin());
    let serve = tokio::spawn(crate::serve::run(app, serve_args, loops.clone()));
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(spawn_worker(
            &worker_bin,
            &url,
            &namespace,
            args.concurrency,
            &scratch,
            i,
        )?);
    }
    println!(
        "workers    {} processes x {} slots (logs in {})",
        args.workers,
        args.concurrency,
        scratch.display()
    );

    let specs = demo_jobs(&trainer_bin);
    println!(
        "enqueued   {} training jobs: 2 urgent, 4 normal, 4 background\n",
        specs.len()
    );
    let ids = queue.enqueue_batch(specs).await?.ids;
    let outcome = watch(&queue, &ids, args.timeout, &shutdown).await;

    loops.cancel();
    let _ = serve.await;
    for w in &mut workers {
        stop(w).await;
    }
    let records = outcome?;
    summarize(&records);
    for r in records.iter().filter(|r| r.attempt > 1) {
        let resumed = queue
            .logs(&r.id, 1000)
            .await?
            .into_iter()
            .find(|l| l.contains("\"resumed\""));
        let failure = r
            .events
            .iter()
            .find(|e| e.state == JobState::Failed)
            .and_then(|e| e.detail.clone());
        println!(
            "{}: attempt 1 failed ({}); attempt {} picked up its checkpoint: {}",
            r.spec.name,
            failure.unwrap_or_default(),
            r.attempt,
            resumed.unwrap_or_else(|| "no checkpoint found".into())
        );
    }
    if args.keep {
        println!(
            "\nkept: scheduler --redis-url {} --namespace {namespace} list",
            common::queue::mask_url(&url)
        );
    } else {
        queue.purge().await?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The demo batch: real trainer runs of different lengths and priorities, enqueued
/// background-first so the priority order is visible.
fn demo_jobs(trainer: &Path) -> Vec<JobSpec> {
    let job = |name: &str, p: Priority, model: &str, epochs: u32, extra: &[&str]| {
        let mut argv = vec![
            trainer.display().to_string(),
            "--epoch-delay-ms".into(),
            "400".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let mut s = JobSpec::new(name, "demo", argv);
        s.priority = p;
        s.model_type = model.into();
        s.epochs = epochs;
        s.max_attempts = 2;
        s.timeout_secs = 120;
        s
    };
    vec![
        job(
            "lr-sweep-0.05",
            Priority::Background,
            "logreg",
            4,
            &["--lr", "0.05"],
        ),
        job(
            "lr-sweep-0.1",
            Priority::Background,
            "logreg",
            4,
            &["--lr", "0.1"],
        ),
        job(
            "lr-sweep-0.2",
            Priority::Background,
            "logreg",
            4,
            &["--lr", "0.2"],
        ),
        job(
            "lr-sweep-0.4",
            Priority::Background,
            "logreg",
            4,
            &["--lr", "0.4"],
        ),
        job("nightly-retrain", Priority::Normal, "logreg", 6, &[]),
        job(
            "flaky-node-run",
            Priority::Normal,
            "logreg",
            5,
            &["--fail-at-epoch", "2"],
        ),
        job(
            "bigger-batch",
            Priority::Normal,
            "logreg",
            5,
            &["--batch-size", "128"],
        ),
        job(
            "more-data",
            Priority::Normal,
            "logreg",
            4,
            &["--samples", "20000"],
        ),
        job("incident-eval", Priority::Urgent, "logreg", 3, &[]),
        job("hotfix-retrain", Priority::Urgent, "logreg", 4, &[]),
    ]
}

/// Redraws a table of the jobs until all have ended (or the time runs out).
async fn watch(
    queue: &RedisQueue,
    ids: &[JobId],
    timeout: Duration,
    shutdown: &CancellationToken,
) -> CliResult<Vec<JobRecord>> {
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last_printed = Vec::new();
    loop {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            records.push(
                queue
                    .get(id)
                    .await?
                    .ok_or_else(|| CliError::Infra(format!("job {id} vanished")))?,
            );
        }
        let lines = render(&records);
        if tty {
            print!(
                "\x1b[{}A\x1b[J",
                if last_printed.is_empty() {
                    0
                } else {
                    last_printed.len()
                }
            );
            for l in &lines {
                println!("{l}");
            }
        } else {
            for (i, l) in lines.iter().enumerate() {
                if last_printed.get(i) != Some(l) && i > 0 {
                    println!("{l}");
                }
            }
        }
        last_printed = lines;
        if records.iter().all(|r| r.state.is_terminal()) {
            return Ok(records);
        }
        if start.elapsed() > timeout {
            return Err(CliError::Infra(format!(
                "the demo did not finish within {timeout:?}"
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.cancelled() => return Err(CliError::Infra("interrupted".into())),
        }
    }
}

fn render(records: &[JobRecord]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<4} {:<16} {:<10} {:<8} {:<11} {}",
        "PRI", "JOB", "STATE", "ATTEMPT", "PROGRESS", "NOTE"
    )];
    for r in records {
        let note = match r.state {
            JobState::Retrying | JobState::Dead => r.reason.clone().unwrap_or_default(),
            _ => String::new(),
        };
        lines.push(format!(
            "{:<4} {:<16} {:<10} {:<8} {:<11} {}",
            r.priority.as_str(),
            r.spec.name,
            r.state.as_str(),
            r.attempt,
            r.progress.as_deref().unwrap_or(""),
            note
        ));
    }
    lines
}

fn summarize(records: &[JobRecord]) {
    let mut started: Vec<(u64, &JobRecord)> = records
        .iter()
        .filter_map(|r| {
            r.events
                .iter()
                .find(|e| e.state == JobState::Running)
                .map(|e| (e.at, r))
        })
        .collect();
    // History times are milliseconds, and two workers woken by the one enqueue often
    // claim within the same one. Claims run one at a time in Redis, each taking the most
    // urgent jobs first, so within a millisecond the start order is priority, then FIFO.
    started.sort_by_key(|(at, r)| (*at, r.priority, r.enqueued_at));
    let order: Vec<String> = started
        .iter()
        .map(|(_, r)| format!("{}:{}", r.priority, r.spec.name))
        .collect();
    println!(
        "\nstart order (strict priority, FIFO within one): {}",
        order.join(" → ")
    );
    let ok = records.iter().filter(|r| r.state == JobState::Succeeded).count();
    let retried: Vec<&str> = records
        .iter()
        .filter(|r| r.attempt > 1)
        .map(|r| r.spec.name.as_str())
        .collect();
    let busiest = records
        .iter()
        .filter_map(|r| Some(r.finished_at? - r.started_at?))
        .max()
        .map(short_duration)
        .unwrap_or_default();
    println!(
        "{ok}/{} succeeded; retried after a failure: {retried:?}; longest attempt {busiest}",
        records.len()
    );
}

async fn find_or_start_redis(url: &str) -> CliResult<(String, Option<Child>)> {
    if RedisQueue::connect(url, "demo").await.is_ok() {
        return Ok((url.to_string(), None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            CliError::Infra(format!(
                "no Redis answers at {} and redis-server cannot be started ({e}); install it (apt-get install redis-server) or set REDIS_URL",
                common::queue::mask_url(url)
            ))
        })?;
    let private = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while RedisQueue::connect(&private, "demo").await.is_err() {
        if Instant::now() > deadline {
            return Err(CliError::Infra(
                "the private redis-server did not start within 10s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((private, Some(child)))
}

fn spawn_worker(
    bin: &Path,
    url: &str,
    ns: &str,
    concurrency: u32,
    scratch: &Path,
    i: u32,
) -> CliResult<Child> {
    let log = std::fs::File::create(scratch.join(format!("worker-{i}.log")))?;
    let work_dir: PathBuf = scratch.join("work");
    Ok(Command::new(bin)
        .args([
            "--redis-url",
            url,
            "--namespace",
            ns,
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args([
            "--heartbeat-interval",
            "1s",
            "--heartbeat-ttl",
            "10s",
            "--retry-backoff",
            "1s",
        ])
        .arg("--work-dir")
        .arg(work_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}

/// SIGTERM, then SIGKILL if the worker has not drained within 10 s.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
