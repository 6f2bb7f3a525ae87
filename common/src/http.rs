//! The small HTTP server both binaries run for Prometheus and Kubernetes probes:
//! `/metrics` (OpenMetrics text), `/healthz` (the process is alive) and `/readyz`
//! (its dependencies answer). Behind the `cli` feature.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A boxed future, so the endpoints can be plain closures.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the endpoints answer with.
#[derive(Clone)]
pub struct Endpoints {
    /// Renders the current metrics in OpenMetrics text format.
    pub metrics: Arc<dyn Fn() -> BoxFuture<String> + Send + Sync>,
    /// Ok when every dependency answers; otherwise says which does not.
    pub ready: Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the endpoints on `listener` until `shutdown` fires.
pub async fn serve(listener: tokio::net::TcpListener, endpoints: Endpoints, shutdown: CancellationToken) {
    serve_router(listener, router(endpoints), shutdown).await
}

/// Serves `app` (the endpoints' [`router`], with whatever a binary adds) on `listener`
/// until `shutdown` fires.
pub async fn serve_router(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) {
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// The router of `/metrics`, `/healthz` and `/readyz`.
pub fn router(endpoints: Endpoints) -> Router {
    let metrics = endpoints.metrics.clone();
    let ready = endpoints.ready.clone();
    Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                async move {
                    // Prometheus asks for OpenMetrics; anything else (curl, older scrapers,
                    // promtool) gets the classic text format.
                    let wants_openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    let body = metrics().await;
                    if wants_openmetrics {
                        ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
                    } else {
                        (
                            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
                            to_prometheus_text(&body),
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move { readiness(ready().await) }
            }),
        )
}

fn readiness(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

/// Binds the metrics address, with a one-line error naming it.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Re-exported so the binaries share one version of the metrics library.
pub use prometheus_client;

/// Renders a registry as OpenMetrics text.
pub fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// Converts OpenMetrics text to the classic Prometheus text format (0.0.4): counter
/// metadata is named after the `_total` sample, and `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn converts_openmetrics_to_classic_text() {
        let om = "# HELP jobs Jobs.\n# TYPE jobs counter\njobs_total{a=\"1\"} 3\n# HELP age Age.\n# TYPE age gauge\n# UNIT age seconds\nage 1.5\n# EOF\n";
        let text = super::to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total{a=\"1\"} 3\n# HELP age Age.\n# TYPE age gauge\nage 1.5\n"
        );
    }
}
