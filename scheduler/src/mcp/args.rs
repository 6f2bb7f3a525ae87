//! The tools' inputs, with the JSON schemas agents read.

use rmcp::schemars;
use serde::Deserialize;

/// A job spec, as `scheduler enqueue` and `POST /v1/jobs` take it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SpecArgs {
    /// The job spec: `name`, `command` (argv) and optionally `model_type`, `epochs`,
    /// `batch_size`, `priority` (urgent, normal, background), `resources` (`gpus`,
    /// `gpu_type`, `cpu`, `memory`), `labels`, `env`, `max_attempts`, `timeout_secs`,
    /// `id`. The team defaults to the token's.
    pub(super) spec: serde_json::Map<String, serde_json::Value>,
}

/// Several specs, enqueued all or none.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchArgs {
    /// The job specs (at most 5,000).
    pub(super) jobs: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// One job.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobArgs {
    /// The job's id.
    pub(super) job_id: String,
}

/// A job to cancel, and why.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelArgs {
    /// The job's id.
    pub(super) job_id: String,
    /// Kept in the job's history with who cancelled it.
    #[serde(default)]
    pub(super) reason: Option<String>,
}

/// Which jobs to list.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListArgs {
    /// queued (default), running, succeeded, failed, retrying, deferred, cancelled, dead,
    /// or `all`.
    #[serde(default)]
    pub(super) state: Option<String>,
    /// Only this priority.
    #[serde(default)]
    pub(super) priority: Option<String>,
    /// Only this team (a team token sees its own only).
    #[serde(default)]
    pub(super) team: Option<String>,
    /// At most this many (default 20, at most 200).
    #[serde(default)]
    pub(super) limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default)]
    pub(super) before: Option<String>,
}

/// Optional team and month.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TeamArgs {
    /// The team (default: the token's; every team for an admin).
    #[serde(default)]
    pub(super) team: Option<String>,
    /// YYYY-MM (default this month).
    #[serde(default)]
    pub(super) month: Option<String>,
}

/// A period and a grouping.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportArgs {
    /// How far back: `7d`, `24h` (default 30d).
    #[serde(default)]
    pub(super) since: Option<String>,
    /// team (default), model_type, priority or job.
    #[serde(default)]
    pub(super) by: Option<String>,
}

/// A spec and its variations.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompareArgs {
    /// The base job spec (as `queue_training_job` takes it).
    pub(super) spec: serde_json::Map<String, serde_json::Value>,
    /// Batch sizes to try.
    #[serde(default)]
    pub(super) batch_sizes: Vec<u32>,
    /// GPU counts to try.
    #[serde(default)]
    pub(super) gpus: Vec<u32>,
    /// Also spot, an off-peak start, and both.
    #[serde(default)]
    pub(super) all_options: bool,
}

/// No input.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NoArgs {}
