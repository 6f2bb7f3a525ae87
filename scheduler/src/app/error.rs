//! The errors every operation returns, with the stable code each interface shows.

/// Result of an operation.
pub type AppResult<T> = Result<T, AppError>;

/// Why an operation did nothing. Each kind has a stable `code` (the HTTP API's error
/// body and the agent tools show it) and an HTTP status; the CLI maps the caller's
/// mistakes to exit code 2 and faults of the system to 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The input is wrong; `code` says how (`bad_input`, `invalid_spec`, `over_budget`).
    #[error("{message}")]
    BadInput {
        /// Stable code.
        code: &'static str,
        /// One line naming what is wrong.
        message: String,
    },
    /// No credentials, or credentials that are unknown, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role does not allow the operation.
    #[error("{0}")]
    Forbidden(String),
    /// No such job (or one the caller's team may not see), token, ...
    #[error("{0}")]
    NotFound(String),
    /// The operation conflicts with the current state (an id taken by a different
    /// spec, a job already finished).
    #[error("{0}")]
    Conflict(String),
    /// Redis or the store is unreachable or refused; trying again later may work.
    #[error("{0}")]
    Unavailable(String),
}

impl AppError {
    /// Bad input with the generic code.
    pub fn bad_input(message: impl Into<String>) -> Self {
        AppError::BadInput {
            code: "bad_input",
            message: message.into(),
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadInput { code, .. } => code,
            AppError::Unauthenticated(_) => "unauthenticated",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status for it.
    pub fn http_status(&self) -> u16 {
        match self {
            AppError::BadInput { .. } => 400,
            AppError::Unauthenticated(_) => 401,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::Unavailable(_) => 503,
        }
    }

    /// True when the caller, not the system, is at fault.
    pub fn is_callers(&self) -> bool {
        !matches!(self, AppError::Unavailable(_))
    }
}

impl From<common::Error> for AppError {
    fn from(e: common::Error) -> Self {
        use common::Error as E;
        match e {
            E::InvalidSpec(_) => AppError::BadInput {
                code: "invalid_spec",
                message: e.to_string(),
            },
            E::InvalidInput(_) => AppError::bad_input(e.to_string()),
            E::NotFound(_) => AppError::NotFound(e.to_string()),
            E::Conflict { .. } => AppError::Conflict(e.to_string()),
            _ => AppError::Unavailable(e.to_string()),
        }
    }
}
