//! A job's page: what it is (the spec, secrets masked), where it stands (its state, its
//! place in the queue and why it waits), its history as a timeline (attempts, retries,
//! preemptions, who did what), its log as it is written (Server-Sent Events), and the
//! cancel and retry buttons for the roles that may use them.

use super::session::{NoSession, Session};
use super::{error_page, maud_response, page, part_response};
use crate::api::Api;
use crate::app::parse_job_id as parse_id;
use crate::app::{AppError, Role};
use crate::format::timestamp as when;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use common::{JobRecord, JobState};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// `GET /ui/jobs/{id}`. Another team's job is "not found", as over the API.
pub(super) async fn show(
    State(api): State<Api>,
    session: Result<Session, NoSession>,
    Path(raw): Path<String>,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    match render(&api, &session, &raw).await {
        Ok((job, live)) => {
            let id = job.id.as_str();
            let spec = serde_json::to_string_pretty(&job.spec).unwrap_or_default();
            maud_response(page(
                &job.spec.name,
                Some(&session),
                html! {
                    (super::live(&format!("/ui/jobs/{id}/part"), live))
                    section {
                        h2 { "Log" }
                        pre #log data-stream=(format!("/ui/jobs/{id}/logs/stream")) {}
                        p.muted #log-state { "Following…" }
                        script { (PreEscaped(FOLLOW)) }
                    }
                    section {
                        h2 { "Spec" }
                        pre #spec { (spec) }
                    }
                },
            ))
            .into_response()
        }
        Err(r) => r,
    }
}

/// `GET /ui/jobs/{id}/part`: the page's live part (state, cost, history), or 304.
pub(super) async fn part(
    State(api): State<Api>,
    session: Result<Session, NoSession>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.for_script(),
    };
    match render(&api, &session, &raw).await {
        Ok((_, live)) => part_response(&headers, live.into_string()),
        Err(r) => r,
    }
}

async fn render(api: &Api, session: &Session, raw: &str) -> Result<(JobRecord, Markup), Response> {
    let job = match parse_id(raw) {
        Ok(id) => api.app.job(&session.caller, &id).await,
        Err(e) => Err(e),
    };
    let job = job.map_err(|e| error_page(Some(session), &e))?;
    let costs = costs(api, session, &job).await;
    let live = body(&job, session, costs);
    Ok((job, live))
}

/// The estimate (what the job costs at its configuration, from history or the default
/// table) against what its running attempt has cost so far and is projected to cost.
/// A cost that cannot be worked out is said, not a failed page.
async fn costs(api: &Api, session: &Session, job: &JobRecord) -> Markup {
    let currency = api.app.pricing().pricing.currency();
    let estimate = api
        .app
        .estimate(&session.caller, std::slice::from_ref(&job.spec), false, None)
        .await;
    let recorded = api.app.recorded_cost(job).await;
    // From the record already read: a running job's forecast needs no second read.
    let forecast = api.app.forecast_of(job);
    html! {
        section #costs {
            h2 { "Cost" }
            table {
                tr { th { "estimate" } td.num #estimate {
                    @match &estimate {
                        Ok(e) => { @if let Some(e) = e.first() { (e.cost) " for ~" (crate::format::short_duration(e.duration_secs * 1000)) span.muted { " (" (e.basis) ")" } } }
                        Err(e) => { span.error { (e.to_string()) } }
                    }
                } }
                tr { th { "recorded" } td.num #recorded {
                    @match &recorded {
                        Ok((m, 0)) => { (currency.format(*m)) span.muted { " (no attempt has ended yet)" } }
                        Ok((m, runs)) => { (currency.format(*m)) span.muted { " for " (runs) " ended attempt run(s)" } }
                        Err(e) => { span.error { (e.to_string()) } }
                    }
                } }
                @if let Some((f, done)) = &forecast {
                    tr { th { "so far" } td.num #so-far { (currency.format(f.so_far)) } }
                    tr { th { "projected" } td.num #projected {
                        @if let Some(t) = f.projected_total { (currency.format(t)) " at the pace of its " (done) " epoch(s) so far" }
                        @else { span.muted { "after its first epoch" } }
                    } }
                }
            }
        }
    }
}

