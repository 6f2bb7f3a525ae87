//! The tools over streamable HTTP at `/mcp`, stateless (each POST stands alone, so any
//! `serve` replica can answer), behind the same bearer tokens as `/v1`.

use super::Tools;
use crate::api::Api;
use crate::app::Caller;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Authenticates every request to `/mcp` before the protocol sees it, and hands the
/// caller to the tools in the request's extensions.
async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let caller: Result<Caller, crate::api::ApiError> = async {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = std::mem::take(&mut req).into_parts();
        let authed = crate::api::Authed::from_request_parts(&mut parts, &api).await;
        req = Request::from_parts(parts, body);
        authed.map(|a| a.0)
    }
    .await;
    match caller {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The `/mcp` route.
pub fn router(api: Api, shutdown: CancellationToken) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        // The API is reached by whatever name the operator gives it (a Service, an
        // Ingress); tokens, not Host headers, decide who may call.
        .disable_allowed_hosts()
        .with_cancellation_token(shutdown);
    let app = api.app.clone();
    let service = StreamableHttpService::new(
        move || Ok(Tools::new(app.clone(), None)),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state(api, authenticate))
}
