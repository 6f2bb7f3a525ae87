//! Drain throughput: N no-op jobs through worker processes, from first claim to last ack,
//! with and without the job store being written alongside.

use super::{noop, rate};
use crate::env::{command_calls, wait_until, Bench};
use crate::report::Row;
use anyhow::{Context, Result};
use common::Priority;
use redis::AsyncCommands;
use std::time::{Duration, Instant};

/// Where the store goes when one is measured.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    None,
    Url(String),
}

pub(crate) async fn run(
    url: &str,
    jobs: usize,
    workers: &[u32],
    concurrency: &[u32],
    store: &Store,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &w in workers {
        for &c in concurrency {
            rows.extend(once(url, jobs, w, c, store).await?);
        }
    }
    Ok(rows)
}

async fn once(url: &str, jobs: usize, workers: u32, concurrency: u32, store: &Store) -> Result<Vec<Row>> {
    let mut b = Bench::new(url, "drain").await?;
    let specs: Vec<_> = (0..5_000.min(jobs)).map(|_| noop(Priority::Normal)).collect();
    let mut enqueued = 0;
    let mut first = None;
    while enqueued < jobs {
        let n = specs.len().min(jobs - enqueued);
        let ids = b.queue.enqueue_batch(specs[..n].to_vec()).await?.ids;
        first.get_or_insert(ids[0].clone());
        enqueued += n;
    }
    let first = first.context("no jobs")?;
    let label = match store {
        Store::None => "no store".to_string(),
        Store::Url(u) => {
            b.serve(u)?;
            if u.starts_with("postgres") {
                "PostgreSQL store"
            } else {
                "SQLite store"
            }
            .to_string()
        }
    };
    let calls_before = command_calls(url).await?;
    let started = Instant::now();
    for _ in 0..workers {
        b.worker("noop", concurrency, &[])?;
    }
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let finished_key = b.queue.keys().finished();
    wait_until("the drain to finish", Duration::from_secs(600), || {
        let (mut con, key) = (con.clone(), finished_key.clone());
        async move { Ok(con.zcard::<_, usize>(&key).await? >= jobs) }
    })
    .await?;
    let wall = started.elapsed().as_secs_f64();
    let first_claim_us: u64 = con
        .hget::<_, _, String>(b.queue.keys().job(&first), "started_us")
        .await?
        .parse()?;
    let last: Vec<(String, f64)> = con.zrange_withscores(&finished_key, -1, -1).await?;
    let last_ack_ms = last.first().map(|(_, s)| *s).context("no finished job")?;
    let secs = (last_ack_ms - first_claim_us as f64 / 1000.0) / 1000.0;
    let calls_after = command_calls(url).await?;
    let delta =
        |k: &str| calls_after.get(k).copied().unwrap_or(0) - calls_before.get(k).copied().unwrap_or(0);
    let total: u64 = calls_after.keys().map(|k| delta(k)).sum();
    let round_trips = delta("evalsha") + delta("eval") + delta("blpop");
    let case = format!("{workers} worker(s) x {concurrency} slots, {label}");
    let mut rows = vec![
        Row::new("drain", case.clone(), rate(jobs, secs), "jobs/s").note(format!(
            "{jobs} jobs; first claim to last ack {secs:.2} s; wall {wall:.2} s incl. start-up"
        )),
        Row::new(
            "drain",
            format!("{case}: Redis commands per job"),
            total as f64 / jobs as f64,
            "cmds",
        )
        .note(format!(
            "{:.2} script calls + blocking pops per job from workers",
            round_trips as f64 / jobs as f64
        )),
    ];
    if let Store::Url(_) = store {
        let t = Instant::now();
        let q = b.queue.clone();
        wait_until("the outbox to drain", Duration::from_secs(600), || {
            let q = q.clone();
            async move { Ok(q.outbox_len().await? == 0) }
        })
        .await?;
        rows.push(Row::new(
            "drain",
            format!("{case}: store caught up after last ack"),
            t.elapsed().as_secs_f64(),
            "s",
        ));
    }
    b.cleanup().await?;
    Ok(rows)
}
