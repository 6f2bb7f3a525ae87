//! The HTTP API against the library, in the same run: single enqueues from 16 clients
//! (keep-alive), batches of 1,000, the API's latency percentiles, and the resident memory
//! of an idle `serve --api`. `serve` runs throughout (it writes the store from the
//! outbox, as in production); each case starts once it has caught up.

use super::{noop, rate};
use crate::env::{settled_rss, wait_until, Bench};
use crate::report::{percentile, Row};
use anyhow::{bail, Context, Result};
use common::Priority;
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const BATCH: usize = 1000;

struct Api {
    base: String,
    token: String,
}

async fn start(b: &mut Bench) -> Result<(Api, usize)> {
    let db = common::store::sqlite_url(&b.dir.join("jobs.db"));
    let token = b.token(
        &db,
        &["--team", "bench", "--role", "submitter", "--name", "bench"],
    )?;
    let (base, i) = b.serve_api(&db, "/openapi.json").await?;
    Ok((Api { base, token }, i))
}

/// `n` single enqueues over `CLIENTS` keep-alive connections; the rate and each
/// request's latency (ms).
async fn api_singles(api: &Api, n: usize) -> Result<(f64, Vec<f64>)> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    let body = bytes::Bytes::from(serde_json::to_string(&noop(Priority::Normal))?);
    let client: Client<_, Full<bytes::Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, body) = (client.clone(), body.clone());
        let (url, auth) = (format!("{}/v1/jobs", api.base), format!("Bearer {}", api.token));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n / CLIENTS);
            for _ in 0..n / CLIENTS {
                let s = Instant::now();
                let req = hyper::Request::post(url.as_str())
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                let resp = client.request(req).await.context("POST /v1/jobs")?;
                let status = resp.status();
                let reply = resp.into_body().collect().await?.to_bytes();
                if !status.is_success() {
                    bail!("POST /v1/jobs: {status} {}", String::from_utf8_lossy(&reply));
                }
                lat.push(s.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((rate(n / CLIENTS * CLIENTS, t.elapsed().as_secs_f64()), all))
}

async fn lib_singles(b: &Bench, n: usize) -> Result<f64> {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let q = b.queue.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / CLIENTS {
                q.enqueue_batch(vec![noop(Priority::Normal)]).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(rate(n / CLIENTS * CLIENTS, t.elapsed().as_secs_f64()))
}

async fn api_batches(api: &Api, batches: usize) -> Result<f64> {
    let jobs: Vec<_> = (0..BATCH).map(|_| noop(Priority::Background)).collect();
    let body = serde_json::to_string(&serde_json::json!({ "jobs": jobs }))?;
    let (url, auth) = (
        format!("{}/v1/batches", api.base),
        format!("Bearer {}", api.token),
    );
    let t = Instant::now();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let agent = ureq::AgentBuilder::new().build();
        for _ in 0..batches {
            agent
                .post(&url)
                .set("authorization", &auth)
                .set("content-type", "application/json")
                .send_string(&body)
                .context("POST /v1/batches")?
                .into_string()?;
        }
        Ok(())
    })
    .await??;
    Ok(rate(BATCH * batches, t.elapsed().as_secs_f64()))
}

async fn lib_batches(b: &Bench, batches: usize) -> Result<f64> {
    let specs: Vec<_> = (0..BATCH).map(|_| noop(Priority::Background)).collect();
    let t = Instant::now();
    for _ in 0..batches {
        b.queue.enqueue_batch(specs.clone()).await?;
    }
    Ok(rate(BATCH * batches, t.elapsed().as_secs_f64()))
}

/// Waits until `serve` has written every transition so far to the store: each case starts
/// on an idle machine, not behind the last one's backlog.
async fn settle(b: &Bench) -> Result<()> {
    let q = &b.queue;
    wait_until("the outbox to drain", Duration::from_secs(300), || async move {
        Ok(q.status().await?.outbox == 0)
    })
    .await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) async fn run(url: &str, singles: usize, batches: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut b = Bench::new(url, "api").await?;
    let (api, serve) = start(&mut b).await?;

    // Idle first: resident memory once it has settled.
    let pid = b.pid(serve);
    let last = settled_rss(pid).await?;
    rows.push(Row::new(
        "api",
        "idle scheduler serve --api (SQLite store)",
        last as f64 / 1e6,
        "MB",
    ));

    // Library and API take turns, twice each, so that both see the same machine.
    let (mut lib_s, mut api_s, mut lat) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lib_b, mut api_b) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        settle(&b).await?;
        lib_s.push(lib_singles(&b, singles).await?);
        settle(&b).await?;
        let (r, l) = api_singles(&api, singles).await?;
        api_s.push(r);
        lat.extend(l);
        settle(&b).await?;
        lib_b.push(lib_batches(&b, batches).await?);
        settle(&b).await?;
        api_b.push(api_batches(&api, batches).await?);
    }
    let (ls, as_, lb, ab) = (median(lib_s), median(api_s), median(lib_b), median(api_b));
    rows.push(Row::new(
        "api",
        format!("library, single enqueues, {CLIENTS} clients"),
        ls,
        "jobs/s",
    ));
    rows.push(
        Row::new(
            "api",
            format!("API, single enqueues, {CLIENTS} clients (keep-alive)"),
            as_,
            "jobs/s",
        )
        .note(format!("{:.2} of the library", as_ / ls)),
    );
    lat.sort_by(f64::total_cmp);
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        rows.push(Row::new(
            "api",
            format!("API single enqueue latency {name}"),
            percentile(&lat, p),
            "ms",
        ));
    }
    rows.push(Row::new(
        "api",
        format!("library, batches of {BATCH}"),
        lb,
        "jobs/s",
    ));
    rows.push(
        Row::new("api", format!("API, batches of {BATCH}"), ab, "jobs/s")
            .note(format!("{:.2} of the library", ab / lb)),
    );
    b.cleanup().await?;
    Ok(rows)
}
