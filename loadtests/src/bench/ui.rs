//! The dashboard at scale: the overview of a namespace with 10^4 queued and 10^3 running
//! jobs, rendered by `scheduler serve --api`, against the API's JSON of the same
//! dashboard (`GET /v1/status`) in the same run, requests taking turns.
//!
//! The running jobs are leased by a registered worker that never runs them (the bench
//! claims them through the library and heartbeats), so that nothing finishes while the
//! pages are measured.

use super::noop;
use crate::env::{wait_until, Bench};
use crate::report::{percentile, Row};
use anyhow::{bail, Context, Result};
use common::{Priority, WorkerId, WorkerInfo};
use std::time::{Duration, Instant};

/// One timed GET: milliseconds and bytes of body.
fn timed(agent: &ureq::Agent, url: &str, header: (&str, &str)) -> Result<(f64, usize)> {
    let t = Instant::now();
    let r = agent
        .get(url)
        .set(header.0, header.1)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let body = r.into_string()?;
    Ok((t.elapsed().as_secs_f64() * 1000.0, body.len()))
}

pub(crate) async fn run(url: &str, queued: usize, running: usize, samples: usize) -> Result<Vec<Row>> {
    let mut b = Bench::new(url, "ui").await?;
    let db = common::store::sqlite_url(&b.dir.join("jobs.db"));
    let token = b.token(&db, &["--role", "admin", "--name", "bench-ui"])?;

    // The jobs: `running` leased by one worker that heartbeats, `queued` behind them.
    let worker = WorkerId::generate("bench-ui");
    let info = WorkerInfo::starting(&worker, "bench", "noop", running as u32);
    b.queue.heartbeat(&info, Duration::from_secs(600)).await?;
    let specs: Vec<_> = (0..1000).map(|_| noop(Priority::Normal)).collect();
    for _ in 0..(running + queued).div_ceil(1000) {
        b.queue.enqueue_batch(specs.clone()).await?;
    }
    let mut claimed = 0;
    while claimed < running {
        let got = b.queue.claim_many(&worker, (running - claimed).min(100)).await?;
        if got.is_empty() {
            bail!("only {claimed} of {running} jobs could be claimed");
        }
        claimed += got.len();
    }

    let (base, _) = b.serve_api(&db, "/ui/login").await?;
    // The store catches up with the enqueues before anything is measured.
    let q = &b.queue;
    wait_until("the outbox to drain", Duration::from_secs(300), || async move {
        Ok(q.status().await?.outbox == 0)
    })
    .await?;

    let (ui, api, ui_bytes, api_bytes) = tokio::task::spawn_blocking(move || -> Result<_> {
        let agent = ureq::AgentBuilder::new().redirects(0).build();
        let login = agent
            .post(&format!("{base}/ui/login"))
            .send_form(&[("token", &token)]);
        let login = match login {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.into()),
        };
        let cookie = login
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .context("sign-in gave no session cookie")?
            .to_string();
        let bearer = format!("Bearer {token}");
        let (page, status) = (format!("{base}/ui"), format!("{base}/v1/status"));
        let (mut ui, mut api) = (Vec::new(), Vec::new());
        let (mut ui_bytes, mut api_bytes) = (0, 0);
        for i in 0..samples + 10 {
            let (u, ub) = timed(&agent, &page, ("cookie", &cookie))?;
            let (a, ab) = timed(&agent, &status, ("authorization", &bearer))?;
            // The first ten warm the caches and connections.
            if i >= 10 {
                ui.push(u);
                api.push(a);
            }
            (ui_bytes, api_bytes) = (ub, ab);
        }
        ui.sort_by(f64::total_cmp);
        api.sort_by(f64::total_cmp);
        Ok((ui, api, ui_bytes, api_bytes))
    })
    .await??;
    let shape = format!("{queued} queued, {running} running");
    let mut rows = Vec::new();
    for (name, p) in [("p50", 50.0), ("p95", 95.0)] {
        let (u, a) = (percentile(&ui, p), percentile(&api, p));
        rows.push(
            Row::new("ui", format!("overview page {name} ({shape})"), u, "ms")
                .note(format!("{:.2}x GET /v1/status {name} ({a:.1} ms)", u / a)),
        );
    }
    rows.push(
        Row::new("ui", "overview page weight", ui_bytes as f64 / 1000.0, "KB").note(format!(
            "GET /v1/status: {:.1} KB of JSON",
            api_bytes as f64 / 1000.0
        )),
    );
    b.cleanup().await?;
    Ok(rows)
}
