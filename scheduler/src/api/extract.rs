//! Extractors that turn bad requests into a 400 naming what is wrong, and the caller's
//! identity from its bearer token.

use super::error::{ApiError, ApiResult};
use super::Api;
use crate::app::{AppError, Caller};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The largest body a request may have: a full atomic batch of specs fits.
pub(super) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A JSON body, parsed with the path of a wrong field in the error.
pub(super) struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Api> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Api) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, api).await?;
        parse_json(&bytes).map(Body)
    }
}

/// A body's bytes, bounded like [`Body`].
pub(super) struct RawBody(pub(super) axum::body::Bytes);

impl FromRequest<Api> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _api: &Api) -> Result<Self, ApiError> {
        axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map(RawBody)
            .map_err(|_| {
                ApiError::bad_request(
                    "too_large",
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            })
    }
}

/// Parses JSON, naming the field that is wrong (`jobs[2].epochs: invalid type ...`).
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "bad_input",
            "the body is empty; it must be JSON",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = strip_position(&inner.to_string());
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("the body is not valid JSON: {what}")
        } else if path == "." {
            what
        } else {
            format!("{path}: {what}")
        };
        ApiError::bad_request("bad_input", message)
    })
}

/// serde_json's message without its "at line 1 column 7".
pub(super) fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A job id from the path; a malformed one is a 400 naming it.
pub(super) fn job_id(raw: &str) -> ApiResult<common::JobId> {
    Ok(crate::app::parse_job_id(raw)?)
}

/// Query parameters; an unknown or malformed one is a 400 naming it.
pub(super) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Params).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." {
                ApiError::bad_request("bad_input", format!("query: {inner}"))
            } else {
                ApiError::bad_request("bad_input", format!("query parameter {path}: {inner}"))
            }
        })
    }
}

/// The authenticated caller.
pub(crate) struct Authed(pub(crate) Caller);

impl FromRequestParts<Api> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, ApiError> {
        if api.insecure {
            return Ok(Authed(Caller::unauthenticated()));
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                AppError::Unauthenticated("no token: send Authorization: Bearer <token>".into())
            })?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                AppError::Unauthenticated("the Authorization header must be Bearer <token>".into())
            })?;
        Ok(Authed(api.app.authenticate(secret).await?))
    }
}