/// The live part: where the job stands, its buttons, its cost and its history.
fn body(job: &JobRecord, session: &Session, costs: Markup) -> Markup {
    let id = job.id.as_str();
    let may_act = session.caller.require(Role::Submitter, "").is_ok();
    html! {
        section #job data-id=(id) data-state=(job.state.to_string()) {
            h2 { (job.spec.name) " " code { (id) } }
            p {
                "State: " strong #state { (job.state.to_string()) }
                " · team " (job.spec.team) " · " (job.priority.as_str())
                " · " (job.spec.resources.gpus) " GPU(s)"
                " · attempt " (job.attempt) " of " (job.attempt_limit)
                @if let Some(w) = &job.worker { " · on " (w) }
                @if let Some(p) = &job.progress { " · " (p) }
            }
            @if job.state == JobState::Queued {
                p #waiting {
                    @if let Some(ahead) = job.position { (ahead) " job(s) ahead of it. " }
                    @if let Some(reason) = &job.waiting { "Waiting: " (reason.to_string()) }
                }
            }
            @if let Some(r) = &job.reason { p { "Reason: " (r) } }
            @if may_act {
                div.actions {
                    @if !job.state.is_terminal() {
                        form.inline method="post" action=(format!("/ui/jobs/{id}/cancel")) {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button #cancel type="submit" { "Cancel" }
                        }
                    }
                    @if matches!(job.state, JobState::Failed | JobState::Dead | JobState::Cancelled) {
                        form.inline method="post" action=(format!("/ui/jobs/{id}/retry")) {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button #retry type="submit" { "Retry" }
                        }
                    }
                }
            }
        }
        (costs)
        section #history {
            h2 { "History" }
            table {
                tr { th { "when" } th.num { "after enqueue" } th { "state" } th.num { "attempt" } th { "worker" } th { "detail" } }
                @for e in &job.events {
                    tr data-state=(e.state.to_string()) { td { (when(e.at)) }
                        td.num { "+" (crate::format::short_duration(e.at.saturating_sub(job.enqueued_at))) }
                        td { (e.state.to_string()) } td.num { (e.attempt) }
                        td { (e.worker.as_deref().unwrap_or("")) } td { (e.detail.as_deref().unwrap_or("")) } }
                }
            }
        }
    }
}

/// Appends each log line as it arrives; says when the log has ended.
const FOLLOW: &str = r#"
(function () {
  var log = document.getElementById('log');
  var state = document.getElementById('log-state');
  var es = new EventSource(log.dataset.stream);
  es.onmessage = function (e) { log.textContent += e.data + '\n'; };
  es.addEventListener('end', function () { state.textContent = 'The job has ended; this is its whole log.'; es.close(); });
  es.addEventListener('error', function () { if (es.readyState === 2) { state.textContent = 'The log stream stopped.'; } });
})();
"#;

/// `GET /ui/jobs/{id}/logs/stream`: the job's log as Server-Sent Events.
pub(super) async fn follow(
    State(api): State<Api>,
    Extension(shutdown): Extension<CancellationToken>,
    session: Result<Session, NoSession>,
    Path(raw): Path<String>,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.for_script(),
    };
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(e) => return error_page(Some(&session), &e),
    };
    if let Err(e) = api.app.check_log_access(&session.caller, &id).await {
        return error_page(Some(&session), &e);
    }
    match crate::api::log_events(api, id, shutdown).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    csrf: Option<String>,
}

/// `POST /ui/jobs/{id}/cancel` and `/retry`: with the session's CSRF token, then back
/// to the job's page.
pub(super) async fn cancel(
    State(api): State<Api>,
    session: Result<Session, NoSession>,
    Path(raw): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(api, session, raw, f, Action::Cancel).await
}

pub(super) async fn retry(
    State(api): State<Api>,
    session: Result<Session, NoSession>,
    Path(raw): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(api, session, raw, f, Action::Retry).await
}

enum Action {
    Cancel,
    Retry,
}

async fn act(
    api: Api,
    session: Result<Session, NoSession>,
    raw: String,
    f: ActionForm,
    action: Action,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    let done = async {
        session.check_csrf(f.csrf.as_deref())?;
        let id = parse_id(&raw)?;
        match action {
            Action::Cancel => {
                api.app
                    .cancel(&session.caller, &id, Some("from the dashboard"))
                    .await?;
            }
            Action::Retry => api.app.retry(&session.caller, &id).await?,
        }
        Ok::<_, AppError>(id)
    }
    .await;
    match done {
        Ok(id) => Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
        Err(e) => error_page(Some(&session), &e),
    }
}
