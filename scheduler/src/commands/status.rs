//! `status` (the dashboard) and `workers`.

use super::jobs::elapsed;
use crate::app::{App, Caller, Dashboard};
use crate::format::{age, print_json, short_duration};
use crate::CliResult;
use common::now_ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn status(
    app: &App,
    caller: &Caller,
    json: bool,
    watch: Option<Duration>,
    shutdown: &CancellationToken,
) -> CliResult<()> {
    loop {
        let d = app.dashboard(caller).await?;
        if json {
            print_json(&d);
        } else {
            if watch.is_some() {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", render(&d, app.queue().keys().prefix()));
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

fn render(d: &Dashboard, prefix: &str) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let h = &d.health;
    let _ = writeln!(o, "gpuq {prefix}   {}", crate::format::timestamp(d.generated_at));
    let store = match (&h.store_ok, &h.store_error) {
        (true, _) => format!("store ok ({} transitions waiting)", h.store_pending),
        (false, e) => format!("store DOWN: {}", e.as_deref().unwrap_or("unknown")),
    };
    let _ = writeln!(
        o,
        "health     redis ok ({:.1} ms)   {store}   workers {} live",
        h.redis_ms,
        d.workers.len()
    );
    let pct = (100 * d.capacity.busy).checked_div(d.capacity.total).unwrap_or(0);
    let _ = writeln!(
        o,
        "capacity   {} of {} slots busy ({pct}%)   throughput {:.1} jobs/min",
        d.capacity.busy, d.capacity.total, d.throughput_per_min
    );
    let _ = writeln!(o, "\nqueues{:>15}  {:>8}  {:>8}", "DEPTH", "OLDEST", "ETA");
    for q in &d.queues {
        let _ = writeln!(
            o,
            "  {} {:<10} {:>5}  {:>8}  {:>8}",
            q.priority,
            q.priority.alias(),
            q.depth,
            q.oldest_age_ms.map(short_duration).unwrap_or_else(|| "-".into()),
            match (q.depth, q.eta_ms) {
                (0, _) => "-".to_string(),
                (_, Some(ms)) => format!("~{}", short_duration(ms)),
                (_, None) => "unknown".to_string(),
            }
        );
    }
    let parked: u64 = d.queues.iter().map(|q| q.parked).sum();
    let _ = writeln!(
        o,
        "  retrying {}   dead-lettered {}   held up by quotas or caps {}",
        d.retrying, d.dead, parked
    );
    super::quota::render_rows(&mut o, &d.pools, &d.teams);
    let _ = writeln!(
        o,
        "\nrunning    {}",
        if d.running.is_empty() { "none" } else { "" }
    );
    for j in &d.running {
        let _ = writeln!(
            o,
            "  {:<38} {} {:<22} {:>8}  {:<12} {}",
            j.id.as_str(),
            j.priority,
            j.spec.name,
            elapsed(j).unwrap_or_default(),
            j.progress.as_deref().unwrap_or(""),
            j.worker.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        o,
        "\nrecent failures {}",
        if d.recent_failures.is_empty() { "none" } else { "" }
    );
    for j in &d.recent_failures {
        let _ = writeln!(
            o,
            "  {:<38} {:<22} {:<8} {:>8} ago  {}",
            j.id.as_str(),
            j.spec.name,
            j.state.as_str(),
            age(j.updated_at),
            j.reason.as_deref().unwrap_or("")
        );
    }
    o
}

pub(crate) async fn workers(app: &App, caller: &Caller, json: bool) -> CliResult<()> {
    let workers = app.workers(caller).await?;
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
