//! Enqueue throughput: single enqueues (one and many clients) and atomic batches.

use super::{noop, rate};
use crate::env::Bench;
use crate::report::Row;
use anyhow::Result;
use common::Priority;
use std::time::Instant;

pub(crate) async fn run(url: &str, jobs: usize, batch_sizes: &[usize]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let b = Bench::new(url, "enq").await?;
    let n = jobs.min(20_000);
    let t = Instant::now();
    for _ in 0..n {
        b.queue.enqueue_batch(vec![noop(Priority::Normal)]).await?;
    }
    rows.push(Row::new(
        "enqueue",
        "single, 1 client, sequential",
        rate(n, t.elapsed().as_secs_f64()),
        "jobs/s",
    ));
    b.cleanup().await?;

    let b = Bench::new(url, "enq").await?;
    let clients = 16;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let q = b.queue.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / clients {
                q.enqueue_batch(vec![noop(Priority::Normal)]).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    rows.push(Row::new(
        "enqueue",
        format!("single, {clients} clients"),
        rate(n, t.elapsed().as_secs_f64()),
        "jobs/s",
    ));
    b.cleanup().await?;

    for &size in batch_sizes {
        let b = Bench::new(url, "enq").await?;
        let batches = (jobs / size).max(3);
        let specs: Vec<_> = (0..size).map(|_| noop(Priority::Background)).collect();
        let t = Instant::now();
        for _ in 0..batches {
            b.queue.enqueue_batch(specs.clone()).await?;
        }
        let secs = t.elapsed().as_secs_f64();
        rows.push(
            Row::new(
                "enqueue",
                format!("batch of {size}, {batches} batches"),
                rate(size * batches, secs),
                "jobs/s",
            )
            .note(format!("{:.1} ms per batch", secs * 1000.0 / batches as f64)),
        );
        b.cleanup().await?;
    }
    Ok(rows)
}
