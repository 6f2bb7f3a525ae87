//! Identifiers. Newtypes keep a job id from being passed where a worker id is meant.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted id; keeps Redis keys and Kubernetes object names manageable.
const MAX_ID_LEN: usize = 128;

/// A job's id: client-chosen or a generated time-ordered UUID (v7).
///
/// Restricted to `[A-Za-z0-9._-]`, not starting with `.`, so it is safe inside Redis
/// keys, file names (`.` and `..` would name the work root or its parent) and Kubernetes
/// labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// A fresh id. UUID v7 sorts by creation time, which makes listings readable.
    pub fn generate() -> Self {
        Self::from_uuid(uuid::Uuid::now_v7())
    }

    /// The id that is `uuid` in its hyphenated form (always a valid id, so not checked).
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        JobId(uuid.to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() {
            return Err("job id is empty".into());
        }
        if s.len() > MAX_ID_LEN {
            return Err(format!("job id is longer than {MAX_ID_LEN} characters"));
        }
        if s.starts_with('.') {
            return Err(format!(
                "job id {s:?} starts with '.'; it names a directory, so it may not"
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "job id {s:?} contains {c:?}; use letters, digits, '.', '_' or '-'"
            ));
        }
        Ok(JobId(s))
    }
}

impl std::str::FromStr for JobId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobId::try_from(s.to_string())
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A worker process's id: `host-pid-random`, unique for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    /// A new id for a worker process on `host`.
    pub fn generate(host: &str) -> Self {
        let rand = uuid::Uuid::new_v4().simple().to_string();
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        WorkerId(format!("{host}-{}-{}", std::process::id(), &rand[..8]))
    }

    /// Wraps an id read back from Redis.
    pub fn from_raw(s: impl Into<String>) -> Self {
        WorkerId(s.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_validated() {
        assert!("train-1.v2_a".parse::<JobId>().is_ok());
        assert!("".parse::<JobId>().is_err());
        assert!("a b".parse::<JobId>().is_err());
        assert!(
            "a:b".parse::<JobId>().is_err(),
            "':' would alias Redis key segments"
        );
        assert!("x".repeat(129).parse::<JobId>().is_err());
    }

    #[test]
    fn generated_ids_are_valid_and_time_ordered() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert!(a.as_str().parse::<JobId>().is_ok());
        assert!(a < b);
    }
}
