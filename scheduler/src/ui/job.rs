//! A job's page: what it is (the spec, secrets masked), where it stands (its state, its
//! place in the queue and why it waits), its history as a timeline (attempts, retries,
//! preemptions, who did what), its log as it is written (Server-Sent Events), and the
//! cancel and retry buttons for the roles that may use them.

use super::session::{NoSession, Session};
use super::{error_page, maud_response, page};
use crate::api::Api;
use crate::app::parse_job_id as parse_id;
use crate::app::{AppError, Role};
use crate::format::timestamp as when;
use axum::extract::{Path, State};
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
    let job = match parse_id(&raw) {
        Ok(id) => api.app.job(&session.caller, &id).await,
        Err(e) => Err(e),
    };
    match job {
        Ok(job) => maud_response(page(&job.spec.name, Some(&session), body(&job, &session))).into_response(),
        Err(e) => error_page(Some(&session), &e),
    }
}

fn body(job: &JobRecord, session: &Session) -> Markup {
    let id = job.id.as_str();
    let may_act = session.caller.require(Role::Submitter, "").is_ok();
    let spec = serde_json::to_string_pretty(&job.spec).unwrap_or_default();
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
        section #history {
            h2 { "History" }
            table {
                tr { th { "when" } th { "state" } th.num { "attempt" } th { "worker" } th { "detail" } }
                @for e in &job.events {
                    tr { td { (when(e.at)) } td { (e.state.to_string()) } td.num { (e.attempt) }
                        td { (e.worker.as_deref().unwrap_or("")) } td { (e.detail.as_deref().unwrap_or("")) } }
                }
            }
        }
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
