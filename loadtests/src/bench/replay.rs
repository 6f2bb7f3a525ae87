//! Replays a job trace through the real queue in accelerated real time, to measure what
//! admission does for a real-shaped workload: queueing delay, completion time, GPU
//! utilization, makespan, and how many admissions per second it sustained. Each figure
//! comes with the same trace and quotas run as isolated per-team FIFO partitions (no
//! borrowing, strict order), so every figure is also a ratio.
//!
//! The trace is CSV with the header `submit_s,duration_s,gpus,team[,priority][,gpu_type]`,
//! times in seconds from the trace start. Job `i` is enqueued at `submit_s / K` and runs on
//! workers with the simulated launcher (`worker --launcher sim`), which holds its GPUs for
//! `duration_s / K` and succeeds: real claims, real leases, no processes.

use crate::env::{wait_until, Bench};
use crate::report::Row;
use anyhow::{bail, Context, Result};
use common::admission::{AdmissionConfig, Strategy};
use common::{JobSpec, JobState, Priority};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// One job of a trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraceJob {
    pub(crate) submit_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) gpus: u32,
    pub(crate) team: String,
    pub(crate) priority: Priority,
    pub(crate) gpu_type: Option<String>,
}

/// Reads a trace, naming the line of anything wrong.
pub(crate) fn parse_trace(text: &str) -> Result<Vec<TraceJob>> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().context("the trace is empty")?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let want = ["submit_s", "duration_s", "gpus", "team"];
    if cols.len() < 4 || cols[..4] != want || cols[4..].iter().any(|c| !matches!(*c, "priority" | "gpu_type"))
    {
        bail!("trace header must be submit_s,duration_s,gpus,team[,priority][,gpu_type], got {header:?}");
    }
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let mut jobs = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |what: &str| anyhow::anyhow!("trace line {}: {what}: {line:?}", n + 1);
        if f.len() != cols.len() {
            return Err(bad(&format!("{} fields, the header has {}", f.len(), cols.len())));
        }
        let num = |i: usize, what: &str| -> Result<f64> {
            let v: f64 = f[i]
                .parse()
                .map_err(|_| bad(&format!("{what} is not a number")))?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad(&format!("{what} must be 0 or more")));
            }
            Ok(v)
        };
        jobs.push(TraceJob {
            submit_s: num(0, "submit_s")?,
            duration_s: num(1, "duration_s")?,
            gpus: f[2].parse().map_err(|_| bad("gpus is not a whole number"))?,
            team: f[3].to_string(),
            priority: match at("priority") {
                Some(i) => f[i].parse().map_err(|e: String| bad(&e))?,
                None => Priority::Normal,
            },
            gpu_type: at("gpu_type").map(|i| f[i].to_string()).filter(|t| !t.is_empty()),
        });
    }
    jobs.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    Ok(jobs)
}

/// The isolated per-team partitions the replay compares with: each team keeps to its
/// nominal quota (no borrowing, nothing lent), strictly in order.
pub(crate) fn partitions(config: &AdmissionConfig) -> AdmissionConfig {
    let mut c = config.clone();
    // Isolated FIFO partitions: nothing borrowed, nothing preempted.
    c.preemption.enabled = Some(false);
    for pool in c.pools.values_mut() {
        pool.strategy = Strategy::Strict;
        for q in pool.quotas.values_mut() {
            q.borrowing_limit = Some(0);
        }
    }
    c
}

/// When one job of the replay started and ended, in trace seconds from the trace start.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Scheduled {
    pub(crate) job: usize,
    pub(crate) team: String,
    pub(crate) priority: Priority,
    pub(crate) submit_s: f64,
    pub(crate) start_s: f64,
    pub(crate) end_s: f64,
}

/// What one replay measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Replay {
    pub(crate) schedule: Vec<Scheduled>,
    /// Mean of used / capacity over the run, in [0, 1].
    pub(crate) utilization: f64,
    pub(crate) makespan_s: f64,
    /// Jobs admitted per real second, over the run and in its busiest second.
    pub(crate) admissions_per_s: f64,
    pub(crate) peak_admissions_per_s: f64,
    /// Jobs the queue refused at enqueue (they could never be admitted).
    pub(crate) refused: usize,
    /// Running jobs preempted (and run again from their start: simulated jobs keep no
    /// checkpoint), and the GPU seconds of work that lost, in trace seconds.
    pub(crate) preemptions: u64,
    pub(crate) preempted_gpu_s: f64,
}

