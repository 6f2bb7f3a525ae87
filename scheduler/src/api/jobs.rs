//! `/v1/jobs` and `/v1/batches`.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{job_id, parse_json, strip_position, Authed, Body, Params, RawBody};
use super::Api;
use crate::app::{AppError, SameId, Wait};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use common::{JobState, ListCursor, ListFilter, Priority};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

/// Most jobs a page returns.
const MAX_PAGE: usize = 1000;

/// A body that is not JSON at all is `bad_input`, as for every other body, before the
/// spec's own rules (`invalid_spec`). The check allocates nothing.
fn check_json(text: &str) -> ApiResult<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| {
            ApiError::bad_request(
                "bad_input",
                format!("the body is not valid JSON: {}", strip_position(&e.to_string())),
            )
        })
}

/// What an enqueue did.
#[derive(Serialize, ToSchema)]
pub(super) struct EnqueueResponse {
    /// False when the same spec with the same id was enqueued before (nothing changed).
    pub(super) created: bool,
    /// The job as it is now, secrets masked.
    #[schema(value_type = Object)]
    pub(super) job: common::JobRecord,
    /// Budget warnings.
    pub(super) warnings: Vec<String>,
    /// What it will cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(super) estimate: Option<crate::app::CostSummary>,
}

/// Enqueue one job
///
/// The spec's team defaults to the token's; a spec naming another team is refused.
/// Enqueueing the same spec with the same id again changes nothing (200); the same id
/// with a different spec is a conflict (409).
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body(content = common::JobSpec, description = "A job spec (unknown fields are refused)"),
    responses(
        (status = 201, description = "Enqueued", body = EnqueueResponse),
        (status = 200, description = "Already enqueued with this spec", body = EnqueueResponse),
        (status = 400, description = "Bad spec, or over budget", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The id is taken by a different spec", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub(super) async fn enqueue(
    State(api): State<Api>,
    Authed(caller): Authed,
    body: RawBody,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body.0)
        .map_err(|_| ApiError::bad_request("bad_input", "the body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "bad_input",
            "the body is empty; it must be JSON",
        ));
    }
    // Only a refused spec is scanned again, to tell a body that is not JSON at all.
    let spec = match api.app.spec_from_json(&caller, text) {
        Ok(spec) => spec,
        Err(e) => {
            check_json(text)?;
            return Err(e.into());
        }
    };
    let out = api.app.enqueue(&caller, spec, SameId::RefuseOtherSpec).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(EnqueueResponse {
            created: out.created,
            job: out.job,
            warnings: out.warnings,
            estimate: out.estimate,
        }),
    )
        .into_response())
}

/// A batch of specs, enqueued all-or-nothing.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchRequest {
    /// The specs (at most 5,000).
    #[schema(value_type = Vec<common::JobSpec>)]
    pub(super) jobs: Vec<Box<serde_json::value::RawValue>>,
}

/// What a batch enqueue did.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchResponse {
    /// The ids of all jobs, in order (generated where the spec had none).
    pub(super) ids: Vec<String>,
    /// How many were new.
    pub(super) created: usize,
    /// Ids that already existed and were left unchanged.
    pub(super) existing: Vec<String>,
    /// Budget warnings.
    pub(super) warnings: Vec<String>,
    /// What the new jobs will cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) estimate: Option<serde_json::Value>,
}

/// Enqueue a batch
///
/// All jobs or none: a spec that is wrong refuses the whole batch, naming it.
#[utoipa::path(post, path = "/v1/batches", tag = "jobs",
    request_body = BatchRequest,
    responses(
        (status = 201, body = BatchResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub(super) async fn batch(
    State(api): State<Api>,
    Authed(caller): Authed,
    Body(req): Body<BatchRequest>,
) -> ApiResult<Response> {
    let mut specs = Vec::with_capacity(req.jobs.len());
    for (n, v) in req.jobs.into_iter().enumerate() {
        specs.push(api.app.spec_from_json(&caller, v.get()).map_err(|e| match e {
            AppError::BadInput { code, message } => AppError::BadInput {
                code,
                message: format!("jobs[{n}]: {message}"),
            },
            e => e,
        })?);
    }
    let out = api
        .app
        .enqueue_batch(&caller, specs, None, SameId::RefuseOtherSpec)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(BatchResponse {
            ids: out.report.ids.iter().map(ToString::to_string).collect(),
            created: out.report.created,
            existing: out.report.existing.iter().map(ToString::to_string).collect(),
            warnings: out.warnings,
            estimate: out.estimate.map(|e| serde_json::to_value(e).unwrap_or_default()),
        }),
    )
        .into_response())
}

