//! The HTTP API: `/v1` as JSON over the application layer, with bearer tokens, and its
//! OpenAPI document at `/openapi.json`.
//!
//! Handlers only translate: a request into an [`App`] call with the authenticated
//! [`crate::app::Caller`], the result into JSON, an [`crate::app::AppError`] into a
//! status and a stable code. Requests that block (waiting for a job's state, following a
//! log) each hold a connection from a bounded pool of their own, so that they never
//! hold up the shared multiplexed connection every other request uses.

mod error;
mod extract;
mod jobs;
mod misc;
pub mod openapi;

pub use error::{ApiError, ApiResult, ErrorBody};
pub(crate) use extract::Authed;
pub(crate) use jobs::log_events;

use crate::app::App;
use crate::cli::ServeArgs;
use crate::{CliError, CliResult};
use axum::routing::{get, post};
use axum::Router;
use common::queue::RedisQueue;
use redis::aio::MultiplexedConnection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Connections for blocking waits, made as the queue makes its own.
pub(crate) struct WaitConnections {
    queue: RedisQueue,
}

impl deadpool::managed::Manager for WaitConnections {
    type Type = MultiplexedConnection;
    type Error = common::Error;

    async fn create(&self) -> Result<MultiplexedConnection, common::Error> {
        self.queue.blocking_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<common::Error> {
        redis::cmd("PING")
            .query_async::<()>(conn)
            .await
            .map_err(|e| deadpool::managed::RecycleError::Backend(e.into()))
    }
}

type WaitPool = deadpool::managed::Pool<WaitConnections>;

/// The API's shared state: one `Arc`, so that handing it to a request (axum clones the
/// state for each) costs no allocation.
#[derive(Clone)]
pub struct Api(std::sync::Arc<ApiState>);

/// What the API's handlers share.
pub struct ApiState {
    pub(crate) app: App,
    /// Serve without tokens (`--insecure-no-auth`).
    pub(crate) insecure: bool,
    waits: WaitPool,
}

impl std::ops::Deref for Api {
    type Target = ApiState;
    fn deref(&self) -> &ApiState {
        &self.0
    }
}

impl Api {
    /// Checks that the API may start: it needs a usable token, unless told to run
    /// without authentication.
    pub async fn new(app: App, args: &ServeArgs) -> CliResult<Self> {
        if args.insecure_no_auth {
            tracing::warn!("the HTTP API is serving WITHOUT authentication (--insecure-no-auth): every caller is an admin");
        } else if app.usable_tokens().await? == 0 {
            return Err(CliError::BadInput(
                "the API needs a token: create one with `scheduler token create --role admin`, \
                 or pass --insecure-no-auth (for a demo on a laptop only)"
                    .into(),
            ));
        }
        let waits = WaitPool::builder(WaitConnections {
            queue: app.queue().clone(),
        })
        .max_size(args.api_max_waits.max(1))
        .wait_timeout(Some(Duration::from_millis(100)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| CliError::Infra(format!("cannot set up the API's wait connections: {e}")))?;
        Ok(Api(std::sync::Arc::new(ApiState {
            app,
            insecure: args.insecure_no_auth,
            waits,
        })))
    }

    /// A connection of its own for a blocking wait, or 503 when all are taken.
    pub(crate) async fn wait_connection(&self) -> ApiResult<deadpool::managed::Object<WaitConnections>> {
        self.waits.get().await.map_err(|e| match e {
            deadpool::managed::PoolError::Timeout(_) => ApiError::too_many_waits(format!(
                "all {} wait connections are in use; try again shortly, or without wait",
                self.waits.status().max_size
            )),
            deadpool::managed::PoolError::Backend(e) => crate::app::AppError::from(e).into(),
            e => crate::app::AppError::Unavailable(e.to_string()).into(),
        })
    }

    /// The routes under `/v1`, and `/openapi.json`.
    pub fn router(&self, shutdown: CancellationToken) -> Router {
        let v1 = Router::new()
            .route("/jobs", post(jobs::enqueue).get(jobs::list))
            .route("/batches", post(jobs::batch))
            .route("/jobs/{id}", get(jobs::show))
            .route("/jobs/{id}/cancel", post(jobs::cancel))
            .route("/jobs/{id}/retry", post(jobs::retry))
            .route("/jobs/{id}/logs", get(jobs::logs))
            .route("/jobs/{id}/logs/stream", get(jobs::follow))
            .route("/jobs/{id}/forecast", get(misc::forecast))
            .route("/jobs/{id}/recommendations", get(misc::recommend))
            .route("/status", get(misc::status))
            .route("/workers", get(misc::workers))
            .route("/quotas", get(misc::quotas))
            .route("/costs/estimate", post(misc::estimate))
            .route("/costs/compare", post(misc::compare))
            .route("/costs/report", get(misc::report))
            .route("/budgets", get(misc::budgets).put(misc::set_budget))
            .route("/tokens", get(misc::tokens).post(misc::create_token))
            .route("/tokens/{id}", axum::routing::delete(misc::revoke_token))
            .fallback(|| async {
                ApiError::from(crate::app::AppError::NotFound("no such API route".into()))
            });
        Router::new()
            .nest("/v1", v1)
            .route("/openapi.json", get(openapi::document))
            .with_state(self.clone())
            // Streams (log follows) end when serve stops.
            .layer(axum::Extension(shutdown))
            // Each request reads the settings epoch once (see `app::one_request`).
            .layer(axum::middleware::from_fn(
                |req: axum::extract::Request, next: axum::middleware::Next| {
                    crate::app::one_request(next.run(req))
                },
            ))
    }
}
