//! `loadtests`: how fast the queue is and that it never loses work, in numbers.
//! Every run talks only to the Redis at `--redis-url` (127.0.0.1 by default) or to a
//! private redis-server it starts, uses a namespace of its own, and removes its keys.

mod bench;
mod env;
mod report;

use anyhow::Result;
use bench::drain::Store;
use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "loadtests",
    about = "Throughput, latency, scale and chaos benchmarks for gpuq"
)]
struct Cli {
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    redis_url: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Enqueue throughput: single enqueues and atomic batches.
    Enqueue {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        batch: Vec<usize>,
    },
    /// Drain throughput of no-op jobs through worker processes.
    Drain {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<u32>,
        #[arg(long, value_delimiter = ',', default_value = "64")]
        concurrency: Vec<u32>,
        /// Also write the job store while draining (postgres://... or sqlite://...).
        #[arg(long)]
        store: Option<String>,
    },
    /// Enqueue-to-start latency of an urgent job.
    Latency {
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Measure under ~5k jobs/s of background load instead of on an idle pool.
        #[arg(long)]
        background: bool,
    },
    /// Claim/enqueue latency and memory per job at several queue depths.
    Depth {
        #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
        depths: Vec<usize>,
        #[arg(long, default_value_t = 1000)]
        samples: usize,
    },
    /// Resident memory of an idle worker and of `scheduler serve`.
    Footprint,
    /// The HTTP API against the library in the same run: single enqueues from 16
    /// clients, batches of 1,000, latency, and an idle `serve --api`'s memory.
    Api {
        // Long enough (about a second per case) that one slow moment of a shared
        // 2-core machine does not decide a ratio.
        #[arg(long, default_value_t = 32_000)]
        singles: usize,
        #[arg(long, default_value_t = 60)]
        batches: usize,
    },
    /// Redis memory while N jobs pass through (worker, SQLite store, 1 s retention), and
    /// what is left once retention has removed them.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
    },
    /// What Redis itself does: redis-benchmark LPUSH/RPOP with and without pipelining.
    Ceiling {
        #[arg(long, default_value_t = 200_000)]
        requests: u32,
    },
    /// SIGKILL workers and restart Redis while jobs run; nothing may be lost.
    Chaos {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// How long each job runs (after recording that it ran).
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        job_time: Duration,
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        limit: Duration,
        /// Skip the Redis restart.
        #[arg(long)]
        no_redis_restart: bool,
    },
    /// Replay a job trace (CSV submit_s,duration_s,gpus,team[,priority][,gpu_type]) in
    /// accelerated real time on simulated workers, under a quota file and as isolated
    /// per-team FIFO partitions, and compare.
    Replay {
        #[arg(long)]
        trace: std::path::PathBuf,
        /// The quota file (as `scheduler quota apply` takes).
        #[arg(long)]
        quotas: std::path::PathBuf,
        /// Trace seconds per real second.
        #[arg(long, default_value_t = 60.0)]
        speedup: f64,
        #[arg(long, default_value_t = 1)]
        workers: u32,
        /// Write each run's schedule here (CSV).
        #[arg(long)]
        schedule: Option<std::path::PathBuf>,
    },
    /// Admission: drain under ten teams' quotas against the same without (interleaved),
    /// claim latency with 10^6 queued and 90% held up by quotas, and Kueue's scheduler
    /// performance test shape.
    Admission {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 2)]
        reps: usize,
        #[arg(long, default_value_t = 1_000_000)]
        depth: usize,
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Skip the Kueue-shaped replay (about a minute).
        #[arg(long)]
        no_kueue: bool,
    },
    /// Preemption: an urgent job onto a pool full of background jobs that exit within a
    /// second of SIGTERM; its start against its enqueue and against the victims' exit
    Preemption {
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// How long a victim takes to exit after SIGTERM, in ms.
        #[arg(long, default_value_t = 500)]
        exit_ms: u64,
    },
    /// The dashboard's overview at 10^4 queued and 10^3 running jobs: server time (p50,
    /// p95) and weight, against `GET /v1/status` of the same dashboard.
    Ui {
        #[arg(long, default_value_t = 10_000)]
        queued: usize,
        #[arg(long, default_value_t = 1_000)]
        running: usize,
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// gpuq's side of `loadtests/peers/run.sh`: JOBS no-op jobs enqueued in bulk while the
    /// workers run (library batches, then `scheduler batch`), timed until the last is
    /// done; and Redis commands per enqueued job.
    Peer {
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<u32>,
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
    },
    /// Write a synthetic trace for `replay`.
    Trace {
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        #[arg(long, default_value_t = 6)]
        teams: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mean time between submissions, in trace seconds.
        #[arg(long, default_value_t = 30.0)]
        mean_gap: f64,
    },
    /// Everything above with the README's settings.
    All,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let url = cli.redis_url.as_str();
    let rows = match cli.bench {
        Bench::Enqueue { jobs, batch } => bench::enqueue::run(url, jobs, &batch).await?,
        Bench::Drain {
            jobs,
            workers,
            concurrency,
            store,
        } => {
            let store = store.map(Store::Url).unwrap_or(Store::None);
            bench::drain::run(url, jobs, &workers, &concurrency, &store).await?
        }
        Bench::Latency { samples, background } => bench::latency::run(url, samples, background).await?,
        Bench::Depth { depths, samples } => bench::depth::run(url, &depths, samples).await?,
        Bench::Footprint => bench::footprint::run(url).await?,
        Bench::Api { singles, batches } => bench::api::run(url, singles, batches).await?,
        Bench::Memory { jobs } => bench::memory::run(url, jobs).await?,
        Bench::Ceiling { requests } => bench::ceiling::run(url, requests)?.0,
        Bench::Chaos {
            jobs,
            workers,
            job_time,
            limit,
            no_redis_restart,
        } => {
            let r = bench::chaos::run(jobs, workers, job_time, !no_redis_restart, limit).await?;
            let passed = r.passed();
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                report::print(&r.rows(), false);
                println!(
                    "lost {} / duplicated {} (bound {}) / kills {} / Redis restarts {} / {} of {} succeeded in {:.1} s",
                    r.lost, r.duplicated, r.in_flight_at_kills, r.kills, r.redis_restarts, r.succeeded, r.jobs, r.seconds
                );
            }
            anyhow::ensure!(
                passed,
                "chaos run failed: lost {} duplicated {} bound {}",
                r.lost,
                r.duplicated,
                r.in_flight_at_kills
            );
            return Ok(());
        }
        Bench::Replay {
            trace,
            quotas,
            speedup,
            workers,
            schedule,
        } => bench::replay::run(url, &trace, &quotas, speedup, workers, schedule.as_deref()).await?,
        Bench::Admission {
            jobs,
            reps,
            depth,
            samples,
            no_kueue,
        } => {
            let mut rows = bench::admission::throughput(url, jobs, reps).await?;
            rows.extend(bench::admission::blocked_claims(url, depth, samples).await?);
            if !no_kueue {
                rows.extend(bench::admission::kueue_shape(url).await?);
            }
            rows
        }
        Bench::Preemption { reps, exit_ms } => bench::preemption::run(url, reps, exit_ms).await?,
        Bench::Peer {
            jobs,
            workers,
            concurrency,
        } => bench::peer::run(url, jobs, &workers, concurrency).await?,
        Bench::Ui {
            queued,
            running,
            samples,
        } => bench::ui::run(url, queued, running, samples).await?,
        Bench::Trace {
            jobs,
            teams,
            seed,
            mean_gap,
        } => {
            print!("{}", bench::replay::synthetic(jobs, teams, seed, mean_gap));
            return Ok(());
        }
        Bench::All => all(url).await?,
    };
    report::print(&rows, cli.json);
    Ok(())
}

