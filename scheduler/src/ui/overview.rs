//! The overview: each priority's depth and oldest wait, pools as bars of used, reserved
//! and free GPUs, teams against their quotas, live workers, and the running jobs.
//!
//! The page polls its own body (`/ui/overview.part`, see [`super::live`]).

use super::chart::{lines, Series};
use super::session::{NoSession, Session};
use super::{error_page, maud_response, page, part_response};
use crate::api::Api;
use crate::app::{Activity, App, Dashboard, PoolRow, RUNNING_SHOWN};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

async fn render(api: &Api, session: &Session) -> Result<Markup, Response> {
    let d = api
        .app
        .dashboard(&session.caller)
        .await
        .map_err(|e| error_page(Some(session), &e))?;
    Ok(body(&d, &api.app))
}

/// `GET /ui`.
pub(super) async fn show(State(api): State<Api>, session: Result<Session, NoSession>) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    match render(&api, &session).await {
        Ok(live) => maud_response(page(
            "Overview",
            Some(&session),
            super::live("/ui/overview.part", live),
        ))
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /ui/overview.part`: the overview's body, or 304 when the browser has it.
pub(super) async fn part(
    State(api): State<Api>,
    session: Result<Session, NoSession>,
    headers: HeaderMap,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.for_script(),
    };
    match render(&api, &session).await {
        Ok(m) => part_response(&headers, m.into_string()),
        Err(r) => r,
    }
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) => crate::format::short_duration(ms),
    }
}

/// A pool's GPUs as a bar: used, reserved, free.
fn bar(p: &PoolRow) -> Markup {
    const W: f64 = 240.0;
    let total = p.capacity.unwrap_or(p.used + p.reserved).max(1) as f64;
    let used = W * (p.used as f64 / total).min(1.0);
    let reserved = (W * (p.reserved as f64 / total)).min(W - used);
    html! {
        svg.bar width=(W) height="14" role="img" aria-label=(format!("{} used, {} reserved", p.used, p.reserved)) {
            rect.free x="0" y="0" width=(W) height="14" {}
            rect.used x="0" y="0" width=(format!("{used:.1}")) height="14" {}
            rect.reserved x=(format!("{used:.1}")) y="0" width=(format!("{reserved:.1}")) height="14" {}
        }
    }
}

/// Jobs that ended per minute over the last hour, succeeded against failed.
fn activity(a: &Activity) -> Markup {
    let series = [
        Series {
            label: "succeeded",
            class: "ok",
            values: a.succeeded.iter().map(|&n| n as f64).collect(),
        },
        Series {
            label: "failed",
            class: "bad",
            values: a.failed.iter().map(|&n| n as f64).collect(),
        },
    ];
    html! {
        section #activity {
            h2 { "Ended per minute, last hour" }
            @if let Some(e) = &a.error { p.error { "The store cannot be read, so there is no history to draw: " (e) } }
            @else { (lines("activity-chart", &series, "an hour ago", "now", |top| format!("{top:.0}/min"))) }
        }
    }
}

fn body(d: &Dashboard, app: &App) -> Markup {
    html! {
        section #queues {
            h2 { "Queues" }
            table {
                tr { th { "priority" } th.num { "queued" } th.num { "held by quota or cap" } th { "oldest wait" } }
                @for q in &d.queues {
                    tr data-priority=(q.priority.alias()) {
                        td { (q.priority.alias()) " " span.muted { "(" (q.priority.as_str()) ")" } }
                        td.num.depth { (q.depth) }
                        td.num { (q.parked) }
                        td { (ago(q.oldest_age_ms)) }
                    }
                }
            }
            p.muted { (format!("{:.1}", d.throughput_per_min)) " jobs finished per minute over the last 10 minutes · "
                (d.retrying) " retrying · " (d.dead) " dead · " (d.health.store_pending) " transitions waiting for the store" }
        }
        (activity(&d.activity))
        section #pools {
            h2 { "GPU pools" }
            @if d.pools.is_empty() { p.muted { "No pools are configured (see scheduler quota apply)." } }
            @else {
                table {
                    tr { th { "pool" } th { "GPUs" } th.num { "used" } th.num { "reserved" } th.num { "free" } th.num { "running" } }
                    @for p in &d.pools {
                        tr { td { (p.pool) } td { (bar(p)) } td.num { (p.used) } td.num { (p.reserved) }
                            td.num { @if let Some(f) = p.free { (f) } @else { "–" } } td.num { (p.running) } }
                    }
                }
            }
        }
        @if !d.teams.is_empty() {
            section #teams {
                h2 { "Teams" }
                table {
                    tr { th { "team" } th { "pool" } th.num { "GPUs used" } th.num { "quota" } th.num { "borrowed" } th.num { "running" } }
                    @for t in &d.teams {
                        tr { td { (t.team) } td { (t.pool) } td.num { (t.used) }
                            td.num { @if let Some(n) = t.nominal { (n) } @else { "–" } }
                            td.num { (t.borrowed) } td.num { (t.running) } }
                    }
                }
            }
        }
        section #workers {
            h2 { "Workers (" (d.capacity.busy) " of " (d.capacity.total) " slots busy)" }
            @if d.workers.is_empty() { p.muted { "No live worker." } }
            @else {
                table {
                    tr { th { "worker" } th { "launcher" } th.num { "slots" } th { "GPUs" } th { "pools" } }
                    @for w in &d.workers {
                        tr { td { (w.id) @if w.draining { " (draining)" } } td { (w.launcher) }
                            td.num { (w.jobs.len()) " / " (w.concurrency) }
                            td { (w.gpus.join(", ")) } td { (w.pools.join(", ")) } }
                    }
                }
            }
        }
        section #running {
            h2 { "Running" }
            @if d.running.is_empty() { p.muted { "Nothing is running." } }
            @else {
                @if d.running.len() >= RUNNING_SHOWN {
                    p.muted { "The first " (RUNNING_SHOWN) " running jobs; " a href="/ui/jobs?state=running" { "all of them" } "." }
                }
                table {
                    tr { th { "job" } th { "name" } th { "team" } th.num { "GPUs" } th { "worker" } th { "progress" } th.num { "cost so far" } }
                    @for j in &d.running {
                        tr.job data-id=(j.id.as_str()) data-state=(j.state.to_string()) {
                            td { a href=(format!("/ui/jobs/{}", j.id.as_str())) { code { (j.id.as_str()) } } } td { (j.spec.name) } td { (j.spec.team) }
                            td.num { (j.spec.resources.gpus) }
                            td { (j.worker.as_deref().unwrap_or("–")) }
                            td { (j.progress.as_deref().unwrap_or("–")) }
                            td.num { (app.cost_so_far(j).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}
