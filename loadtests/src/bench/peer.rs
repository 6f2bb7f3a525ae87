//! gpuq's side of the side-by-side with its peers (`loadtests/peers/run.sh`): no-op jobs
//! enqueued in bulk while the workers run, timed from the start of the enqueue until the
//! last one is done, by the library (`enqueue_batch`, 1,000 a call) and by the CLI
//! (`scheduler batch` of a file of specs). Also what an enqueue costs Redis: commands per
//! enqueued job, from `INFO commandstats`, with no worker running.
//!
//! No `serve` runs, as for the peers, which have no store: the outbox keeps every
//! transition (well under its bound at these sizes).

use super::{noop, rate};
use crate::env::{bin, command_calls, redis_cpu_secs, wait_until, Bench};
use crate::report::{percentile, Row};
use anyhow::{bail, Result};
use common::Priority;
use redis::AsyncCommands;
use std::time::{Duration, Instant};

const BATCH: usize = 1000;

/// Jobs timed one at a time for the pickup latency, as the peers' harness programs do.
const PICKUP_SAMPLES: usize = 100;

/// How the jobs are enqueued.
#[derive(Clone, Copy)]
enum Path {
    /// `enqueue_batch` of `BATCH`, one call after another.
    Library,
    /// `enqueue_chunked_as` of all the jobs in chunks of `BATCH`, each prepared while
    /// Redis runs the one before.
    Chunked,
    Cli,
}

async fn once(url: &str, jobs: usize, workers: u32, concurrency: u32, path: Path) -> Result<Vec<Row>> {
    let mut b = Bench::new(url, "peer").await?;
    let file = b.dir.join("specs.jsonl");
    let store = common::store::sqlite_url(&b.dir.join("jobs.db"));
    if let Path::Cli = path {
        let line = serde_json::to_string(&noop(Priority::Normal))?;
        std::fs::write(&file, format!("{line}\n").repeat(jobs))?;
        // The job store the CLI checks budgets in exists, as it does wherever `serve`
        // runs: creating it is a first run's cost, not an enqueue's.
        common::store::JobStore::open(&store).await?;
    }
    for _ in 0..workers {
        b.worker("noop", concurrency, &[])?;
    }
    b.wait_workers(workers as usize).await?;
    let client = redis::Client::open(url)?;
    let con = client.get_multiplexed_async_connection().await?;
    let finished = b.queue.keys().finished();

    let t0 = Instant::now();
    let label = match path {
        Path::Library => {
            enqueue_in_batches(&b, jobs).await?;
            format!("library enqueue_batch x {BATCH}")
        }
        Path::Chunked => {
            let specs = (0..jobs).map(|_| noop(Priority::Normal)).collect();
            let done = b.queue.enqueue_chunked_as(specs, "", BATCH).await;
            if let Some(e) = done.failure {
                bail!("enqueue_chunked_as: {e}");
            }
            format!("library enqueue_chunked_as x {BATCH}")
        }
        Path::Cli => {
            let out = tokio::process::Command::new(bin("scheduler")?)
                // More than one atomic step takes: in atomic chunks of 5,000.
                .args(["batch", "--chunked"])
                .arg(&file)
                .env("REDIS_URL", url)
                .env("GPUQ_NAMESPACE", &b.ns)
                .env("DATABASE_URL", &store)
                .output()
                .await?;
            if !out.status.success() {
                bail!("scheduler batch: {}", String::from_utf8_lossy(&out.stderr));
            }
            format!("scheduler batch of {jobs}")
        }
    };
    let enqueue_secs = t0.elapsed().as_secs_f64();
    wait_until("the last job to finish", Duration::from_secs(600), || {
        let (mut con, key) = (con.clone(), finished.clone());
        async move { Ok(con.zcard::<_, usize>(&key).await? >= jobs) }
    })
    .await?;
    let all_secs = t0.elapsed().as_secs_f64();
    // Pickup on the idle workers, once per worker count (with the library's run).
    let pickup = match path {
        Path::Library => {
            Some(super::latency::samples_on(&b, url, PICKUP_SAMPLES, super::latency::Clock::Client).await?)
        }
        _ => None,
    };
    b.cleanup().await?;
    let case = format!("{label}, {workers} worker(s) x {concurrency}");
    let mut rows = Vec::new();
    if let Some(lat) = pickup {
        for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
            rows.push(
                Row::new(
                    "peer",
                    format!("{workers} worker(s) x {concurrency}: pickup {name}"),
                    percentile(&lat, p),
                    "ms",
                )
                .note(format!(
                    "{PICKUP_SAMPLES} jobs one at a time, from before the enqueue call until the claim is seen"
                )),
            );
        }
    }
    rows.extend([
        Row::new(
            "peer",
            format!("{case}: enqueue"),
            rate(jobs, enqueue_secs),
            "jobs/s",
        ),
        Row::new("peer", format!("{case}: drain"), rate(jobs, all_secs), "jobs/s")
            .note("from the start of the enqueue until the last job is done"),
    ]);
    Ok(rows)
}

/// `jobs` no-op jobs through the library, `BATCH` a call.
async fn enqueue_in_batches(b: &Bench, jobs: usize) -> Result<()> {
    let specs: Vec<_> = (0..BATCH).map(|_| noop(Priority::Normal)).collect();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(BATCH);
        b.queue.enqueue_batch(specs[..n].to_vec()).await?;
        left -= n;
    }
    Ok(())
}

/// Redis commands per enqueued job (those the scripts run included), no worker running.
async fn commands_per_job(url: &str, jobs: usize) -> Result<Vec<Row>> {
    let b = Bench::new(url, "peer").await?;
    let before = command_calls(url).await?;
    let cpu_before = redis_cpu_secs(url).await?;
    let t0 = Instant::now();
    enqueue_in_batches(&b, jobs).await?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = redis_cpu_secs(url).await? - cpu_before;
    let after = command_calls(url).await?;
    b.cleanup().await?;
    let mut by: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    by.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    let total: u64 = by.iter().map(|(_, d)| d).sum();
    let detail = by
        .iter()
        .take(6)
        .map(|(k, d)| format!("{k} {:.3}", *d as f64 / jobs as f64))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(vec![
        Row::new(
            "peer",
            format!("library enqueue_batch x {BATCH}, no worker running: enqueue"),
            rate(jobs, secs),
            "jobs/s",
        )
        .note(format!(
            "Redis busy {:.0}% of the time, {:.2} µs of its CPU per job",
            100.0 * cpu / secs.max(1e-9),
            cpu * 1e6 / jobs as f64
        )),
        Row::new(
            "peer",
            format!("Redis commands per enqueued job (batches of {BATCH})"),
            total as f64 / jobs as f64,
            "cmds",
        )
        .note(detail),
    ])
}

pub(crate) async fn run(url: &str, jobs: usize, workers: &[u32], concurrency: u32) -> Result<Vec<Row>> {
    let mut rows = commands_per_job(url, jobs).await?;
    for &w in workers {
        rows.extend(once(url, jobs, w, concurrency, Path::Library).await?);
        rows.extend(once(url, jobs, w, concurrency, Path::Chunked).await?);
    }
    rows.extend(once(url, jobs, 1, concurrency, Path::Cli).await?);
    Ok(rows)
}