/// Filters and paging of the job list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<String>)]
    pub(super) state: Option<JobState>,
    /// Only jobs of this priority (urgent, normal, background, or p0..p2).
    #[param(value_type = Option<String>)]
    pub(super) priority: Option<Priority>,
    /// Only this team's jobs (a team token sees its own only).
    pub(super) team: Option<String>,
    /// Only jobs of this model type.
    pub(super) model_type: Option<String>,
    /// Only jobs enqueued at or after this time (ms since the epoch).
    #[param(minimum = 0, maximum = 253402300799999_u64)]
    pub(super) since: Option<u64>,
    /// Only jobs enqueued before this time (ms since the epoch).
    #[param(minimum = 0, maximum = 253402300799999_u64)]
    pub(super) until: Option<u64>,
    /// The previous page's `next`.
    pub(super) before: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub(super) limit: Option<usize>,
}

/// A page of jobs.
#[derive(Serialize, ToSchema)]
pub(super) struct JobPageBody {
    /// Newest first, secrets masked.
    pub(super) jobs: Vec<serde_json::Value>,
    /// The `before` of the next page, when this one is full.
    pub(super) next: Option<String>,
}

/// List jobs
///
/// Newest first, from Redis (live) and the job store (everything), merged.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPageBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn list(
    State(api): State<Api>,
    Authed(caller): Authed,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<JobPageBody>> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "bad_input",
            format!("query parameter limit: must be 1 to {MAX_PAGE}"),
        ));
    }
    for (name, t) in [("since", q.since), ("until", q.until)] {
        crate::app::check_time(name, t).map_err(ApiError::from)?;
    }
    let before = q
        .before
        .as_deref()
        .map(str::parse::<ListCursor>)
        .transpose()
        .map_err(|e| ApiError::bad_request("bad_input", format!("query parameter before: {e}")))?;
    let filter = ListFilter {
        state: q.state,
        priority: q.priority,
        team: q.team,
        model_type: q.model_type,
        since_ms: q.since,
        until_ms: q.until,
        before,
        offset: 0,
        limit,
    };
    let page = api.app.list(&caller, filter).await?;
    Ok(Json(JobPageBody {
        jobs: page
            .jobs
            .iter()
            .map(|j| serde_json::to_value(j).unwrap_or_default())
            .collect(),
        next: page.next,
    }))
}

/// Waiting for a state.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ShowQuery {
    /// Block until the job is in one of these states (comma-separated), or `end` for
    /// any final state.
    pub(super) wait: Option<String>,
    /// How long to block (`30s`, `2m`; at most 5m; default 30s).
    pub(super) timeout: Option<String>,
}

/// Read a job
///
/// With `wait`, the request blocks until the job reaches one of the states or the
/// timeout passes; the `gpuq-wait` header says which (`reached` or `timeout`).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), ShowQuery),
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn show(
    State(api): State<Api>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Params(q): Params<ShowQuery>,
) -> ApiResult<Response> {
    let id = job_id(&id)?;
    let Some(wait) = q.wait else {
        if q.timeout.is_some() {
            return Err(ApiError::bad_request(
                "bad_input",
                "query parameter timeout: only with wait",
            ));
        }
        return Ok(Json(api.app.job(&caller, &id).await?).into_response());
    };
    let states = if wait == "end" {
        Vec::new()
    } else {
        wait.split(',')
            .map(|s| s.trim().parse::<JobState>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::bad_request("bad_input", format!("query parameter wait: {e}")))?
    };
    let timeout = match q.timeout.as_deref() {
        None => Duration::from_secs(30),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::bad_request("bad_input", format!("query parameter timeout {t:?}: {e}")))?,
    };
    if timeout > crate::app::MAX_WAIT {
        return Err(ApiError::bad_request(
            "bad_input",
            "query parameter timeout: at most 5m",
        ));
    }
    // Checks the job exists (and is the caller's) before taking a connection.
    api.app.job(&caller, &id).await?;
    let mut conn = api.wait_connection().await?;
    let (how, job) = api
        .app
        .wait_for(&caller, &id, &states, timeout, &mut conn)
        .await?;
    let mut response = Json(job).into_response();
    response.headers_mut().insert(
        "gpuq-wait",
        axum::http::HeaderValue::from_static(if how == Wait::Reached {
            "reached"
        } else {
            "timeout"
        }),
    );
    Ok(response)
}

