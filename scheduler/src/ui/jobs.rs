//! The job list: filters (state, priority, team, model type, enqueue dates) and pages,
//! newest first, over the same `App::list` as the API's `GET /v1/jobs`.

use super::session::{NoSession, Session};
use super::{error_page, maud_response, page};
use crate::api::Api;
use crate::app::AppError;
use crate::format::timestamp as when;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use common::{JobState, ListCursor, ListFilter, Priority};
use maud::{html, Markup};
use serde::Deserialize;

/// Jobs per page.
const PAGE: usize = 50;

/// The filters as the form sends them: every field, empty when unset.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Filters {
    #[serde(default)]
    state: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    model_type: String,
    /// A date (YYYY-MM-DD, UTC) or an RFC 3339 time.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: String,
}

fn time(name: &str, raw: &str) -> Result<Option<u64>, AppError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.timestamp_millis().max(0) as u64));
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Some(t.and_utc().timestamp_millis().max(0) as u64))
        .ok_or_else(|| {
            AppError::bad_input(format!(
                "{name} {raw:?}: not a date (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
}

fn opt(raw: &str) -> Option<String> {
    let raw = raw.trim();
    (!raw.is_empty()).then(|| raw.to_string())
}

impl Filters {
    fn parse(uri: &Uri) -> Result<Filters, AppError> {
        let query = uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map_err(|e| AppError::bad_input(format!("the job list's filters: {e}")))
    }

    fn filter(&self) -> Result<ListFilter, AppError> {
        let state = opt(&self.state)
            .map(|s| s.parse::<JobState>())
            .transpose()
            .map_err(|e| AppError::bad_input(format!("state: {e}")))?;
        let priority = opt(&self.priority)
            .map(|s| s.parse::<Priority>())
            .transpose()
            .map_err(|e| AppError::bad_input(format!("priority: {e}")))?;
        let before = opt(&self.before)
            .map(|s| s.parse::<ListCursor>())
            .transpose()
            .map_err(|e| AppError::bad_input(format!("before: {e}")))?;
        Ok(ListFilter {
            state,
            priority,
            team: opt(&self.team),
            model_type: opt(&self.model_type),
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
            before,
            offset: 0,
            limit: PAGE,
        })
    }

    /// This query with another page.
    fn with_before(&self, cursor: &str) -> String {
        serde_urlencoded::to_string([
            ("state", self.state.as_str()),
            ("priority", self.priority.as_str()),
            ("team", self.team.as_str()),
            ("model_type", self.model_type.as_str()),
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
            ("before", cursor),
        ])
        .unwrap_or_default()
    }
}

/// `GET /ui/jobs`.
pub(super) async fn list(State(api): State<Api>, session: Result<Session, NoSession>, uri: Uri) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    let listed = async {
        let filters = Filters::parse(&uri)?;
        let mut page = api.app.list(&session.caller, filters.filter()?).await?;
        api.app.explain_waiting(&mut page.jobs).await?;
        Ok::<_, AppError>((filters, page))
    }
    .await;
    match listed {
        Ok((filters, jobs)) => {
            maud_response(page("Jobs", Some(&session), body(&api, &filters, &jobs))).into_response()
        }
        Err(e) => error_page(Some(&session), &e),
    }
}

fn body(api: &Api, f: &Filters, jobs: &crate::app::JobPage) -> Markup {
    const STATES: [&str; 8] = [
        "deferred",
        "queued",
        "running",
        "failed",
        "retrying",
        "succeeded",
        "cancelled",
        "dead",
    ];
    html! {
        section {
            h2 { "Jobs" }
            form #filters method="get" action="/ui/jobs" {
                label { "state " select name="state" {
                    option value="" { "any" }
                    @for s in STATES { option value=(s) selected[f.state == s] { (s) } }
                } } " "
                label { "priority " select name="priority" {
                    option value="" { "any" }
                    @for p in ["urgent", "normal", "background"] { option value=(p) selected[f.priority == p] { (p) } }
                } } " "
                label { "team " input name="team" value=(f.team) size="10"; } " "
                label { "model type " input name="model_type" value=(f.model_type) size="10"; } " "
                label { "since " input name="since" value=(f.since) placeholder="YYYY-MM-DD" size="11"; } " "
                label { "until " input name="until" value=(f.until) placeholder="YYYY-MM-DD" size="11"; } " "
                button type="submit" { "Filter" }
            }
        }
        section {
            @if jobs.jobs.is_empty() { p.muted { "No job matches." } }
            @else {
                table #jobs {
                    tr { th { "job" } th { "name" } th { "team" } th { "state" } th { "priority" } th.num { "GPUs" } th { "enqueued" } th { "where it is" } th.num { "cost so far" } }
                    @for j in &jobs.jobs {
                        tr.job data-id=(j.id.as_str()) data-state=(j.state.to_string()) {
                            td { a href=(format!("/ui/jobs/{}", j.id.as_str())) { code { (j.id.as_str()) } } }
                            td { (j.spec.name) } td { (j.spec.team) } td { (j.state.to_string()) }
                            td { (j.priority.as_str()) } td.num { (j.spec.resources.gpus) }
                            td { (when(j.enqueued_at)) }
                            td {
                                @if let Some(ahead) = j.position { (ahead) " ahead · " }
                                @if let Some(w) = &j.waiting { (w.to_string()) }
                                @else if let Some(w) = &j.worker { "on " (w) }
                                @if let Some(p) = &j.progress { " · " (p) }
                            }
                            td.num { (api.app.cost_so_far(j).unwrap_or_default()) }
                        }
                    }
                }
                @if let Some(next) = &jobs.next {
                    p { a #next href=(format!("/ui/jobs?{}", f.with_before(next))) { "Older jobs →" } }
                }
            }
        }
    }
}
