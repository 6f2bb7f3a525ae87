//! The crate's one error type.

use std::path::PathBuf;

/// Why a manifest or a trace could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not YAML, or a document does not have the expected shape.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_yaml::Error,
    },
    /// No document in the file has that kind and name.
    #[error("{path}: no {kind} named {name}")]
    NotFound {
        /// The file.
        path: PathBuf,
        /// The kind looked for.
        kind: String,
        /// The name looked for.
        name: String,
    },
    /// A line of a trace is not `seconds,queued`, or goes back in time.
    #[error("{path}:{line}: {message}")]
    Trace {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The manifest is valid Kubernetes but uses something the model does not implement, so
    /// the model's answer would not be the controller's.
    #[error("not modelled: {0}")]
    Unsupported(String),
}

/// The result type of this crate's loaders.
pub type Result<T, E = Error> = std::result::Result<T, E>;
