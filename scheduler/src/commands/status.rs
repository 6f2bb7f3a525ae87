//! `status` and `workers`: the pool at a glance.

use super::jobs::elapsed;
use crate::format::{age, print_json, short_duration};
use crate::CliResult;
use common::queue::RedisQueue;
use common::{now_ms, JobState, ListFilter};

pub(crate) async fn status(queue: &RedisQueue, json: bool) -> CliResult<()> {
    let status = queue.status().await?;
    let running = queue
        .list(&ListFilter {
            state: Some(JobState::Running),
            limit: 20,
            ..ListFilter::default()
        })
        .await?
        .into_iter()
        .map(common::JobRecord::redacted)
        .collect::<Vec<_>>();
    if json {
        print_json(&serde_json::json!({ "queue": status, "running_jobs": running }));
        return Ok(());
    }
    let slots: u32 = status.workers.iter().map(|w| w.concurrency).sum();
    println!("queues");
    for p in &status.priorities {
        let oldest = p
            .oldest_enqueued_at
            .map(|t| format!("oldest {}", age(t)))
            .unwrap_or_default();
        println!(
            "  {} {:<11} {:>7} queued  {oldest}",
            p.priority,
            format!("({})", p.priority.alias()),
            p.depth
        );
    }
    println!("  retrying {}   dead-lettered {}", status.retrying, status.dead);
    println!("  job store: {} transitions waiting to be written", status.outbox);
    println!();
    println!(
        "workers    {} live, {} of {slots} slots busy",
        status.workers.len(),
        status.running
    );
    println!();
    if running.is_empty() {
        println!("running    none");
    } else {
        println!("running");
        for j in &running {
            println!(
                "  {:<38} {} {:<24} {:>8}  {}",
                j.id.as_str(),
                j.priority,
                j.spec.name,
                elapsed(j).unwrap_or_default(),
                j.progress.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
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
