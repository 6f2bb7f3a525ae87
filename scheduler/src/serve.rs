//! `scheduler serve`: the long-running loops that look after the queue.
//!
//! Workers also reap and promote, so the queue keeps working while `serve` is down;
//! `serve` makes recovery and retries prompt when no worker is idle to notice, it is the
//! one process that writes the job store (from the outbox), and it serves the pool-wide
//! metrics the autoscaler reads.

use crate::app::App;
use crate::cli::ServeArgs;
use crate::metrics::ServeMetrics;
use crate::store_sync::{drain, reconcile, retention};
use crate::{CliError, CliResult};
use common::queue::RedisQueue;
use common::store::JobStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Reconciles once, then runs the reaper, the retry promoter, the outbox drainer,
/// retention and the HTTP endpoints until `shutdown` fires.
pub async fn run(app: App, args: ServeArgs, shutdown: CancellationToken) -> CliResult<()> {
    let queue = app.queue().clone();
    let store = app.store().await?.clone();
    let pricing = app.pricing().clone();
    let metrics = Arc::new(ServeMetrics::new());
    // A quota file that cannot be read or is wrong stops serve at start (exit 2); later
    // edits that are wrong are logged and the last good one stays.
    let mut quotas = None;
    if let Some(path) = &args.quotas {
        quotas = Some(apply_quotas(&queue, path, None).await?);
    }
    let pricer = crate::app::attempt_pricer(pricing.clone());
    let api = if args.api {
        Some(crate::api::Api::new(app.clone(), &args).await?)
    } else {
        None
    };
    let listener = match &args.listen {
        Some(addr) => Some(common::http::bind(addr).await.map_err(CliError::Infra)?),
        None => None,
    };
    tracing::info!(store = store.display_url(), listen = ?args.listen, "scheduler serving");
    // Never adopts a Redis the store does not know: that takes an operator's
    // `scheduler reconcile --adopt` (reconcile logs what it would restore).
    match reconcile::reconcile(&queue, &store, false, Some(&metrics), Some(&*pricer)).await {
        Ok(report) => tracing::info!(?report, "reconciled Redis and the job store"),
        Err(e) => {
            tracing::warn!(error = %e, "start-up reconciliation failed; run `scheduler reconcile` later")
        }
    }
    let tasks = TaskTracker::new();
    if let Some(listener) = listener {
        let base = common::http::router(endpoints(&queue, &store, &metrics));
        let router = match &api {
            // The agent tools at /mcp share the API's tokens.
            Some(api) => base
                .merge(api.router(shutdown.clone()))
                .merge(crate::mcp::router(api.clone(), shutdown.clone()))
                .merge(crate::ui::router(api.clone(), shutdown.clone())),
            None => base,
        };
        tasks.spawn(common::http::serve_router(listener, router, shutdown.clone()));
    }
    tasks.spawn(drain::drain_loop(
        queue.clone(),
        store.clone(),
        args.drain_interval,
        metrics.clone(),
        pricer.clone(),
        shutdown.clone(),
    ));
    let keep = retention::Retention {
        redis: args.redis_retention,
        dead: args.dead_retention,
        store: args.store_retention,
    };
    tasks.spawn(retention::retention_loop(
        queue.clone(),
        store.clone(),
        keep,
        args.retention_interval,
        shutdown.clone(),
    ));
    tasks.spawn(restart_watch_loop(
        queue.clone(),
        store.clone(),
        args.reap_interval,
        metrics.clone(),
        pricer.clone(),
        shutdown.clone(),
    ));
    if let (Some(path), Some(applied)) = (args.quotas.clone(), quotas) {
        tasks.spawn(quota_watch_loop(
            queue.clone(),
            path,
            applied,
            args.quotas_interval,
            shutdown.clone(),
        ));
    }
    tasks.spawn(cost_watch_loop(
        queue.clone(),
        store.clone(),
        pricing,
        args.cost_interval,
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.close();
    housekeeping(&queue, &args, &shutdown).await;
    tasks.wait().await;
    store.close().await;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// /metrics reads the queue at scrape time; /readyz needs both Redis and the store.
fn endpoints(queue: &RedisQueue, store: &JobStore, metrics: &Arc<ServeMetrics>) -> common::http::Endpoints {
    let (q, m) = (queue.clone(), metrics.clone());
    let (q2, s) = (queue.clone(), store.clone());
    common::http::Endpoints {
        metrics: Arc::new(move || {
            let (q, m) = (q.clone(), m.clone());
            Box::pin(async move { m.scrape(&q).await })
        }),
        ready: Arc::new(move || {
            let (q, s) = (q2.clone(), s.clone());
            Box::pin(async move {
                q.ping().await.map_err(|e| format!("Redis: {e}"))?;
                s.ping()
                    .await
                    .map_err(|e| format!("job store {}: {e}", s.display_url()))
            })
        }),
    }
}

async fn housekeeping(queue: &RedisQueue, args: &ServeArgs, shutdown: &CancellationToken) {
    let mut promote = tokio::time::interval(args.promote_interval);
    let mut reap = tokio::time::interval(args.reap_interval);
    for tick in [&mut promote, &mut reap] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = promote.tick() => match queue.promote_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "promoted due retries"),
                Err(e) => tracing::warn!(error = %e, "promoting retries failed; retrying next tick"),
            },
            _ = reap.tick() => {
                if let Err(e) = queue.reap().await {
                    tracing::warn!(error = %e, "reaper pass failed; retrying next tick");
                }
                match queue.preempt().await {
                    Ok(started) => {
                        for s in started {
                            tracing::info!(pool = %s.pool, preemptor = %s.preemptor, victims = ?s.victims, "preemption started");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "preemption pass failed; retrying next tick"),
                }
            }
        }
    }
}

