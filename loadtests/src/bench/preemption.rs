//! Preemption latency: an urgent job enqueued onto a pool full of background jobs, which
//! exit within a second of SIGTERM. Measures the time from the enqueue to the urgent
//! job's start, and from the last victim's exit to that start: the part the queue adds.

use crate::env::{wait_until, Bench};
use crate::report::{percentile, Row};
use anyhow::{Context, Result};
use common::admission::{AdmissionConfig, PoolConfig};
use common::{JobId, JobSpec, JobState, Priority};
use std::time::Duration;

/// GPUs in the pool, all held by victims; the urgent job needs half of them.
const GPUS: u32 = 4;

fn config() -> AdmissionConfig {
    let mut c = AdmissionConfig {
        pools: [(
            "default".to_string(),
            PoolConfig {
                capacity: Some(GPUS),
                ..PoolConfig::default()
            },
        )]
        .into(),
        ..AdmissionConfig::default()
    };
    c.preemption.min_runtime_secs = Some(0);
    c.preemption.max_per_minute = Some(1000);
    c.preemption.max_preemptions = Some(1000);
    c
}

/// A background job that, on SIGTERM, takes `exit_ms` to "checkpoint", writes the time it
/// exits (ms since the epoch, the machine's clock, which Redis shares here) and exits.
fn victim(dir: &std::path::Path, i: usize, exit_ms: u64) -> JobSpec {
    let mark = dir.join(format!("exit-{i}"));
    let script = format!(
        "trap 'sleep {secs}; date +%s%3N >> {mark}; exit 143' TERM; while :; do sleep 0.05; done",
        secs = exit_ms as f64 / 1000.0,
        mark = mark.display()
    );
    let mut s = JobSpec::new(
        format!("victim-{i}"),
        "bench",
        vec!["sh".into(), "-c".into(), script],
    );
    s.priority = Priority::Background;
    s.resources.gpus = 1;
    s
}

/// The latest exit time any victim wrote, in ms.
fn last_exit(dir: &std::path::Path) -> Option<u64> {
    let mut last = None;
    for i in 0..GPUS as usize {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("exit-{i}"))) {
            for l in text.lines() {
                if let Ok(v) = l.trim().parse::<u64>() {
                    last = Some(last.map_or(v, |m: u64| m.max(v)));
                }
            }
        }
    }
    last
}

/// `reps` preemptions, one after another, on one worker with `GPUS` devices.
pub(crate) async fn run(url: &str, reps: usize, exit_ms: u64) -> Result<Vec<Row>> {
    let mut b = Bench::new(url, "preempt").await?;
    b.queue.set_admission(&config()).await?;
    let devices = (0..GPUS).map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    b.worker(
        "local",
        GPUS,
        &[
            "--gpus",
            &devices,
            "--heartbeat-interval",
            "300ms",
            "--cancel-check-interval",
            "100ms",
            "--kill-grace",
            "5s",
        ],
    )?;
    b.wait_workers(1).await?;
    let (mut total, mut after_exit) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let marks = b.dir.join(format!("rep-{rep}"));
        std::fs::create_dir_all(&marks)?;
        let victims = b
            .queue
            .enqueue_batch((0..GPUS as usize).map(|i| victim(&marks, i, exit_ms)).collect())
            .await?
            .ids;
        wait_all(&b, &victims, JobState::Running).await?;
        let mut urgent = JobSpec::new("urgent", "bench", vec!["true".into()]);
        urgent.priority = Priority::Urgent;
        urgent.resources.gpus = GPUS / 2;
        let t0 = common::now_ms();
        let id = b.queue.enqueue_batch(vec![urgent]).await?.ids.remove(0);
        let q = &b.queue;
        wait_until("the urgent job to start", Duration::from_secs(60), || async {
            Ok(q.get(&id).await?.is_some_and(|r| r.started_at.is_some()))
        })
        .await?;
        let start_ms = q.get(&id).await?.and_then(|r| r.started_at).context("a start")?;
        let exit = last_exit(&marks).context("no victim wrote its exit time")?;
        total.push((start_ms.saturating_sub(t0)) as f64);
        after_exit.push(start_ms as f64 - exit as f64);
        // Clear the pool for the next round: everything ends.
        wait_until("the urgent job to end", Duration::from_secs(60), || async {
            Ok(q.get(&id).await?.is_some_and(|r| r.state.is_terminal()))
        })
        .await?;
        for v in &victims {
            q.cancel(v, "bench round over").await?;
        }
        wait_all(&b, &victims, JobState::Cancelled).await?;
    }
    b.cleanup().await?;
    total.sort_by(f64::total_cmp);
    after_exit.sort_by(f64::total_cmp);
    let max = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    Ok(vec![
        Row::new(
            "preemption",
            "urgent job's start after its enqueue, p50",
            percentile(&total, 50.0),
            "ms",
        )
        .note(format!(
            "{reps} runs, max {:.0}; victims take {exit_ms} ms to exit after SIGTERM",
            max(&total)
        )),
        Row::new(
            "preemption",
            "urgent job's start after the last victim's exit, p50",
            percentile(&after_exit, 50.0),
            "ms",
        )
        .note(format!("max {:.0}; target within 100 ms", max(&after_exit))),
    ])
}

async fn wait_all(b: &Bench, ids: &[JobId], state: JobState) -> Result<()> {
    let q = &b.queue;
    wait_until("the victims", Duration::from_secs(60), || async move {
        for id in ids {
            if q.get(id).await?.map(|r| r.state) != Some(state) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}