/// Why a job is cancelled.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelRequest {
    /// Kept in the job's history with the caller's name.
    pub(super) reason: Option<String>,
}

/// What a cancel or retry did.
#[derive(Serialize, ToSchema)]
pub(super) struct StateChange {
    /// The job.
    pub(super) id: String,
    /// `cancelled`, `cancelling` (its worker is stopping it), or `queued`.
    pub(super) state: String,
}

/// Cancel a job
///
/// A queued job is cancelled at once; a running one is stopped by its worker.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    request_body(content = Option<CancelRequest>, description = "Optional reason"),
    responses((status = 200, body = StateChange), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn cancel(
    State(api): State<Api>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<StateChange>> {
    let id = job_id(&id)?;
    let req: CancelRequest = if body.is_empty() {
        CancelRequest::default()
    } else {
        parse_json(&body)?
    };
    let out = api.app.cancel(&caller, &id, req.reason.as_deref()).await?;
    Ok(Json(StateChange {
        id: out.id.to_string(),
        state: out.state.into(),
    }))
}

/// Retry a job
///
/// Queues a dead, failed or cancelled job again with fresh attempts.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "The job's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = StateChange), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn retry(
    State(api): State<Api>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<StateChange>> {
    let id = job_id(&id)?;
    api.app.retry(&caller, &id).await?;
    Ok(Json(StateChange {
        id: id.to_string(),
        state: "queued".into(),
    }))
}

/// How much of the log.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogsQuery {
    /// The last this many lines (1 to 10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub(super) lines: Option<usize>,
}

/// Log lines.
#[derive(Serialize, ToSchema)]
pub(super) struct LogLines {
    /// Oldest first.
    pub(super) lines: Vec<String>,
}

/// Read a job's log
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "jobs",
    params(("id" = String, Path, description = "The job's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), LogsQuery),
    responses((status = 200, body = LogLines), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn logs(
    State(api): State<Api>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Params(q): Params<LogsQuery>,
) -> ApiResult<Json<LogLines>> {
    let id = job_id(&id)?;
    let n = q.lines.unwrap_or(100);
    if n == 0 || n > 10_000 {
        return Err(ApiError::bad_request(
            "bad_input",
            "query parameter lines: must be 1 to 10000",
        ));
    }
    Ok(Json(LogLines {
        lines: api.app.logs(&caller, &id, n).await?,
    }))
}

/// Follow a job's log
///
/// Server-Sent Events: one `data` event per output line as the job writes it (the
/// lines written so far first), then an `end` event once the job has ended.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs/stream", tag = "jobs",
    params(("id" = String, Path, description = "The job's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "Server-Sent Events: `data` per line, then `end`", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn follow(
    State(api): State<Api>,
    Extension(shutdown): Extension<CancellationToken>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = job_id(&id)?;
    api.app.check_log_access(&caller, &id).await?;
    log_events(api, id, shutdown).await
}

/// A job's log as Server-Sent Events (`data` per line, then `end`), for a caller already
/// allowed to read it: the API's follow and the dashboard's job page.
pub(crate) async fn log_events(
    api: Api,
    id: common::JobId,
    shutdown: CancellationToken,
) -> ApiResult<Response> {
    let conn = api.wait_connection().await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let mut conn = conn;
        let mut seen = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let chunk = match api.app.queue().log_since(&mut *conn, &id, seen).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx
                        .send(Ok(Event::default().event("error").data(e.to_string())))
                        .await;
                    return;
                }
            };
            seen = chunk.written;
            if chunk.skipped > 0 {
                let _ = tx
                    .send(Ok(Event::default()
                        .event("skipped")
                        .data(chunk.skipped.to_string())))
                    .await;
            }
            for line in chunk.lines {
                if tx.send(Ok(Event::default().data(line))).await.is_err() {
                    return;
                }
            }
            let ended = match api.app.queue().get_unexplained(&id).await {
                Ok(Some(j)) => j.state.is_terminal(),
                Ok(None) => true,
                Err(_) => false,
            };
            if ended {
                // Lines written between the read and the end were read above or will
                // be by this last pass.
                if let Ok(last) = api.app.queue().log_since(&mut *conn, &id, seen).await {
                    for line in last.lines {
                        let _ = tx.send(Ok(Event::default().data(line))).await;
                    }
                }
                let _ = tx.send(Ok(Event::default().event("end").data("end"))).await;
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
