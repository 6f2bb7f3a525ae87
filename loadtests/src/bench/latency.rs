//! Pickup latency: enqueue-to-start of an urgent job, measured on Redis's own clock
//! (`enqueued_us` written by the enqueue script, `started_us` by the claim script), on an
//! idle pool and under background load.

use super::noop;
use crate::env::Bench;
use crate::report::{percentile, Row};
use anyhow::Result;
use common::Priority;
use redis::AsyncCommands;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn run(url: &str, samples: usize, background: bool) -> Result<Vec<Row>> {
    let mut b = Bench::new(url, "lat").await?;
    let workers = if background { 2 } else { 1 };
    for _ in 0..workers {
        b.worker("noop", 8, &["--idle-timeout", "30s"])?;
    }
    b.wait_workers(workers).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = background.then(|| {
        // ~5,000 background jobs/s in batches of 100.
        let (q, stop) = (b.queue.clone(), stop.clone());
        tokio::spawn(async move {
            let batch: Vec<_> = (0..100).map(|_| noop(Priority::Background)).collect();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let _ = q.enqueue_batch(batch.clone()).await;
            }
        })
    });
    let lat = samples_on(&b, url, samples, Clock::Redis).await?;
    stop.store(true, Ordering::Relaxed);
    if let Some(l) = load {
        l.await?;
    }
    let case = if background {
        "under ~5k jobs/s background load"
    } else {
        "idle pool, one job at a time"
    };
    let mut rows = Vec::new();
    for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)] {
        rows.push(
            Row::new("pickup", format!("{case}: {name}"), percentile(&lat, p), "ms")
                .note(format!("{samples} samples")),
        );
    }
    b.cleanup().await?;
    Ok(rows)
}

/// Which clock times a pickup.
#[derive(Clone, Copy)]
pub(crate) enum Clock {
    /// Redis's: from the enqueue script's `enqueued_us` to the claim script's
    /// `started_us`.
    Redis,
    /// The enqueuer's: from just before the enqueue call until it sees `started_us`, as
    /// the peers' harness programs time theirs (until the job's mark arrives).
    Client,
}

/// Enqueue-to-start (ms, sorted) of `samples` urgent jobs, one at a time: each is enqueued
/// once the one before has finished, so that it finds its workers idle.
pub(crate) async fn samples_on(b: &Bench, url: &str, samples: usize, clock: Clock) -> Result<Vec<f64>> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = std::time::Instant::now();
        let id = b
            .queue
            .enqueue_batch(vec![noop(Priority::Urgent)])
            .await?
            .ids
            .remove(0);
        let key = b.queue.keys().job(&id);
        let started: String = loop {
            if let Some(s) = con.hget::<_, _, Option<String>>(&key, "started_us").await? {
                break s;
            }
            tokio::task::yield_now().await;
        };
        let seen = t0.elapsed().as_secs_f64() * 1000.0;
        let enqueued: String = con.hget(&key, "enqueued_us").await?;
        lat.push(match clock {
            Clock::Redis => (started.parse::<f64>()? - enqueued.parse::<f64>()?) / 1000.0,
            Clock::Client => seen,
        });
        // Next sample on an idle pool again: wait for this job to finish.
        while con
            .hget::<_, _, Option<String>>(&key, "finished_at")
            .await?
            .is_none()
        {
            tokio::task::yield_now().await;
        }
    }
    lat.sort_by(|a, c| a.partial_cmp(c).expect("no NaN"));
    Ok(lat)
}
