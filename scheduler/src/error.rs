//! CLI errors and their exit codes: 2 for bad input (nothing was changed), 1 for
//! infrastructure faults (Redis unreachable, ...).

/// Result of a CLI command.
pub type CliResult<T> = Result<T, CliError>;

/// An error to print on one line before exiting.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input is wrong; nothing was changed. Exit code 2.
    #[error("{0}")]
    BadInput(String),
    /// Something in the system failed. Exit code 1.
    #[error("{0}")]
    Infra(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_) => 2,
            CliError::Infra(_) => 1,
        }
    }
}

impl From<common::Error> for CliError {
    fn from(e: common::Error) -> Self {
        if e.is_bad_input() {
            CliError::BadInput(e.to_string())
        } else {
            CliError::Infra(e.to_string())
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Infra(e.to_string())
    }
}

impl From<crate::app::AppError> for CliError {
    fn from(e: crate::app::AppError) -> Self {
        if e.is_callers() {
            CliError::BadInput(e.to_string())
        } else {
            CliError::Infra(e.to_string())
        }
    }
}
