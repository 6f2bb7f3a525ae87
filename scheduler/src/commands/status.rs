//! `status` (the dashboard) and `workers`.

use super::jobs::elapsed;
use crate::format::{age, print_json, short_duration};
use crate::CliResult;
use common::queue::RedisQueue;
use common::{now_ms, JobRecord, JobState, ListFilter, Priority, WorkerInfo};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Throughput is measured over this window for the queue ETAs.
const RATE_WINDOW_MS: u64 = 10 * 60 * 1000;

/// Everything the dashboard shows; `--json` prints exactly this.
#[derive(Debug, Serialize)]
struct Dashboard {
    generated_at: u64,
    health: Health,
    capacity: Capacity,
    queues: Vec<QueueRow>,
    retrying: u64,
    dead: u64,
    /// Jobs finished per minute over the last ten minutes.
    throughput_per_min: f64,
    running: Vec<JobRecord>,
    recent_failures: Vec<JobRecord>,
    workers: Vec<WorkerInfo>,
    /// Each pool's GPUs: capacity, used, reserved, free.
    pools: Vec<super::quota::PoolRow>,
    /// Each team's GPUs in each pool against its quota, with what it borrowed.
    teams: Vec<super::quota::TeamRow>,
}

#[derive(Debug, Serialize)]
struct Health {
    redis_ok: bool,
    redis_ms: f64,
    store: String,
    store_ok: bool,
    store_error: Option<String>,
    /// Transitions waiting in the outbox for the store.
    store_pending: u64,
}

#[derive(Debug, Serialize)]
struct Capacity {
    busy: u64,
    total: u64,
}

#[derive(Debug, Serialize)]
struct QueueRow {
    priority: Priority,
    depth: u64,
    /// Of `depth`, jobs held up by their team, group or pool.
    parked: u64,
    oldest_age_ms: Option<u64>,
    /// Estimated time until the last job of this priority starts, at the recent rate.
    eta_ms: Option<u64>,
}