async fn all(url: &str) -> Result<Vec<report::Row>> {
    let (mut rows, lpush) = bench::ceiling::run(url, 200_000)?;
    rows.extend(bench::enqueue::run(url, 100_000, &[1000, 5_000]).await?);
    rows.extend(bench::drain::run(url, 100_000, &[1, 2, 4], &[64], &Store::None).await?);
    let tmp = std::env::temp_dir().join(format!("gpuq-bench-{}.db", std::process::id()));
    let sqlite = common::store::sqlite_url(&tmp);
    rows.extend(bench::drain::run(url, 50_000, &[1], &[64], &Store::Url(sqlite)).await?);
    let _ = std::fs::remove_file(&tmp);
    rows.extend(bench::latency::run(url, 1000, false).await?);
    rows.extend(bench::latency::run(url, 1000, true).await?);
    rows.extend(bench::depth::run(url, &[1000, 100_000, 1_000_000], 1000).await?);
    rows.extend(bench::footprint::run(url).await?);
    // Express the throughputs as a fraction of what Redis does with single LPUSHes.
    let fractions: Vec<report::Row> = rows
        .iter()
        .filter(|r| r.unit == "jobs/s")
        .map(|r| {
            report::Row::new(
                "ceiling",
                format!("{} / redis LPUSH", r.case),
                r.value / lpush,
                "ratio",
            )
        })
        .collect();
    rows.extend(fractions);
    Ok(rows)
}
