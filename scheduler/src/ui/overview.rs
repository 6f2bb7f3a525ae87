//! The overview: each priority's depth and oldest wait, pools as bars of used, reserved
//! and free GPUs, teams against their quotas, live workers, and the running jobs.
//!
//! The page polls its own body (`/ui/overview.part`) every second with the ETag of what
//! it has, so an unchanged overview costs a 304 and no rendering on the browser's side.

use super::session::{NoSession, Session};
use super::{error_page, maud_response, page};
use crate::api::Api;
use crate::app::{Dashboard, PoolRow};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped};
use sha2::{Digest, Sha256};

async fn render(api: &Api, session: &Session) -> Result<Markup, Response> {
    let d = api
        .app
        .dashboard(&session.caller)
        .await
        .map_err(|e| error_page(Some(session), &e))?;
    Ok(body(&d))
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
            html! {
                div #live { (live) }
                script { (PreEscaped(POLL)) }
            },
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
    let html = match render(&api, &session).await {
        Ok(m) => m.into_string(),
        Err(r) => return r,
    };
    let digest = Sha256::digest(html.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let cache = [(header::ETAG, etag), (header::CACHE_CONTROL, "no-cache".into())];
    if fresh {
        (StatusCode::NOT_MODIFIED, cache).into_response()
    } else {
        (cache, axum::response::Html(html)).into_response()
    }
}

/// Replaces the overview's body when it changed; a lost session goes to sign in.
const POLL: &str = r#"
(function () {
  var etag = null;
  function tick() {
    var h = etag ? { 'If-None-Match': etag } : {};
    fetch('/ui/overview.part', { headers: h, credentials: 'same-origin' }).then(function (r) {
      if (r.status === 401) { location.href = '/ui/login?why=refused'; return; }
      if (r.status === 200) {
        etag = r.headers.get('ETag');
        return r.text().then(function (t) { document.getElementById('live').innerHTML = t; });
      }
    }).catch(function () {}).then(function () { setTimeout(tick, 1000); });
  }
  setTimeout(tick, 1000);
})();
"#;

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

fn body(d: &Dashboard) -> Markup {
    html! {
        section #queues {
            h2 { "Queues" }
            table {
                tr { th { "priority" } th.num { "queued" } th.num { "held by quota or cap" } th { "oldest wait" } }
                @for q in &d.queues {
                    tr data-priority=(q.priority.as_str()) {
                        td { (q.priority.as_str()) }
                        td.num.depth { (q.depth) }
                        td.num { (q.parked) }
                        td { (ago(q.oldest_age_ms)) }
                    }
                }
            }
            p.muted { (format!("{:.1}", d.throughput_per_min)) " jobs finished per minute over the last 10 minutes · "
                (d.retrying) " retrying · " (d.dead) " dead · " (d.health.store_pending) " transitions waiting for the store" }
        }
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
                table {
                    tr { th { "job" } th { "name" } th { "team" } th.num { "GPUs" } th { "worker" } th { "progress" } }
                    @for j in &d.running {
                        tr.job data-id=(j.id.as_str()) data-state=(j.state.to_string()) {
                            td { a href=(format!("/ui/jobs/{}", j.id.as_str())) { code { (j.id.as_str()) } } } td { (j.spec.name) } td { (j.spec.team) }
                            td.num { (j.spec.resources.gpus) }
                            td { (j.worker.as_deref().unwrap_or("–")) }
                            td { (j.progress.as_deref().unwrap_or("–")) }
                        }
                    }
                }
            }
        }
    }
}
