//! Redis memory with many jobs passing through: N no-op jobs enqueued while one worker
//! drains them and `scheduler serve` writes them to an SQLite store and applies a short
//! retention. Reports the peak over the run, and what is left once retention has removed
//! them, each against Redis's memory before the run.

use super::noop;
use crate::env::{info, wait_until, Bench};
use crate::report::Row;
use anyhow::{Context, Result};
use common::Priority;
use redis::AsyncCommands;
use std::time::{Duration, Instant};

async fn used(url: &str) -> Result<u64> {
    info(url, "memory")
        .await?
        .get("used_memory")
        .and_then(|v| v.parse().ok())
        .context("INFO memory has no used_memory")
}

pub(crate) async fn run(url: &str, jobs: usize) -> Result<Vec<Row>> {
    let before = used(url).await?;
    let mut b = Bench::new(url, "memory").await?;
    let db = std::env::temp_dir().join(format!("gpuq-bench-memory-{}.db", std::process::id()));
    let store = common::store::sqlite_url(&db);
    b.serve_with(
        &store,
        &[
            ("GPUQ_REDIS_RETENTION", "1s"),
            ("GPUQ_RETENTION_INTERVAL", "1s"),
            ("RUST_LOG", "warn,scheduler::store_sync::retention=debug"),
        ],
    )?;
    b.worker("noop", 64, &[])?;
    let started = Instant::now();
    let spec: Vec<_> = (0..5_000).map(|_| noop(Priority::Normal)).collect();
    let mut peak = before;
    let mut enqueued = 0;
    while enqueued < jobs {
        let n = spec.len().min(jobs - enqueued);
        // The outbox is bounded: when the store falls behind, enqueue waits for it.
        match b.queue.enqueue_batch(spec[..n].to_vec()).await {
            Ok(_) => enqueued += n,
            Err(common::Error::OutboxFull { .. }) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return Err(e.into()),
        }
        if enqueued % 50_000 == 0 {
            peak = peak.max(used(url).await?);
        }
    }
    let q = b.queue.clone();
    let client = redis::Client::open(url)?;
    let con = client.get_multiplexed_async_connection().await?;
    let peak_cell = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(peak));
    let p2 = peak_cell.clone();
    let u = url.to_string();
    wait_until(
        "the jobs to run and reach the store",
        Duration::from_secs(1800),
        || {
            let (q, p2, u) = (q.clone(), p2.clone(), u.clone());
            async move {
                p2.fetch_max(used(&u).await?, std::sync::atomic::Ordering::Relaxed);
                let s = q.status().await?;
                Ok(s.queued() == 0 && s.running == 0 && q.outbox_len().await? == 0)
            }
        },
    )
    .await?;
    let through = started.elapsed().as_secs_f64();
    let finished_key = b.queue.keys().finished();
    let left: u64 = {
        let mut con = con.clone();
        con.zcard(&finished_key).await?
    };
    let removing = Instant::now();
    wait_until("retention to remove them", Duration::from_secs(1800), || {
        let (mut con, key) = (con.clone(), finished_key.clone());
        async move { Ok(con.zcard::<_, u64>(&key).await? == 0) }
    })
    .await?;
    let pace = left as f64 / removing.elapsed().as_secs_f64().max(1e-3);
    let index: u64 = {
        let mut con = con.clone();
        con.llen(format!("{{{}}}:jobs", b.ns)).await?
    };
    let after = used(url).await?;
    let peak = peak_cell.load(std::sync::atomic::Ordering::Relaxed);
    b.cleanup().await?;
    let _ = std::fs::remove_file(&db);
    let mb = |v: u64| v as f64 / 1_048_576.0;
    Ok(vec![
        Row::new(
            "memory",
            format!("Redis memory at the peak of {jobs} jobs passing through, over before"),
            mb(peak.saturating_sub(before)),
            "MB",
        )
        .note(format!(
            "{:.0} bytes per job; through the store in {through:.0} s",
            peak.saturating_sub(before) as f64 / jobs as f64
        )),
        Row::new(
            "memory",
            format!("Redis memory left after retention removed the {jobs}, over before"),
            mb(after.saturating_sub(before)),
            "MB",
        )
        .note(format!("{index} ids left in the job index")),
        Row::new(
            "memory",
            format!("retention's pace once all {jobs} were in the store"),
            pace,
            "jobs/s",
        )
        .note(format!("{left} left to remove when the store had them all")),
    ])
}
