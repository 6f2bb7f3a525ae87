//! The one error type of this crate. Callers decide their reaction from the variant:
//! bad input is the user's to fix (exit code 2), infrastructure faults are retried.

use crate::JobId;

/// Convenient alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, grouped by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job spec (or a batch) is invalid; nothing was changed.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// Some other argument is invalid (an id, a namespace, a URL).
    #[error("{0}")]
    InvalidInput(String),
    /// The named job does not exist.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The request conflicts with the job's current state (e.g. retrying a running job).
    #[error("job {id}: {detail}")]
    Conflict {
        /// The job concerned.
        id: JobId,
        /// What about its state prevents the request.
        detail: String,
    },
    /// Redis refused or failed a command, or could not be reached. Retryable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The job store failed or could not be reached. Retryable.
    #[error("job store: {0}")]
    Store(String),
    /// The job store refused one write (a constraint, an encoding it cannot hold), while
    /// it is otherwise up: retrying the same write will not help.
    #[error("job store refused the write: {0}")]
    StoreRefused(String),
    /// A record in Redis could not be decoded; a bug or a foreign writer.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The worker's heartbeat is gone, so it may neither claim nor report until it has
    /// heartbeaten again and compared its leases (see `RedisQueue::heartbeat`).
    #[error("worker {0} has no heartbeat: it must heartbeat and check its leases first")]
    Fenced(String),
    /// Claims and reaping wait after Redis restarted or failed over, for this long still.
    #[error("Redis restarted or failed over; claims resume in {0} ms")]
    RestartHold(u64),
    /// The outbox holds more transitions than its bound: the job store is not taking
    /// them. Nothing was enqueued.
    #[error(
        "enqueue refused: the outbox holds {backlog} transitions the job store has not taken (bound {limit}); \
         is `scheduler serve` running, and can it reach its store? See `scheduler store errors`"
    )]
    OutboxFull {
        /// Entries waiting.
        backlog: u64,
        /// The bound.
        limit: u64,
    },
    /// The primary took the enqueue but too few replicas acknowledged it in time, so a
    /// failover could still lose it. Enqueue is idempotent: enqueueing the same ids again
    /// adds only what is missing. Not retryable as such: a blind retry of specs without
    /// ids would give them new ids, so the error names the ones this call used.
    #[error(
        "enqueue not confirmed: {acked} of {wanted} Redis replicas acknowledged it, so a failover could lose it; \
         enqueue again with the same ids ({}), which adds only what is missing",
        list_ids(.ids)
    )]
    Unreplicated {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
        /// The ids of the jobs of the call, generated ones included.
        ids: Vec<JobId>,
    },
    /// Another run of the same resumable batch is adding it: this run's next chunk does
    /// not start where the batch's landed jobs end. Nothing of that chunk was written.
    #[error(
        "another run of the same batch is enqueueing it ({landed} of its jobs are in): \
         nothing more was added by this one; run it again once that one has ended"
    )]
    BatchRace {
        /// How many of the batch's jobs have landed.
        landed: u64,
    },
}

impl Error {
    /// True when the caller gave bad input (CLI exit code 2); false for faults of the system.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_) | Error::InvalidInput(_) | Error::NotFound(_) | Error::Conflict { .. }
        )
    }

    /// True when retrying the same call later may succeed (Redis or the store unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Redis(_)
                | Error::Store(_)
                | Error::Fenced(_)
                | Error::RestartHold(_)
                | Error::OutboxFull { .. }
        )
    }

    /// A short stable name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::InvalidInput(_) => "invalid_input",
            Error::NotFound(_) => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::Redis(_) => "redis",
            Error::Store(_) => "store",
            Error::StoreRefused(_) => "store_refused",
            Error::Corrupt(_) => "corrupt",
            Error::Fenced(_) => "fenced",
            Error::RestartHold(_) => "restart_hold",
            Error::OutboxFull { .. } => "outbox_full",
            Error::Unreplicated { .. } => "unreplicated",
            Error::BatchRace { .. } => "batch_race",
        }
    }
}

/// A job spec failed validation. Names the field and, in a batch, the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// Line of the batch input the spec came from, when it came from a batch.
    pub line: Option<usize>,
    /// Dotted path of the offending field (`resources.gpus`), or empty when the whole spec is unreadable.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            line: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if self.field.is_empty() {
            write!(f, "invalid job spec: {}", self.message)
        } else {
            write!(f, "invalid job spec: field `{}`: {}", self.field, self.message)
        }
    }
}

/// The first ids of a call, for a message.
fn list_ids(ids: &[JobId]) -> String {
    let mut s: Vec<&str> = ids.iter().take(3).map(JobId::as_str).collect();
    let more = format!("and {} more", ids.len().saturating_sub(3));
    if ids.len() > 3 {
        s.push(&more);
    }
    s.join(", ")
}

impl From<redis::ParsingError> for Error {
    fn from(e: redis::ParsingError) -> Self {
        Error::Redis(e.into())
    }
}
