//! Chaos: short real jobs through worker processes while a driver SIGKILLs a random
//! worker every second or two (starting a replacement) and once SIGKILLs Redis (AOF
//! `everysec`, so up to a second of writes is lost) and starts it again. Afterwards every
//! job must have succeeded; no two copies of a job may have run at the same time; and
//! jobs executed twice may be at most the jobs that were in flight at a kill, plus those
//! that ended within the two seconds before the Redis crash (an acknowledged end the
//! crash lost runs the job again).

use crate::env::{Bench, PrivateRedis};
use crate::report::Row;
use anyhow::Result;
use common::JobSpec;
use redis::AsyncCommands;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What the driver saw.
#[derive(Debug, Serialize)]
pub(crate) struct ChaosReport {
    pub(crate) jobs: usize,
    pub(crate) succeeded: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    /// Copies of a job that ran while another copy of it was still running.
    pub(crate) overlapping: usize,
    /// The jobs concerned, with each copy's start and end (ms from the first start).
    pub(crate) overlaps: Vec<String>,
    pub(crate) kills: usize,
    pub(crate) in_flight_at_kills: usize,
    pub(crate) redis_restarts: usize,
    pub(crate) seconds: f64,
}

impl ChaosReport {
    /// Nothing lost, and duplicates bounded by what was in flight when things died.
    pub(crate) fn passed(&self) -> bool {
        self.lost == 0 && self.overlapping == 0 && self.duplicated <= self.in_flight_at_kills
    }

    pub(crate) fn rows(&self) -> Vec<Row> {
        let case = format!(
            "{} jobs, {} kills, {} Redis restart(s)",
            self.jobs, self.kills, self.redis_restarts
        );
        vec![
            Row::new("chaos", format!("{case}: lost"), self.lost as f64, "jobs"),
            Row::new(
                "chaos",
                format!("{case}: duplicated"),
                self.duplicated as f64,
                "jobs",
            )
            .note(format!("bound: {} in flight at kills", self.in_flight_at_kills)),
            Row::new(
                "chaos",
                format!("{case}: copies overlapping"),
                self.overlapping as f64,
                "jobs",
            )
            .note(self.overlaps.join("; ")),
            Row::new("chaos", format!("{case}: took"), self.seconds, "s"),
        ]
    }
}

