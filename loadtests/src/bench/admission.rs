//! Admission at queue speed: how many jobs per second one worker process admits under
//! team quotas, against the same drain without them (measured in the same run); claim
//! latency with 10^6 jobs queued and 90% of them held up by their teams' quotas, against
//! 10^3 unblocked; and Kueue's scheduler performance test's shape, replayed.

use super::replay::{replay, TraceJob};
use super::{noop, rate};
use crate::env::{wait_until, Bench};
use crate::report::{percentile, Row};
use anyhow::{Context, Result};
use common::admission::{AdmissionConfig, PoolConfig, Quota};
use common::queue::{Outcome, Room};
use common::{JobSpec, Priority, WorkerId, WorkerInfo};
use std::time::{Duration, Instant};

const TEAMS: usize = 10;

fn team(i: usize) -> String {
    format!("team-{i}")
}

fn gpu_job(team: &str) -> JobSpec {
    let mut s = noop(Priority::Normal);
    s.team = team.to_string();
    s.resources.gpus = 1;
    s.resources.gpu_type = Some("gpu".into());
    s
}

/// Ten teams sharing a 64-GPU pool: 6 GPUs each, borrowing up to 4 more.
fn ten_teams() -> AdmissionConfig {
    let mut pool = PoolConfig {
        capacity: Some(64),
        ..PoolConfig::default()
    };
    for i in 0..TEAMS {
        pool.quotas.insert(
            team(i),
            Quota {
                nominal: 6,
                borrowing_limit: Some(4),
                ..Quota::default()
            },
        );
    }
    AdmissionConfig {
        pools: [("gpu".to_string(), pool)].into(),
        ..AdmissionConfig::default()
    }
}

