//! Status, workers, quotas, costs, budgets and tokens.

use super::error::{ApiResult, ErrorBody};
use super::extract::{job_id, Authed, Body, Params};
use super::Api;
use crate::app::{BudgetSet, CompareRequest, EstimateRequest, ReportRequest, TokenRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The dashboard
///
/// Queues with their depth, oldest wait and ETA; pools and teams with their GPUs;
/// workers; running jobs and recent failures. A team token sees its own team's jobs.
#[utoipa::path(get, path = "/v1/status", tag = "pool",
    responses((status = 200, body = serde_json::Value), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn status(
    State(api): State<Api>,
    Authed(caller): Authed,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json(&api.app.dashboard(&caller).await?)))
}

/// Live workers.
#[derive(Serialize, ToSchema)]
pub(super) struct WorkersBody {
    /// From their heartbeats.
    pub(super) workers: Vec<serde_json::Value>,
}

/// Live workers
#[utoipa::path(get, path = "/v1/workers", tag = "pool",
    responses((status = 200, body = WorkersBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn workers(State(api): State<Api>, Authed(caller): Authed) -> ApiResult<Json<WorkersBody>> {
    let workers = api.app.workers(&caller).await?;
    Ok(Json(WorkersBody {
        workers: workers.iter().map(json).collect(),
    }))
}

/// Pools, quotas and usage
#[utoipa::path(get, path = "/v1/quotas", tag = "pool",
    responses((status = 200, body = serde_json::Value), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn quotas(
    State(api): State<Api>,
    Authed(caller): Authed,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json(&api.app.quotas(&caller).await?)))
}

/// Estimates.
#[derive(Serialize, ToSchema)]
pub(super) struct EstimatesBody {
    /// One per spec, in order.
    pub(super) estimates: Vec<serde_json::Value>,
}

/// Estimate what jobs will cost
#[utoipa::path(post, path = "/v1/costs/estimate", tag = "costs", request_body = EstimateRequest,
    responses((status = 200, body = EstimatesBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn estimate(
    State(api): State<Api>,
    Authed(caller): Authed,
    Body(req): Body<EstimateRequest>,
) -> ApiResult<Json<EstimatesBody>> {
    let specs = crate::app::specs_from_values(req.jobs)?;
    let out = api.app.estimate(&caller, &specs, req.spot, req.start).await?;
    Ok(Json(EstimatesBody {
        estimates: out.iter().map(json).collect(),
    }))
}

/// Scenarios compared.
#[derive(Serialize, ToSchema)]
pub(super) struct ScenariosBody {
    /// The spec as given first, then each variation.
    pub(super) scenarios: Vec<serde_json::Value>,
}

/// Compare configurations of a job
#[utoipa::path(post, path = "/v1/costs/compare", tag = "costs", request_body = CompareRequest,
    responses((status = 200, body = ScenariosBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn compare(
    State(api): State<Api>,
    Authed(caller): Authed,
    Body(req): Body<CompareRequest>,
) -> ApiResult<Json<ScenariosBody>> {
    let spec = crate::app::specs_from_values(vec![req.spec])?.remove(0);
    let rows = api
        .app
        .compare(&caller, &spec, &req.batch_sizes, &req.gpus, req.all_options)
        .await?;
    Ok(Json(ScenariosBody {
        scenarios: rows.iter().map(json).collect(),
    }))
}

/// A period to report on.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReportQuery {
    /// From (ms since the epoch).
    #[param(minimum = 0, maximum = 253402300799999_u64)]
    pub(super) from: u64,
    /// To (ms since the epoch; default now).
    #[param(minimum = 0, maximum = 253402300799999_u64)]
    pub(super) to: Option<u64>,
    /// Group by: team, model_type, priority, job (default team).
    pub(super) by: Option<String>,
}

/// What was spent
#[utoipa::path(get, path = "/v1/costs/report", tag = "costs", params(ReportQuery),
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn report(
    State(api): State<Api>,
    Authed(caller): Authed,
    Params(q): Params<ReportQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let req = ReportRequest {
        from: q.from,
        to: q.to,
        by: q.by.unwrap_or_else(|| "team".into()),
    };
    Ok(Json(json(&api.app.cost_report(&caller, &req).await?)))
}

/// The projected cost of a running job
#[utoipa::path(get, path = "/v1/jobs/{id}/forecast", tag = "costs",
    params(("id" = String, Path, description = "The job's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn forecast(
    State(api): State<Api>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (f, _) = api.app.forecast(&caller, &job_id(&id)?).await?;
    Ok(Json(json(&f)))
}

/// Savings for a finished run.
#[derive(Serialize, ToSchema)]
pub(super) struct RecommendationsBody {
    /// What the run cost, formatted.
    pub(super) cost: String,
    /// Each saving with its basis.
    pub(super) recommendations: Vec<serde_json::Value>,
}

/// How a finished run could have cost less
#[utoipa::path(get, path = "/v1/jobs/{id}/recommendations", tag = "costs",
    params(("id" = String, Path, description = "The job's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = RecommendationsBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn recommend(
    State(api): State<Api>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<RecommendationsBody>> {
    let (cost, recs) = api.app.recommend(&caller, &job_id(&id)?).await?;
    Ok(Json(RecommendationsBody {
        cost: api.app.pricing().pricing.currency().format(cost),
        recommendations: recs.iter().map(json).collect(),
    }))
}

/// Which budgets.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct BudgetsQuery {
    /// YYYY-MM (default this month).
    pub(super) month: Option<String>,
    /// Only this team (a team token sees its own only).
    pub(super) team: Option<String>,
}

/// Budgets with their standing.
#[derive(Serialize, ToSchema)]
pub(super) struct BudgetsBody {
    /// Each with what is spent and committed.
    pub(super) budgets: Vec<serde_json::Value>,
}

/// Budgets, spent and committed
#[utoipa::path(get, path = "/v1/budgets", tag = "costs", params(BudgetsQuery),
    responses((status = 200, body = BudgetsBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn budgets(
    State(api): State<Api>,
    Authed(caller): Authed,
    Params(q): Params<BudgetsQuery>,
) -> ApiResult<Json<BudgetsBody>> {
    let out = api.app.budgets(&caller, q.month.as_deref(), q.team).await?;
    Ok(Json(BudgetsBody {
        budgets: out.iter().map(json).collect(),
    }))
}

/// Set a budget (admins)
#[utoipa::path(put, path = "/v1/budgets", tag = "costs", request_body = BudgetSet,
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn set_budget(
    State(api): State<Api>,
    Authed(caller): Authed,
    Body(req): Body<BudgetSet>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json(&api.app.set_budget(&caller, &req).await?)))
}

/// Tokens.
#[derive(Serialize, ToSchema)]
pub(super) struct TokensBody {
    /// Newest first, never their secrets.
    pub(super) tokens: Vec<serde_json::Value>,
}

/// List tokens (admins)
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokensBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn tokens(State(api): State<Api>, Authed(caller): Authed) -> ApiResult<Json<TokensBody>> {
    let out = api.app.tokens(&caller).await?;
    Ok(Json(TokensBody {
        tokens: out.iter().map(json).collect(),
    }))
}

/// Create a token (admins)
///
/// The response holds the secret; it is shown this once and kept only as a hash.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 201, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn create_token(
    State(api): State<Api>,
    Authed(caller): Authed,
    Body(req): Body<TokenRequest>,
) -> ApiResult<Response> {
    let created = api.app.create_token(&caller, &req).await?;
    Ok((StatusCode::CREATED, Json(json(&created))).into_response())
}

/// Revoke a token (admins)
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id or name")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn revoke_token(
    State(api): State<Api>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    api.app.revoke_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