/// Runs one replay of `trace` under `config` on `workers` simulated workers.
pub(crate) async fn replay(
    url: &str,
    trace: &[TraceJob],
    config: &AdmissionConfig,
    speedup: f64,
    workers: u32,
) -> Result<Replay> {
    let mut b = Bench::new(url, "replay").await?;
    b.queue.set_admission(config).await?;
    for _ in 0..workers {
        // Heartbeats (and with them reaping and the preemption pass) and the cancel watch
        // at the pace of an accelerated trace.
        b.worker(
            "sim",
            512,
            &[
                "--idle-timeout",
                "200ms",
                "--heartbeat-interval",
                "300ms",
                "--cancel-check-interval",
                "100ms",
            ],
        )?;
    }
    b.wait_workers(workers as usize).await?;
    let capacity: u64 = config
        .pools
        .values()
        .filter_map(|p| p.capacity)
        .map(u64::from)
        .sum();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (q, stop) = (b.queue.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(u) = q.usage().await {
                    let used: u64 = u.pools.values().map(|h| h.gpus).sum();
                    samples.push(used as f64 / capacity.max(1) as f64);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(trace.len());
    let mut refused = 0;
    let mut i = 0;
    while i < trace.len() {
        let due = Duration::from_secs_f64(trace[i].submit_s / speedup);
        tokio::time::sleep_until((t0 + due).into()).await;
        // Everything due by now goes in one batch; a job refused at enqueue goes alone
        // so it does not take the rest of its batch with it.
        let now = t0.elapsed().as_secs_f64() * speedup;
        let mut batch = Vec::new();
        while i < trace.len() && trace[i].submit_s <= now {
            batch.push((i, spec(i, &trace[i], speedup)));
            i += 1;
        }
        let specs: Vec<JobSpec> = batch.iter().map(|(_, s)| s.clone()).collect();
        match b.queue.enqueue_batch(specs).await {
            Ok(r) => ids.extend(batch.iter().map(|(n, _)| *n).zip(r.ids)),
            Err(e) if e.is_bad_input() => {
                for (n, s) in batch {
                    match b.queue.enqueue_batch(vec![s]).await {
                        Ok(r) => ids.push((n, r.ids[0].clone())),
                        Err(e) if e.is_bad_input() => refused += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let longest = trace
        .iter()
        .map(|j| j.submit_s + j.duration_s)
        .fold(0.0, f64::max);
    let within = Duration::from_secs_f64(longest / speedup * 4.0 + 60.0);
    let q = b.queue.clone();
    wait_until("the replay to finish", within, || {
        let q = q.clone();
        async move {
            let s = q.status().await?;
            Ok(s.queued() == 0 && s.running == 0 && s.retrying == 0)
        }
    })
    .await?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.await?;
    let mut schedule = Vec::new();
    let mut starts = Vec::new();
    let mut first_enqueue = u64::MAX;
    for (n, id) in &ids {
        let r = b
            .queue
            .get(id)
            .await?
            .with_context(|| format!("job {id} is gone"))?;
        if r.state != JobState::Succeeded {
            bail!("job {id} ended {}", r.state);
        }
        first_enqueue = first_enqueue.min(r.enqueued_at);
        starts.push(r.started_at.unwrap_or(0));
        schedule.push((n, r));
    }
    // Trace time of a server timestamp: the first enqueue is at its trace submit time.
    let base_trace = ids.first().map(|(n, _)| trace[*n].submit_s).unwrap_or(0.0);
    let trace_s = |ms: u64| base_trace + (ms.saturating_sub(first_enqueue)) as f64 / 1000.0 * speedup;
    let schedule: Vec<Scheduled> = schedule
        .into_iter()
        .map(|(n, r)| Scheduled {
            job: *n,
            team: trace[*n].team.clone(),
            priority: trace[*n].priority,
            submit_s: trace_s(r.enqueued_at),
            start_s: trace_s(r.started_at.unwrap_or(0)),
            end_s: trace_s(r.finished_at.unwrap_or(0)),
        })
        .collect();
    starts.sort_unstable();
    let span_s = match (starts.first(), starts.last()) {
        (Some(a), Some(z)) if z > a => (z - a) as f64 / 1000.0,
        _ => 1.0,
    };
    let mut peak = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi] - starts[lo] >= 1000 {
            lo += 1;
        }
        peak = peak.max(hi - lo + 1);
    }
    let makespan_s = schedule.iter().map(|s| s.end_s).fold(0.0, f64::max)
        - schedule
            .iter()
            .map(|s| s.submit_s)
            .fold(f64::MAX, f64::min)
            .min(f64::MAX);
    let counts = b.queue.preemption_counts().await?;
    let preemptions = counts.iter().map(|c| c.victims).sum();
    let preempted_gpu_s = counts.iter().map(|c| c.lost_gpu_ms).sum::<u64>() as f64 / 1000.0 * speedup;
    b.cleanup().await?;
    Ok(Replay {
        utilization: if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<f64>() / samples.len() as f64
        },
        makespan_s: makespan_s.max(0.0),
        admissions_per_s: schedule.len() as f64 / span_s.max(1e-3),
        peak_admissions_per_s: peak as f64,
        refused,
        preemptions,
        preempted_gpu_s,
        schedule,
    })
}

fn spec(i: usize, j: &TraceJob, speedup: f64) -> JobSpec {
    let mut s = JobSpec::new(format!("trace-{i}"), j.team.clone(), vec!["sim".into()]);
    s.id = Some(format!("r{i}").parse().expect("a valid id"));
    s.priority = j.priority;
    s.resources.gpus = j.gpus;
    s.resources.gpu_type = j.gpu_type.clone();
    s.max_attempts = 1;
    let ms = (j.duration_s / speedup * 1000.0).round() as u64;
    s.labels.insert("sim_run_ms".into(), ms.to_string());
    s
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Mean, p50, p95 and p99 of `values`.
fn stats(mut values: Vec<f64>) -> [f64; 4] {
    values.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    [
        mean,
        percentile(&values, 50.0),
        percentile(&values, 95.0),
        percentile(&values, 99.0),
    ]
}

/// The rows of one replay, prefixed with `label`.
fn rows_of(label: &str, r: &Replay) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut groups: BTreeMap<String, Vec<&Scheduled>> = BTreeMap::new();
    for s in &r.schedule {
        groups.entry("all".into()).or_default().push(s);
        groups.entry(format!("team {}", s.team)).or_default().push(s);
        groups
            .entry(format!("priority {}", s.priority))
            .or_default()
            .push(s);
    }
    for (group, jobs) in &groups {
        let wait = stats(jobs.iter().map(|s| s.start_s - s.submit_s).collect());
        let jct = stats(jobs.iter().map(|s| s.end_s - s.submit_s).collect());
        for (what, v) in [("wait", wait), ("completion", jct)] {
            for (stat, x) in ["mean", "p50", "p95", "p99"].iter().zip(v) {
                rows.push(Row::new(
                    "replay",
                    format!("{label} {group} {what} {stat}"),
                    x,
                    "trace s",
                ));
            }
        }
    }
    rows.push(Row::new(
        "replay",
        format!("{label} GPU utilization"),
        r.utilization,
        "ratio",
    ));
    rows.push(Row::new(
        "replay",
        format!("{label} preemptions"),
        r.preemptions as f64,
        "jobs",
    ));
    rows.push(Row::new(
        "replay",
        format!("{label} GPU time preemptions lost"),
        r.preempted_gpu_s,
        "GPU trace s",
    ));
    rows.push(Row::new(
        "replay",
        format!("{label} makespan"),
        r.makespan_s,
        "trace s",
    ));
    rows.push(Row::new(
        "replay",
        format!("{label} admissions"),
        r.admissions_per_s,
        "jobs/s",
    ));
    rows.push(Row::new(
        "replay",
        format!("{label} admissions, busiest second"),
        r.peak_admissions_per_s,
        "jobs/s",
    ));
    if r.refused > 0 {
        rows.push(Row::new(
            "replay",
            format!("{label} refused at enqueue"),
            r.refused as f64,
            "jobs",
        ));
    }
    rows
}

/// `loadtests replay`: the trace under its quotas, then as isolated partitions, with the
/// ratios of the first to the second. With `schedule_out`, writes each run's schedule
/// (CSV: run, job, team, priority, submit_s, start_s, end_s).
pub(crate) async fn run(
    url: &str,
    trace_path: &Path,
    quotas_path: &Path,
    speedup: f64,
    workers: u32,
    schedule_out: Option<&Path>,
) -> Result<Vec<Row>> {
    if !(speedup.is_finite() && speedup > 0.0) {
        bail!("--speedup must be more than 0, got {speedup}");
    }
    let trace = parse_trace(
        &std::fs::read_to_string(trace_path).with_context(|| format!("reading {}", trace_path.display()))?,
    )?;
    let text =
        std::fs::read_to_string(quotas_path).with_context(|| format!("reading {}", quotas_path.display()))?;
    let config: AdmissionConfig =
        toml::from_str(&text).with_context(|| format!("{}", quotas_path.display()))?;
    config.validate()?;
    let quota = replay(url, &trace, &config, speedup, workers).await?;
    let baseline = replay(url, &trace, &partitions(&config), speedup, workers).await?;
    if let Some(out) = schedule_out {
        let mut csv = String::from("run,job,team,priority,submit_s,start_s,end_s\n");
        for (run, r) in [("quotas", &quota), ("partitions", &baseline)] {
            for s in &r.schedule {
                csv.push_str(&format!(
                    "{run},{},{},{},{:.3},{:.3},{:.3}\n",
                    s.job, s.team, s.priority, s.submit_s, s.start_s, s.end_s
                ));
            }
        }
        std::fs::write(out, csv)?;
    }
    let a = rows_of("quotas", &quota);
    let b = rows_of("partitions", &baseline);
    let mut rows = Vec::new();
    for (x, y) in a.iter().zip(&b) {
        let case = x.case.trim_start_matches("quotas ").to_string();
        if y.case.trim_start_matches("partitions ") == case && y.value > 0.0 {
            rows.push(Row::new(
                "replay",
                format!("{case} quotas / partitions"),
                x.value / y.value,
                "ratio",
            ));
        }
    }
    let mut out = a;
    out.extend(b);
    out.extend(rows);
    Ok(out)
}

/// `loadtests trace`: a synthetic trace shaped like a shared GPU cluster's: Poisson
/// arrivals, mostly small jobs with a tail of large ones, run times from minutes to hours,
/// a mix of priorities, spread over `teams` teams.
pub(crate) fn synthetic(jobs: usize, teams: usize, seed: u64, mean_gap_s: f64) -> String {
    let mut rng = seed.max(1);
    let mut next = move || {
        // xorshift64*: enough for a reproducible synthetic trace.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut t = 0.0;
    let mut out = String::from("submit_s,duration_s,gpus,team,priority\n");
    for _ in 0..jobs {
        t += -mean_gap_s * (1.0 - next()).ln();
        let gpus = match next() {
            x if x < 0.55 => 1,
            x if x < 0.80 => 2,
            x if x < 0.93 => 4,
            _ => 8,
        };
        // Log-uniform from 2 minutes to 4 hours.
        let duration = (120f64.ln() + next() * (14_400f64.ln() - 120f64.ln())).exp();
        let priority = match next() {
            x if x < 0.1 => "p0",
            x if x < 0.7 => "p1",
            _ => "p2",
        };
        let team = (next() * teams as f64) as usize % teams.max(1);
        out.push_str(&format!("{t:.1},{duration:.1},{gpus},team-{team},{priority}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_trace_and_names_the_bad_line() {
        let t =
            parse_trace("submit_s,duration_s,gpus,team,gpu_type\n1,10,2,vision,a100\n0,5,1,nlp,\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].team, "nlp", "sorted by submit time");
        assert_eq!(t[1].gpu_type.as_deref(), Some("a100"));
        let e = parse_trace("submit_s,duration_s,gpus,team\n1,x,2,v\n").unwrap_err();
        assert!(
            e.to_string().contains("line 2: duration_s is not a number"),
            "{e}"
        );
        assert!(parse_trace("when,how_long\n").is_err());
    }

    #[test]
    fn the_synthetic_trace_is_reproducible_and_readable() {
        let a = synthetic(200, 5, 7, 30.0);
        assert_eq!(a, synthetic(200, 5, 7, 30.0));
        let t = parse_trace(&a).unwrap();
        assert_eq!(t.len(), 200);
        assert!(t.iter().all(|j| [1, 2, 4, 8].contains(&j.gpus)));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(stats(vec![3.0, 1.0, 2.0])[0], 2.0);
    }
}