/// Drains `jobs` no-op jobs through one worker: with `quotas`, 1-GPU jobs of ten teams
/// under [`ten_teams`]; without, plain jobs that need no GPU and no configuration.
async fn drain(url: &str, jobs: usize, quotas: bool) -> Result<f64> {
    let mut b = Bench::new(url, "admission").await?;
    if quotas {
        b.queue.set_admission(&ten_teams()).await?;
    }
    let mut enqueued = 0;
    while enqueued < jobs {
        let n = 5_000.min(jobs - enqueued);
        let specs: Vec<JobSpec> = (0..n)
            .map(|i| {
                if quotas {
                    gpu_job(&team((enqueued + i) % TEAMS))
                } else {
                    noop(Priority::Normal)
                }
            })
            .collect();
        b.queue.enqueue_batch(specs).await?;
        enqueued += n;
    }
    let started = Instant::now();
    b.worker("noop", 64, &[])?;
    let q = b.queue.clone();
    wait_until("the drain", Duration::from_secs(600), || {
        let q = q.clone();
        async move {
            let s = q.status().await?;
            Ok(s.queued() == 0 && s.running == 0)
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    b.cleanup().await?;
    Ok(rate(jobs, secs))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 0 {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// Admitted jobs per second with and without quotas, repetitions interleaved.
pub(crate) async fn throughput(url: &str, jobs: usize, reps: usize) -> Result<Vec<Row>> {
    let (mut plain, mut quotas) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        plain.push(drain(url, jobs, false).await?);
        quotas.push(drain(url, jobs, true).await?);
    }
    let range = |v: &[f64]| {
        format!(
            "{} runs, {:.0}..{:.0}",
            v.len(),
            v.iter().cloned().fold(f64::MAX, f64::min),
            v.iter().cloned().fold(0.0, f64::max)
        )
    };
    let (p, q) = (median(plain.clone()), median(quotas.clone()));
    Ok(vec![
        Row::new("admission", "drain, no quotas (baseline), 1 worker", p, "jobs/s").note(range(&plain)),
        Row::new(
            "admission",
            "drain, 10 teams with quotas and borrowing, 1 worker",
            q,
            "jobs/s",
        )
        .note(range(&quotas)),
        Row::new("admission", "quotas / baseline", q / p, "ratio"),
    ])
}

/// A queue with `blocked` jobs held up by their teams' quotas and `free` admissible ones
/// queued, and the worker that claims from it.
struct Claims {
    bench: Bench,
    worker: WorkerId,
    fill_secs: f64,
}

impl Claims {
    async fn fill(url: &str, free: usize, blocked: usize) -> Result<Claims> {
        let mut b = Bench::new(url, "claim").await?;
        // 10^6 jobs leave 10^6 outbox entries (no store drains them here).
        b.queue = b.queue.clone().with_outbox_limit(u64::MAX);
        let mut config = ten_teams();
        for q in config.pools.get_mut("gpu").expect("the pool").quotas.values_mut() {
            q.nominal = 10;
            q.borrowing_limit = Some(0);
        }
        config.pools.get_mut("gpu").expect("the pool").capacity = Some(100);
        b.queue.set_admission(&config).await?;
        let holder = WorkerId::generate("holder");
        b.queue
            .heartbeat(
                &WorkerInfo::starting(&holder, "bench", "bench", 1),
                Duration::from_secs(3600),
            )
            .await?;
        let worker = WorkerId::generate("bench");
        b.queue
            .heartbeat(
                &WorkerInfo::starting(&worker, "bench", "bench", 1),
                Duration::from_secs(3600),
            )
            .await?;
        if blocked > 0 {
            // Teams 1..9 use their whole quota, and one more job of each is parked: their
            // lanes exist, so what they enqueue from now on waits there.
            for t in 1..TEAMS {
                b.queue
                    .enqueue_batch((0..11).map(|_| gpu_job(&team(t))).collect())
                    .await?;
            }
            let took = b
                .queue
                .claim_within(&holder, 1000, "hold", &Room::default())
                .await?
                .jobs
                .len();
            anyhow::ensure!(took == 90, "the holder took {took} jobs, not 90");
        }
        let t0 = Instant::now();
        let mut left_blocked = blocked;
        let mut left_free = free;
        while left_blocked + left_free > 0 {
            // Chunks of nine held-up jobs to one admissible one, as they would arrive.
            let mut specs = Vec::with_capacity(5_000);
            while specs.len() < 5_000 && left_blocked + left_free > 0 {
                if left_free > 0 && (left_blocked == 0 || specs.len() % 10 == 9) {
                    specs.push(gpu_job(&team(0)));
                    left_free -= 1;
                } else {
                    specs.push(gpu_job(&team(1 + specs.len() % (TEAMS - 1))));
                    left_blocked -= 1;
                }
            }
            b.queue.enqueue_batch(specs).await?;
        }
        let fill_secs = t0.elapsed().as_secs_f64();
        let status = b.queue.status().await?;
        anyhow::ensure!(
            status.priorities[1].parked as usize >= blocked,
            "{} parked, expected {blocked}",
            status.priorities[1].parked
        );
        Ok(Claims {
            bench: b,
            worker,
            fill_secs,
        })
    }

    /// One timed claim of one admissible job, in milliseconds; the job then finishes and
    /// another of its team is enqueued, untimed, so the queue keeps its shape.
    async fn sample(&self) -> Result<f64> {
        let q = &self.bench.queue;
        let t = Instant::now();
        let claim = q.claim_within(&self.worker, 1, "b", &Room::default()).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let job = claim
            .jobs
            .into_iter()
            .next()
            .context("no admissible job was claimed")?;
        q.finish(&self.worker, &job.id, &Outcome::Succeeded).await?;
        q.enqueue_batch(vec![gpu_job(&team(0))]).await?;
        Ok(ms)
    }
}

/// Claim latency at 10^3 queued with none held up against `deep` queued with 90% held up
/// by quotas. Both queues exist at once and the samples alternate between them (which one
/// goes first alternates too), so the machine's drift from second to second, which moves
/// a 0.3 ms figure by tens of percent, falls on both alike.
pub(crate) async fn blocked_claims(url: &str, deep: usize, samples: usize) -> Result<Vec<Row>> {
    let small = Claims::fill(url, 1_000, 0).await?;
    let held = Claims::fill(url, deep / 10, deep - deep / 10).await?;
    let (mut a, mut b) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples {
        if i % 2 == 0 {
            a.push(small.sample().await?);
            b.push(held.sample().await?);
        } else {
            b.push(held.sample().await?);
            a.push(small.sample().await?);
        }
    }
    let fill = held.fill_secs;
    held.bench.cleanup().await?;
    small.bench.cleanup().await?;
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (p50_small, p99_small) = (percentile(&a, 50.0), percentile(&a, 99.0));
    let (p50_deep, p99_deep) = (percentile(&b, 50.0), percentile(&b, 99.0));
    Ok(vec![
        Row::new(
            "admission",
            "claim p50, 10^3 queued, none held up",
            p50_small,
            "ms",
        )
        .note(format!(
            "p99 {p99_small:.3}; {samples} samples, alternating with the next row"
        )),
        Row::new(
            "admission",
            format!("claim p50, {deep} queued, 90% held up by quotas"),
            p50_deep,
            "ms",
        )
        .note(format!("p99 {p99_deep:.3}; enqueueing them took {fill:.1} s")),
        Row::new(
            "admission",
            "claim p50, held up / none",
            p50_deep / p50_small,
            "ratio",
        ),
    ])
}

/// Kueue's scheduler performance test shape (test/performance/scheduler/configs/baseline):
/// 5 cohorts of 6 teams with 20-GPU nominal quotas (borrowing up to 100); per team 350
/// small (1 GPU, 200 ms, every 100 ms), 100 medium (5 GPUs, 500 ms, every 500 ms) and 50
/// large (20 GPUs, 1 s, every 1.2 s) jobs, replayed in real time.
pub(crate) async fn kueue_shape(url: &str) -> Result<Vec<Row>> {
    let mut pool = PoolConfig {
        capacity: Some(5 * 6 * 20),
        ..PoolConfig::default()
    };
    let mut trace = Vec::new();
    for c in 0..5 {
        for q in 0..6 {
            let name = format!("c{c}-q{q}");
            pool.quotas.insert(
                name.clone(),
                Quota {
                    nominal: 20,
                    borrowing_limit: Some(100),
                    cohort: Some(format!("cohort-{c}")),
                    ..Quota::default()
                },
            );
            for (count, every, run, gpus, priority) in [
                (350, 0.1, 0.2, 1, Priority::Background),
                (100, 0.5, 0.5, 5, Priority::Normal),
                (50, 1.2, 1.0, 20, Priority::Urgent),
            ] {
                for i in 0..count {
                    trace.push(TraceJob {
                        submit_s: i as f64 * every,
                        duration_s: run,
                        gpus,
                        team: name.clone(),
                        priority,
                        gpu_type: Some("gpu".into()),
                    });
                }
            }
        }
    }
    trace.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    let config = AdmissionConfig {
        pools: [("gpu".to_string(), pool)].into(),
        ..AdmissionConfig::default()
    };
    let r = replay(url, &trace, &config, 1.0, 1).await?;
    Ok(vec![
        Row::new(
            "admission",
            "Kueue-shaped: 15,000 jobs admitted and run",
            r.makespan_s,
            "s",
        )
        .note("Kueue's own run of this config: about 351 s"),
        Row::new(
            "admission",
            "Kueue-shaped: jobs admitted per second",
            r.schedule.len() as f64 / r.makespan_s.max(1e-9),
            "jobs/s",
        )
        .note("Kueue: about 43/s; bounded here by the trace's own submission times (60 s)"),
        Row::new(
            "admission",
            "Kueue-shaped: GPU utilization",
            r.utilization,
            "ratio",
        ),
        Row::new(
            "admission",
            "Kueue-shaped: busiest second",
            r.peak_admissions_per_s,
            "jobs/s",
        ),
    ])
}