/// Reconciles again after Redis restarted or failed over while `serve` ran: a crash with
/// AOF `everysec`, or an asynchronous failover, can lose a job's latest writes (its
/// enqueue, its claim), and the store, which had them, puts the job back. Waits for the
/// hold after the restart first, so workers have stopped what they no longer hold.
async fn restart_watch_loop(
    queue: RedisQueue,
    store: JobStore,
    every: Duration,
    metrics: Arc<ServeMetrics>,
    pricer: Arc<common::store::Pricer>,
    shutdown: CancellationToken,
) {
    let mut seen = queue
        .last_restart()
        .await
        .ok()
        .flatten()
        .map(|(changed, _)| changed);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Ok(Some((changed, hold_until))) = queue.last_restart().await else {
            continue;
        };
        if seen == Some(changed) || common::now_ms() < hold_until {
            continue;
        }
        match reconcile::reconcile(&queue, &store, false, Some(&metrics), Some(&*pricer)).await {
            Ok(report) => {
                tracing::warn!(
                    ?report,
                    "Redis restarted or failed over; reconciled it with the job store"
                );
                seen = Some(changed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciling after a Redis restart failed; retrying next tick")
            }
        }
    }
}

/// Applies the quota file when its text differs from `last`; returns the text applied.
async fn apply_quotas(queue: &RedisQueue, path: &std::path::Path, last: Option<&str>) -> CliResult<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("cannot read the quota file {}: {e}", path.display())))?;
    if last == Some(text.as_str()) {
        return Ok(text);
    }
    let config = crate::app::parse_quota_file(path, &text)?;
    queue.set_admission(&config).await?;
    tracing::info!(file = %path.display(), pools = config.pools.len(), "applied the quota file");
    Ok(text)
}

/// Re-applies the quota file whenever its content changes (a ConfigMap update reaches
/// the mounted file within a minute or so). A wrong edit is logged and the last good
/// configuration stays; Redis being away is retried at the next tick.
async fn quota_watch_loop(
    queue: RedisQueue,
    path: std::path::PathBuf,
    mut applied: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match apply_quotas(&queue, &path, Some(&applied)).await {
            Ok(text) => {
                applied = text;
                refused = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if refused.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, file = %path.display(),
                        "the quota file was not applied; the last good one stays");
                    refused = Some(msg);
                }
            }
        }
    }
}

/// Counts, for the metrics, running jobs past twice their duration estimate (by model
/// type) and each budget's forecast (spent this month plus the estimates of the team's
/// unfinished jobs) over its amount.
async fn cost_watch_loop(
    queue: RedisQueue,
    store: JobStore,
    model: cost::CostModel,
    every: Duration,
    metrics: Arc<ServeMetrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match cost_figures(&queue, &store, &model).await {
            Ok((overruns, forecasts)) => metrics.set_costs(&overruns, &forecasts),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count overruns and budget forecasts; retrying next tick")
            }
        }
    }
}

type CostFigures = (std::collections::BTreeMap<String, u64>, Vec<(String, f64)>);

async fn cost_figures(
    queue: &RedisQueue,
    store: &JobStore,
    model: &cost::CostModel,
) -> CliResult<CostFigures> {
    use crate::app::Estimator;
    let mut estimator = Estimator::new(model, Some(store));
    let now = common::now_ms();
    let running = queue
        .list(&common::ListFilter {
            state: Some(common::JobState::Running),
            limit: 10_000,
            ..common::ListFilter::default()
        })
        .await?;
    let mut overruns = std::collections::BTreeMap::new();
    for job in running {
        let estimate = estimator.estimate(&job.spec, false, chrono::Utc::now()).await?;
        let elapsed_secs = job.started_at.map_or(0, |t| now.saturating_sub(t) / 1000);
        let count = overruns.entry(job.spec.model_type.clone()).or_insert(0);
        if estimate.duration_secs > 0 && elapsed_secs > 2 * estimate.duration_secs {
            *count += 1;
        }
    }
    let month = cost::Month::of(chrono::Utc::now(), model.pricing.time_zone());
    let mut forecasts = Vec::new();
    for b in store.budgets(&month.to_string(), None).await? {
        if !b.experiment.is_empty() || b.amount_micros <= 0 {
            continue;
        }
        let (spent, committed) = crate::app::standing(store, &mut estimator, month, &b.team, "").await?;
        let ratio = (spent.micros() + committed.micros()) as f64 / b.amount_micros as f64;
        forecasts.push((b.team.clone(), ratio));
    }
    Ok((overruns, forecasts))
}
