//! Scale with depth: claim and enqueue latency with 10^3 .. 10^6 jobs queued, and Redis
//! memory per queued job.

use super::noop;
use crate::env::{info, Bench};
use crate::report::{percentile, Row};
use anyhow::Result;
use common::queue::Outcome;
use common::{Priority, WorkerId, WorkerInfo};
use std::time::{Duration, Instant};

pub(crate) async fn run(url: &str, depths: &[usize], samples: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &depth in depths {
        let mut b = Bench::new(url, "depth").await?;
        // 10^6 jobs leave 10^6 transitions in the outbox (no store drains them here),
        // and the samples add to them.
        b.queue = b.queue.clone().with_outbox_limit(u64::MAX);
        let mem0: f64 = info(url, "memory").await?["used_memory"].parse()?;
        let batch: Vec<_> = (0..5_000.min(depth))
            .map(|_| noop(Priority::Background))
            .collect();
        let mut filled = 0;
        while filled < depth {
            let n = batch.len().min(depth - filled);
            b.queue.enqueue_batch(batch[..n].to_vec()).await?;
            filled += n;
        }
        let mem1: f64 = info(url, "memory").await?["used_memory"].parse()?;
        let client = redis::Client::open(url)?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let outbox: Option<f64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(b.queue.keys().outbox())
            .query_async(&mut con)
            .await?;
        let per_job = (mem1 - mem0) / depth as f64;
        let outbox_per_job = outbox.unwrap_or(0.0) / depth as f64;

        let w = WorkerId::generate("bench");
        let beat = WorkerInfo::starting(&w, "bench", "bench", 1);
        b.queue.heartbeat(&beat, Duration::from_secs(600)).await?;
        let (mut claim, mut enqueue) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let t = Instant::now();
            let job = b.queue.claim(&w).await?.expect("queued jobs remain");
            claim.push(t.elapsed().as_secs_f64() * 1000.0);
            b.queue.finish(&w, &job.id, &Outcome::Succeeded).await?;
            let t = Instant::now();
            b.queue.enqueue_batch(vec![noop(Priority::Background)]).await?;
            enqueue.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        for v in [&mut claim, &mut enqueue] {
            v.sort_by(|a, c| a.partial_cmp(c).expect("no NaN"));
        }
        let at = format!("{depth} queued");
        rows.push(Row::new(
            "depth",
            format!("{at}: claim p50"),
            percentile(&claim, 50.0),
            "ms",
        ));
        rows.push(Row::new(
            "depth",
            format!("{at}: claim p99"),
            percentile(&claim, 99.0),
            "ms",
        ));
        rows.push(Row::new(
            "depth",
            format!("{at}: enqueue p50"),
            percentile(&enqueue, 50.0),
            "ms",
        ));
        rows.push(
            Row::new("depth", format!("{at}: Redis memory per job"), per_job, "bytes").note(format!(
                "{outbox_per_job:.0} of it in the undrained outbox stream"
            )),
        );
        b.cleanup().await?;
    }
    Ok(rows)
}