pub(crate) async fn run(
    jobs: usize,
    workers: usize,
    job_time: Duration,
    restart_redis: bool,
    limit: Duration,
) -> Result<ChaosReport> {
    let mut redis = PrivateRedis::start(true).await?;
    let mut b = Bench::new(&redis.url, "chaos").await?;
    let ran = b.dir.join("executions");
    // Each copy logs its start, and its end when it ends by itself or is stopped (a copy
    // SIGKILLed with its worker logs no end; it dies at once, with the worker).
    let script = format!(
        "log={log}; echo \"$GPUQ_JOB_ID $$ start $(date +%s%N)\" >> $log; \
         trap 'echo \"$GPUQ_JOB_ID $$ end $(date +%s%N)\" >> $log; exit 143' TERM; \
         sleep {t} & wait $!; echo \"$GPUQ_JOB_ID $$ end $(date +%s%N)\" >> $log",
        log = ran.display(),
        t = job_time.as_secs_f64()
    );
    let mut ids = Vec::with_capacity(jobs);
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(1000) {
        let specs: Vec<JobSpec> = chunk
            .iter()
            .map(|i| {
                let mut s = JobSpec::new(
                    format!("chaos-{i}"),
                    "bench",
                    vec!["sh".into(), "-c".into(), script.clone()],
                );
                s.max_attempts = 50;
                s
            })
            .collect();
        ids.extend(b.queue.enqueue_batch(specs).await?.ids);
    }
    let fast = [
        "--heartbeat-interval",
        "300ms",
        "--heartbeat-ttl",
        "2s",
        "--kill-grace",
        "500ms",
        "--idle-timeout",
        "1s",
    ];
    let mut alive: Vec<(usize, String)> = Vec::new();
    let mut next = 0;
    let spawn = |b: &mut Bench, next: &mut usize| -> Result<(usize, String)> {
        let id = format!("chaos-w{next}");
        *next += 1;
        let mut args = fast.to_vec();
        args.extend(["--id", id.as_str()]);
        Ok((b.worker("local", 8, &args)?, id))
    };
    for _ in 0..workers {
        alive.push(spawn(&mut b, &mut next)?);
    }
    let started = Instant::now();
    let (mut kills, mut in_flight, mut restarts) = (0, 0, 0);
    // What the driver did, by wall clock (ns), to read against the copies' times.
    let mut timeline: Vec<(u128, String)> = Vec::new();
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    };
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(std::process::id());
    loop {
        let done = finished(&b).await.unwrap_or(0);
        if done >= jobs || started.elapsed() > limit {
            break;
        }
        // Every 1 to 2 seconds, chosen at random.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(1000 + seed % 1000)).await;
        if restart_redis && restarts == 0 && done >= jobs / 2 {
            in_flight += in_flight_total(&b).await.unwrap_or(0);
            in_flight += ended_within(&b, Duration::from_secs(2)).await.unwrap_or(0);
            timeline.push((wall(), "redis-crash".into()));
            redis.crash_and_restart().await?;
            timeline.push((wall(), "redis-up".into()));
            restarts += 1;
            continue;
        }
        let victim = (seed % alive.len() as u64) as usize;
        let (child, id) = alive.remove(victim);
        in_flight += inflight_of(&b, &id).await.unwrap_or(0);
        b.kill(child);
        timeline.push((wall(), format!("kill-{id}")));
        kills += 1;
        alive.push(spawn(&mut b, &mut next)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let client = redis::Client::open(redis.url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let mut succeeded = 0;
    for id in &ids {
        let state: Option<String> = con.hget(b.queue.keys().job(id), "state").await?;
        if state.as_deref() == Some("succeeded") {
            succeeded += 1;
        }
    }
    let copies = copies(&std::fs::read_to_string(&ran).unwrap_or_default());
    let duplicated = copies.values().filter(|c| c.len() > 1).map(|c| c.len() - 1).sum();
    let overlapping = copies.values().map(|c| overlaps(c)).sum();
    let origin = copies.values().flatten().map(|c| c.start).min().unwrap_or(0);
    let ms = |ns: u128| (ns.saturating_sub(origin) / 1_000_000) as u64;
    let mut overlaps_detail: Vec<String> = Vec::new();
    for (job, c) in copies.iter().filter(|(_, c)| overlaps(c) > 0) {
        let runs: Vec<String> = c
            .iter()
            .map(|c| {
                format!(
                    "{}..{}",
                    ms(c.start),
                    c.end.map(|e| ms(e).to_string()).unwrap_or("killed".into())
                )
            })
            .collect();
        // Its history, for the post-mortem: state, worker, attempt, why.
        let history = match job.parse().ok() {
            Some(id) => b.queue.get(&id).await.ok().flatten().map(|r| {
                r.events
                    .iter()
                    .map(|e| {
                        format!(
                            "{}@{}#{} {}",
                            e.state,
                            e.worker.as_deref().unwrap_or("-"),
                            e.attempt,
                            e.detail.as_deref().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            }),
            None => None,
        };
        overlaps_detail.push(format!(
            "{job}: copies {} ; history {}",
            runs.join(", "),
            history.unwrap_or_default()
        ));
    }
    let timeline: Vec<String> = timeline
        .iter()
        .map(|(at, what)| format!("{what}@{}", ms(*at)))
        .collect();
    if !overlaps_detail.is_empty() {
        let keep = std::env::temp_dir().join(format!("gpuq-chaos-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&keep);
        for entry in std::fs::read_dir(&b.dir)?.flatten() {
            if entry.path().is_file() {
                let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
            }
        }
        overlaps_detail.push(format!("driver: {}", timeline.join(" ")));
        overlaps_detail.push(format!("logs kept in {}", keep.display()));
    }
    let report = ChaosReport {
        jobs,
        succeeded,
        lost: jobs - succeeded,
        duplicated,
        overlapping,
        overlaps: overlaps_detail,
        kills,
        in_flight_at_kills: in_flight,
        redis_restarts: restarts,
        seconds,
    };
    b.cleanup().await?;
    drop(redis);
    Ok(report)
}

async fn finished(b: &Bench) -> Result<usize> {
    let n = b.queue.finished_since(0).await?;
    Ok(n as usize)
}

async fn inflight_of(b: &Bench, worker: &str) -> Result<usize> {
    let url = &b.url;
    let client = redis::Client::open(url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    Ok(con.hlen(b.queue.keys().inflight(worker)).await?)
}

async fn in_flight_total(b: &Bench) -> Result<usize> {
    Ok(b.queue.status().await?.running as usize)
}

/// One execution of a job: when it started and, if it logged it, when it ended (ns).
#[derive(Debug, Clone, Copy)]
struct Copy {
    start: u128,
    end: Option<u128>,
}

/// Executions per job, from lines `JOB PID start|end NS`.
fn copies(log: &str) -> HashMap<String, Vec<Copy>> {
    let mut by_pid: HashMap<(String, String), Copy> = HashMap::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [job, pid, what, at] = f[..] else { continue };
        let Ok(at) = at.parse::<u128>() else { continue };
        let c = by_pid
            .entry((job.to_string(), pid.to_string()))
            .or_insert(Copy { start: at, end: None });
        match what {
            "start" => c.start = at,
            _ => c.end = Some(at),
        }
    }
    let mut out: HashMap<String, Vec<Copy>> = HashMap::new();
    for ((job, _), c) in by_pid {
        out.entry(job).or_default().push(c);
    }
    for v in out.values_mut() {
        v.sort_by_key(|c| c.start);
    }
    out
}

/// Copies that started while an earlier copy of the same job had not ended yet. A copy
/// with no end logged died with its SIGKILLed worker, before the lease could expire.
fn overlaps(copies: &[Copy]) -> usize {
    copies
        .windows(2)
        .filter(|w| w[0].end.is_some_and(|end| end > w[1].start))
        .count()
}

async fn ended_within(b: &Bench, window: Duration) -> Result<usize> {
    let since = common::now_ms().saturating_sub(window.as_millis() as u64);
    Ok(b.queue.finished_since(since).await? as usize)
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlapping_copies_are_found() {
        let log = "a 1 start 10\na 1 end 20\na 2 start 15\na 2 end 30\nb 3 start 10\nb 3 end 20\nb 4 start 21\nc 5 start 1\nc 6 start 5\n";
        let c = super::copies(log);
        assert_eq!(super::overlaps(&c["a"]), 1);
        assert_eq!(super::overlaps(&c["b"]), 0);
        assert_eq!(
            super::overlaps(&c["c"]),
            0,
            "a copy without an end died with its worker"
        );
    }
}