pub(crate) async fn status(
    queue: &RedisQueue,
    store_url: &str,
    json: bool,
    watch: Option<Duration>,
    shutdown: &CancellationToken,
) -> CliResult<()> {
    loop {
        let d = collect(queue, store_url).await?;
        if json {
            print_json(&d);
        } else {
            if watch.is_some() {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", render(&d, queue.keys().prefix()));
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn collect(queue: &RedisQueue, store_url: &str) -> CliResult<Dashboard> {
    let t = Instant::now();
    queue.ping().await?;
    let redis_ms = t.elapsed().as_secs_f64() * 1000.0;
    let status = queue.status().await?;
    let (store_ok, store_error) = match crate::open_store(store_url).await {
        Ok(s) => match s.ping().await {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        },
        Err(e) => (false, Some(e.to_string())),
    };
    let now = now_ms();
    let finished = queue.finished_since(now.saturating_sub(RATE_WINDOW_MS)).await?;
    let per_ms = finished as f64 / RATE_WINDOW_MS as f64;
    let mut ahead = 0;
    let queues = status
        .priorities
        .iter()
        .map(|p| {
            ahead += p.depth;
            QueueRow {
                priority: p.priority,
                depth: p.depth,
                parked: p.parked,
                oldest_age_ms: p.oldest_enqueued_at.map(|t| now.saturating_sub(t)),
                eta_ms: (p.depth > 0 && per_ms > 0.0).then(|| (ahead as f64 / per_ms) as u64),
            }
        })
        .collect();
    let running = queue
        .list(&ListFilter {
            state: Some(JobState::Running),
            limit: 50,
            ..ListFilter::default()
        })
        .await?
        .into_iter()
        .map(JobRecord::redacted)
        .collect();
    let recent_failures = queue
        .recent_failures(10)
        .await?
        .into_iter()
        .map(JobRecord::redacted)
        .collect();
    let config = queue.admission().await?.unwrap_or_default();
    let (pools, teams) = super::quota::rows(&config, &status.pools, &status.usage);
    Ok(Dashboard {
        pools,
        teams,
        generated_at: now,
        health: Health {
            redis_ok: true,
            redis_ms,
            store: common::queue::mask_url(store_url),
            store_ok,
            store_error,
            store_pending: status.outbox,
        },
        capacity: Capacity {
            busy: status.running,
            total: status.workers.iter().map(|w| u64::from(w.concurrency)).sum(),
        },
        queues,
        retrying: status.retrying,
        dead: status.dead,
        throughput_per_min: per_ms * 60_000.0,
        running,
        recent_failures,
        workers: status.workers,
    })
}

fn render(d: &Dashboard, prefix: &str) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let h = &d.health;
    let _ = writeln!(o, "gpuq {prefix}   {}", crate::format::timestamp(d.generated_at));
    let store = match (&h.store_ok, &h.store_error) {
        (true, _) => format!("store ok ({} transitions waiting)", h.store_pending),
        (false, e) => format!("store DOWN: {}", e.as_deref().unwrap_or("unknown")),
    };
    let _ = writeln!(
        o,
        "health     redis ok ({:.1} ms)   {store}   workers {} live",
        h.redis_ms,
        d.workers.len()
    );
    let pct = (100 * d.capacity.busy).checked_div(d.capacity.total).unwrap_or(0);
    let _ = writeln!(
        o,
        "capacity   {} of {} slots busy ({pct}%)   throughput {:.1} jobs/min",
        d.capacity.busy, d.capacity.total, d.throughput_per_min
    );
    let _ = writeln!(o, "\nqueues{:>15}  {:>8}  {:>8}", "DEPTH", "OLDEST", "ETA");
    for q in &d.queues {
        let _ = writeln!(
            o,
            "  {} {:<10} {:>5}  {:>8}  {:>8}",
            q.priority,
            q.priority.alias(),
            q.depth,
            q.oldest_age_ms.map(short_duration).unwrap_or_else(|| "-".into()),
            match (q.depth, q.eta_ms) {
                (0, _) => "-".to_string(),
                (_, Some(ms)) => format!("~{}", short_duration(ms)),
                (_, None) => "unknown".to_string(),
            }
        );
    }
    let parked: u64 = d.queues.iter().map(|q| q.parked).sum();
    let _ = writeln!(
        o,
        "  retrying {}   dead-lettered {}   held up by quotas or caps {}",
        d.retrying, d.dead, parked
    );
    super::quota::render_rows(&mut o, &d.pools, &d.teams);
    let _ = writeln!(
        o,
        "\nrunning    {}",
        if d.running.is_empty() { "none" } else { "" }
    );
    for j in &d.running {
        let _ = writeln!(
            o,
            "  {:<38} {} {:<22} {:>8}  {:<12} {}",
            j.id.as_str(),
            j.priority,
            j.spec.name,
            elapsed(j).unwrap_or_default(),
            j.progress.as_deref().unwrap_or(""),
            j.worker.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        o,
        "\nrecent failures {}",
        if d.recent_failures.is_empty() { "none" } else { "" }
    );
    for j in &d.recent_failures {
        let _ = writeln!(
            o,
            "  {:<38} {:<22} {:<8} {:>8} ago  {}",
            j.id.as_str(),
            j.spec.name,
            j.state.as_str(),
            age(j.updated_at),
            j.reason.as_deref().unwrap_or("")
        );
    }
    o
}

pub(crate) async fn workers(queue: &RedisQueue, json: bool) -> CliResult<()> {
    let workers = queue.workers().await?;
    if json {
        print_json(&workers);
        return Ok(());
    }
    if workers.is_empty() {
        println!("no live workers");
        return Ok(());
    }
    println!(
        "{:<40} {:<8} {:>7} {:>5} {:>9}  STATE",
        "WORKER", "LAUNCHER", "PID", "JOBS", "UPTIME"
    );
    for w in &workers {
        println!(
            "{:<40} {:<8} {:>7} {:>5} {:>9}  {}",
            w.id,
            w.launcher,
            w.pid,
            format!("{}/{}", w.jobs.len(), w.concurrency),
            short_duration(now_ms().saturating_sub(w.started_at)),
            if w.draining { "draining" } else { "ready" }
        );
    }
    Ok(())
}
