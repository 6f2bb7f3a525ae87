//! Signing in to the dashboard: a token exchanged once for a session cookie.
//!
//! The cookie is random (244 bits), HttpOnly (no script reads it) and SameSite=Strict
//! (no other site's page sends it). The session, in Redis under the cookie's SHA-256,
//! keeps the token's hash, never the token, and a CSRF value that every form and every
//! state-changing request of the page must send back. Each request authenticates the
//! token's hash again, so a revoked or expired token ends its sessions at once.

use crate::api::Api;
use crate::app::{token_hash, AppError, Caller};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The cookie's name.
pub(super) const COOKIE: &str = "gpuq_session";
/// How long a session lasts at most (less when its token expires sooner).
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What Redis keeps of a session.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The token's SHA-256; empty for a session of a server run without authentication.
    token: String,
    csrf: String,
}

/// A signed-in page request: who, and the CSRF value its forms must carry.
pub(super) struct Session {
    pub(super) caller: Caller,
    pub(super) csrf: String,
}

/// Why a page request has no session: the page sends the browser to sign in.
#[derive(Debug)]
pub(super) enum NoSession {
    /// No cookie.
    Missing,
    /// A cookie Redis does not know: the session expired (or was signed out elsewhere).
    Expired,
    /// The token behind the session was revoked or expired.
    Refused,
    /// Redis or the store is not answering.
    Fault(AppError),
}

fn random() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The session cookie's value in a request's headers.
pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Starts a session for `secret` (empty when the server runs without authentication).
/// Returns the `Set-Cookie` value.
pub(super) async fn sign_in(api: &Api, secret: &str) -> Result<String, AppError> {
    let token = if api.insecure {
        String::new()
    } else {
        api.app.authenticate(secret).await?;
        token_hash(secret)
    };
    let id = random();
    let stored = Stored {
        token,
        csrf: random(),
    };
    let value = serde_json::to_string(&stored).expect("a session serializes");
    api.app
        .queue()
        .put_ui_session(&token_hash(&id), &value, SESSION_TTL)
        .await?;
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    Ok(cookie)
}

/// Ends the session in these headers, if any; the `Set-Cookie` value that clears it.
pub(super) async fn sign_out(api: &Api, headers: &HeaderMap) -> Result<String, AppError> {
    if let Some(id) = cookie(headers) {
        api.app.queue().drop_ui_session(&token_hash(&id)).await?;
    }
    Ok(format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
}

impl FromRequestParts<Api> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, NoSession> {
        let id = cookie(&parts.headers).ok_or(NoSession::Missing)?;
        let raw = api
            .app
            .queue()
            .ui_session(&token_hash(&id))
            .await
            .map_err(|e| NoSession::Fault(e.into()))?
            .ok_or(NoSession::Expired)?;
        let stored: Stored = serde_json::from_str(&raw).map_err(|_| NoSession::Expired)?;
        let caller = if stored.token.is_empty() {
            if !api.insecure {
                // A session made while the server ran without authentication.
                return Err(NoSession::Expired);
            }
            Caller::unauthenticated()
        } else {
            match api.app.authenticate_hash(&stored.token).await {
                Ok(c) => c,
                Err(AppError::Unauthenticated(_)) => return Err(NoSession::Refused),
                Err(e) => return Err(NoSession::Fault(e)),
            }
        };
        Ok(Session {
            caller,
            csrf: stored.csrf,
        })
    }
}

impl NoSession {
    /// The answer to a script's request (a poll, a log stream): 401, on which the page
    /// reloads itself and so goes to sign in with the reason said; a fault of Redis or the store is a 503 page.
    pub(super) fn for_script(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        match self {
            NoSession::Fault(e) => super::error_page(None, &e),
            _ => axum::http::StatusCode::UNAUTHORIZED.into_response(),
        }
    }
}

impl Session {
    /// Refuses a state-changing request whose CSRF value is not this session's.
    pub(super) fn check_csrf(&self, sent: Option<&str>) -> Result<(), AppError> {
        match sent {
            Some(s) if constant_time_eq(s.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            Some(_) => Err(AppError::Forbidden(
                "the form's CSRF token is not this session's; reload the page and try again".into(),
            )),
            None => Err(AppError::Forbidden(
                "the request carries no CSRF token; reload the page and try again".into(),
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
