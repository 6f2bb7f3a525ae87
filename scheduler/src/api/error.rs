//! Errors as JSON: `{"code": "...", "message": "..."}` with the status of their kind.

use crate::app::AppError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of every error response. `code` is stable; `message` is one line for people.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable: bad_input, invalid_spec, over_budget, too_large, unauthenticated,
    /// forbidden, not_found, conflict, unavailable, too_many_waits.
    pub code: String,
    /// What went wrong, naming the field or parameter.
    pub message: String,
}

/// An error an API handler returns.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// What API handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A 400 naming what is wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// A 503: the waits' connections are all taken.
    pub fn too_many_waits(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "too_many_waits",
            message: message.into(),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "API request failed");
        }
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                code: self.code.into(),
                message: self.message.lines().next().unwrap_or_default().to_string(),
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
