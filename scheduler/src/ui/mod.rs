//! The web dashboard under `/ui`: server-rendered HTML (maud) over the application
//! layer, with a little plain JavaScript for live updates and no front-end build.
//!
//! Pages authenticate with a session cookie (`session.rs`), made from an API token at
//! sign-in; every page is the [`crate::app`] call the API makes, with the same
//! [`crate::app::Caller`], so a team's session sees its own team only.

mod chart;
mod costs;
mod job;
mod jobs;
mod overview;
mod session;

use crate::api::Api;
use crate::app::AppError;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use session::NoSession;

/// The dashboard's routes, served next to the API.
pub fn router(api: Api, shutdown: tokio_util::sync::CancellationToken) -> Router {
    Router::new()
        .route("/ui", get(overview::show))
        .route("/ui/overview.part", get(overview::part))
        .route("/ui/costs", get(costs::show))
        .route("/ui/costs.part", get(costs::part))
        .route("/ui/costs.csv", get(costs::csv))
        .route("/ui/jobs", get(jobs::list))
        .route("/ui/jobs/{id}", get(job::show))
        .route("/ui/jobs/{id}/part", get(job::part))
        .route("/ui/jobs/{id}/logs/stream", get(job::follow))
        .route("/ui/jobs/{id}/cancel", post(job::cancel))
        .route("/ui/jobs/{id}/retry", post(job::retry))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .with_state(api)
        // Log streams end when serve stops.
        .layer(axum::Extension(shutdown))
}

/// A whole page: the frame around `body`.
fn page(title: &str, signed_in: Option<&session::Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gpuq" }
                style { (maud::PreEscaped(STYLE)) (maud::PreEscaped(chart::STYLE)) }
            }
            body {
                header {
                    a.brand href="/ui" { "gpuq" }
                    @if signed_in.is_some() { nav { a href="/ui" { "Overview" } " " a href="/ui/jobs" { "Jobs" } " " a href="/ui/costs" { "Costs" } } }
                    @if let Some(s) = signed_in {
                        span.who { (s.caller.actor) " · " (s.caller.role.as_str())
                            @if let Some(team) = &s.caller.team { " · team " (team) } }
                        form.inline method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1em;align-items:center;padding:.6em 1.2em;background:#1d2330;color:#fff}
header a.brand{color:#fff;font-weight:700;text-decoration:none}
header nav a{color:#cfd6e4;margin-right:.8em}
header .who{margin-left:auto;opacity:.85}
form.inline{display:inline;margin:0}
main{padding:1em 1.2em;max-width:1200px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.8em 1em;margin-bottom:1em}
h2{font-size:15px;margin:.1em 0 .6em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eef0f3}
th{font-weight:600;color:#5a6372}
.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#7a8391}
.error{background:#fdecec;border:1px solid #f3b7b7;padding:.6em 1em;border-radius:6px}
svg.bar rect.used{fill:#3b6fd8} svg.bar rect.reserved{fill:#e2a03f} svg.bar rect.free{fill:#e4e8ee}
svg.bar rect.spent{fill:#3b6fd8} svg.bar rect.committed{fill:#a9c0ef} svg.bar line.warn{stroke:#d64545;stroke-width:2}
tr.over-warn td.pct{color:#d64545;font-weight:600}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em} .cols>section{margin:0}
";

/// The live part of a page: `inner`, replaced by what `part` answers whenever that
/// changes. The browser polls every second with the ETag it has, so an unchanged part
/// costs a 304 and no rendering; a lost session reloads the page, which then goes to
/// sign in saying why.
fn live(part: &str, inner: Markup) -> Markup {
    html! {
        div #live data-part=(part) { (inner) }
        script { (maud::PreEscaped(POLL)) }
    }
}

const POLL: &str = r#"
(function () {
  var live = document.getElementById('live');
  var etag = null;
  function tick() {
    var h = etag ? { 'If-None-Match': etag } : {};
    fetch(live.dataset.part, { headers: h, credentials: 'same-origin' }).then(function (r) {
      if (r.status === 401) { location.reload(); return; }
      if (r.status === 200) {
        etag = r.headers.get('ETag');
        return r.text().then(function (t) { live.innerHTML = t; });
      }
    }).catch(function () {}).then(function () { setTimeout(tick, 1000); });
  }
  setTimeout(tick, 1000);
})();
"#;

/// `html` with its ETag (a SHA-256 prefix), or 304 when the browser already has it.
fn part_response(headers: &HeaderMap, html: String) -> Response {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(html.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let etag = format!("\"{hex}\"");
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

/// How a page answers a request without a usable session: to the sign-in page, saying
/// why; a fault of Redis or the store is a 503 page, not a sign-in loop.
impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Missing => Redirect::to("/ui/login").into_response(),
            NoSession::Expired => Redirect::to("/ui/login?why=expired").into_response(),
            NoSession::Refused => Redirect::to("/ui/login?why=refused").into_response(),
            NoSession::Fault(e) => error_page(None, &e),
        }
    }
}

/// An error as a page, with the status its kind has over the API.
fn error_page(signed_in: Option<&session::Session>, e: &AppError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = html! { p.error { (e.to_string()) } p { a href="/ui" { "Back to the overview" } } };
    (status, maud_response(page("Error", signed_in, body))).into_response()
}

fn maud_response(m: Markup) -> axum::response::Html<String> {
    axum::response::Html(m.into_string())
}

#[derive(Deserialize)]
struct LoginQuery {
    why: Option<String>,
}

async fn login_form(
    State(api): State<Api>,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let note = match q.why.as_deref() {
        Some("refused") => Some("Your token was revoked or has expired: sign in with a valid one."),
        Some("expired") => Some("Your session has expired or was signed out: sign in again."),
        _ => None,
    };
    maud_response(login_page(&api, note)).into_response()
}

fn login_page(api: &Api, note: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            section {
                h2 { "Sign in" }
                @if let Some(n) = note { p.error { (n) } }
                form method="post" action="/ui/login" {
                    @if api.insecure {
                        p.muted { "This server runs without authentication (--insecure-no-auth): anyone who can reach it is an admin." }
                        input type="hidden" name="token" value="";
                    } @else {
                        label { "API token " input type="password" name="token" autocomplete="off" required; }
                        " "
                    }
                    button type="submit" { "Sign in" }
                }
                @if !api.insecure {
                    p.muted { "Create one with " code { "scheduler token create --team <team> --role viewer" } "." }
                }
            }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(api): State<Api>, Form(f): Form<LoginForm>) -> Response {
    match session::sign_in(&api, f.token.trim()).await {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response(),
        Err(e @ AppError::Unauthenticated(_)) => (
            StatusCode::UNAUTHORIZED,
            maud_response(login_page(&api, Some(&e.to_string()))),
        )
            .into_response(),
        Err(e) => error_page(None, &e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(api): State<Api>,
    session: Result<session::Session, NoSession>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let session = match session {
        Ok(s) => s,
        Err(no) => return no.into_response(),
    };
    if let Err(e) = session.check_csrf(f.csrf.as_deref()) {
        return error_page(Some(&session), &e);
    }
    match session::sign_out(&api, &headers).await {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response(),
        Err(e) => error_page(Some(&session), &e),
    }
}
