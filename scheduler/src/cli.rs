//! Command-line arguments. Every flag can also come from the environment.

use common::cli::{LogFormat, RedisArgs};
use common::{JobId, JobState, ListCursor, Memory, Priority};
use std::path::PathBuf;
use std::time::Duration;

/// Operator CLI of the GPU training job queue.
#[derive(Debug, clap::Parser)]
#[command(
    name = "scheduler",
    version,
    about = "Enqueue, inspect and manage GPU training jobs"
)]
pub struct Cli {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Job store: postgres://... or sqlite://PATH (default: an SQLite file under the user's data directory).
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Pricing file for cost estimates (TOML; default: the built-in one, see cost/pricing.default.toml).
    #[arg(long, env = "GPUQ_PRICING", global = true)]
    pub pricing: Option<PathBuf>,
    /// Log format (logs go to stderr).
    #[arg(long, env = "GPUQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate and enqueue one job; the command to run follows `--`.
    Enqueue(Box<EnqueueArgs>),
    /// Enqueue many jobs atomically from a JSON array or JSON lines (FILE or - for stdin).
    Batch(BatchArgs),
    /// Cancel a job: a queued job never starts, a running one is stopped.
    Cancel(IdArgs),
    /// Show one job with its history.
    Show(ShowArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// The dashboard: health, queues with ETAs, running jobs with progress, recent failures.
    Status(StatusArgs),
    /// Live workers (from their heartbeats).
    Workers(JsonArgs),
    /// Bring a dead, failed or cancelled job back to its queue.
    Retry(IdArgs),
    /// Print the last lines of a job's output.
    Logs(LogsArgs),
    /// Run the long-lived loops: recover jobs of dead workers, promote due retries,
    /// write every transition to the job store, apply retention.
    Serve(ServeArgs),
    /// Repair Redis from the job store (jobs Redis lost) and the store from Redis.
    Reconcile(ReconcileArgs),
    /// The job store's side of the outbox: entries it refused, and replaying them.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Show the whole thing working: a private Redis if needed, workers, real training jobs.
    Demo(DemoArgs),
    /// What jobs will cost.
    #[command(subcommand)]
    Cost(CostCommand),
    /// Monthly budgets per team (and experiment label): warn at 70%, refuse over 100%.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// GPU pools, team quotas with borrowing, and caps on running jobs.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// API tokens: each acts for one team (or every team, for admins) with one role.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Serve the agent tools (Model Context Protocol) on stdin and stdout.
    Mcp(McpArgs),
}

/// Arguments of `mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Act with this token's team and role (default: as an operator, every team).
    #[arg(long, env = "GPUQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, once: only its hash is kept.
    Create(TokenCreateArgs),
    /// List tokens (never their secrets).
    List(JsonArgs),
    /// Revoke a token by id or name: it stops working at once.
    Revoke(TokenRevokeArgs),
}

/// Arguments of `token create`.
#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// The team it acts for (required but for admin tokens, which act for every team).
    #[arg(long)]
    pub team: Option<String>,
    /// viewer (reads), submitter (also enqueues, cancels, retries) or admin (everything).
    #[arg(long)]
    pub role: String,
    /// A unique name, written as the actor in job histories (default TEAM-ROLE-XXXX).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime (`90d`, `12h`); it never expires without one.
    #[arg(long)]
    pub expires: Option<String>,
    /// Print JSON instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `token revoke`.
#[derive(Debug, clap::Args)]
pub struct TokenRevokeArgs {
    /// The token's id (`tok_...`) or name.
    pub token: String,
}

/// `quota` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum QuotaCommand {
    /// Pools, quotas and caps, with what is used of each.
    Show(JsonArgs),
    /// Change one part of the configuration: with --pool and --team a team's quota in a
    /// pool; with --pool alone the pool; with --team alone the team's cap; with neither
    /// the queue-wide settings.
    Set(QuotaSetArgs),
    /// Remove a team's quota (--pool and --team), a pool (--pool), a team's cap
    /// (--team), or everything (--all).
    Delete(QuotaDeleteArgs),
    /// Replace the whole configuration with a file (TOML; JSON when it ends in .json).
    Apply(QuotaApplyArgs),
    /// Recompute the usage from the leases and repair any drift, saying what changed.
    Check(QuotaCheckArgs),
}

/// A number, or `none` to remove the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// This many.
    At(u32),
    /// No limit.
    None,
}

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Limit::None);
        }
        s.parse::<u32>()
            .map(Limit::At)
            .map_err(|_| format!("{s:?} is not a whole number of at least 0 (or `none`)"))
    }
}

/// A whole number of GPUs, at least 0.
fn parse_count(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| format!("{s:?} is not a whole number of at least 0"))
}

impl Limit {
    /// As the configuration keeps it.
    pub fn get(self) -> Option<u32> {
        match self {
            Limit::At(n) => Some(n),
            Limit::None => None,
        }
    }
}

/// Arguments of `quota set`.
#[derive(Debug, clap::Args)]
pub struct QuotaSetArgs {
    /// The pool (a GPU type, or `default`).
    #[arg(long)]
    pub pool: Option<String>,
    /// The team.
    #[arg(long)]
    pub team: Option<String>,
    /// The team's nominal GPU quota in the pool.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_count)]
    pub nominal: Option<u32>,
    /// Most GPUs the team may borrow beyond its quota (`none`: no limit).
    #[arg(long, allow_negative_numbers = true)]
    pub borrowing_limit: Option<Limit>,
    /// Most of its unused quota the team lends (`none`: all of it).
    #[arg(long, allow_negative_numbers = true)]
    pub lending_limit: Option<Limit>,
    /// The cohort the team borrows in (`none`: the pool's).
    #[arg(long)]
    pub cohort: Option<String>,
    /// The pool's GPUs (`none`: what its live workers advertise).
    #[arg(long, allow_negative_numbers = true)]
    pub capacity: Option<Limit>,
    /// The pool's queueing: strict or best-effort.
    #[arg(long)]
    pub strategy: Option<common::admission::Strategy>,
    /// How long a job held up by the pool's capacity waits before it reserves the pool.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub reserve_after: Option<Duration>,
    /// Most jobs running at once: in the pool (with --pool), of the team (with --team),
    /// or in the whole queue (with neither). `none` removes the cap.
    #[arg(long, allow_negative_numbers = true)]
    pub max_running: Option<Limit>,
    /// The only teams that may enqueue or be given a quota, comma-separated (`none`:
    /// any team).
    #[arg(long)]
    pub allowed_teams: Option<String>,
    /// With --team: the only images its jobs may name, comma-separated patterns where `*`
    /// matches anything (`registry.example/team-a/*`; `none`: any image).
    #[arg(long)]
    pub allowed_images: Option<String>,
    /// Print the resulting configuration as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `quota delete`.
#[derive(Debug, clap::Args)]
pub struct QuotaDeleteArgs {
    /// The pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// The team.
    #[arg(long)]
    pub team: Option<String>,
    /// Remove the whole configuration (everything is admitted again).
    #[arg(long, conflicts_with_all = ["pool", "team"])]
    pub all: bool,
    /// Print the resulting configuration as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `quota apply`.
#[derive(Debug, clap::Args)]
pub struct QuotaApplyArgs {
    /// The file (`-` for stdin, read as TOML).
    pub file: PathBuf,
    /// Print the resulting configuration as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `quota check`.
#[derive(Debug, clap::Args)]
pub struct QuotaCheckArgs {
    /// Only report the drift; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Restore into a Redis the store has not mirrored before (a new server, or this one
    /// after it lost its data), and mirror it from now on. Without it, such a Redis gets
    /// nothing from the store, and reconcile says what it would restore.
    #[arg(long)]
    pub adopt: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Outbox entries the job store refused, with its error (oldest first).
    Errors(JsonArgs),
    /// Apply the refused entries to the store again, in their original order; those it
    /// takes leave the list.
    Retry(JsonArgs),
}

/// `budget` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BudgetCommand {
    /// Set a team's (or an experiment's) budget for a month.
    Set(BudgetSetArgs),
    /// Budgets with what is spent and committed against them.
    Show(BudgetShowArgs),
}

/// Arguments of `budget set`.
#[derive(Debug, clap::Args)]
pub struct BudgetSetArgs {
    /// The amount, e.g. 5000 or 1234.56, in the pricing file's currency.
    pub amount: String,
    /// Team.
    #[arg(long)]
    pub team: String,
    /// Only jobs with this `experiment` label.
    #[arg(long)]
    pub experiment: Option<String>,
    /// Month, YYYY-MM (default: this month in the pricing time zone).
    #[arg(long)]
    pub month: Option<String>,
    /// Warn when the projection reaches this share of the budget.
    #[arg(long, default_value = "0.7")]
    pub warn: String,
}

/// Arguments of `budget show`.
#[derive(Debug, clap::Args)]
pub struct BudgetShowArgs {
    /// Only this team.
    #[arg(long)]
    pub team: Option<String>,
    /// Month, YYYY-MM (default: this month).
    #[arg(long)]
    pub month: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `cost` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CostCommand {
    /// Price job specs (a JSON object, array or JSON lines; FILE or -) without enqueueing.
    Estimate(CostEstimateArgs),
    /// Actual costs over a period, grouped, with the trend against the previous period.
    Report(CostReportArgs),
    /// A running job's cost so far and projected total, from its epoch pace.
    Forecast(IdArgs),
    /// Price one spec under alternative configurations side by side.
    Compare(CostCompareArgs),
    /// Concrete savings for a finished run, each with its amount and basis.
    Recommend(IdArgs),
}

/// Arguments of `cost compare`.
#[derive(Debug, clap::Args)]
pub struct CostCompareArgs {
    /// Spec file (one job), or - for stdin.
    pub file: PathBuf,
    /// Alternative batch sizes, e.g. 64,128.
    #[arg(long, value_delimiter = ',')]
    pub batch_size: Vec<u32>,
    /// Alternative GPU counts, e.g. 1,4.
    #[arg(long, value_delimiter = ',')]
    pub gpus: Vec<u32>,
    /// Also price on spot capacity, and starting at the next off-peak window.
    #[arg(long)]
    pub all_options: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `cost report`.
#[derive(Debug, clap::Args)]
pub struct CostReportArgs {
    /// Start of the period (a time like 2026-11-01, or an age like 30d).
    #[arg(long, value_parser = parse_time)]
    pub from: u64,
    /// End of the period (default: now).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<u64>,
    /// Group by team, model-type or priority.
    #[arg(long, default_value = "team")]
    pub by: String,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

/// Arguments of `cost estimate`.
#[derive(Debug, clap::Args)]
pub struct CostEstimateArgs {
    /// Spec file, or - for stdin.
    pub file: PathBuf,
    /// Price on spot capacity.
    #[arg(long)]
    pub spot: bool,
    /// Start time (a time, or an age like 0s); default now.
    #[arg(long, value_parser = parse_time)]
    pub start: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--json` for read commands.
#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Redraw in place every INTERVAL (default 2s) until interrupted.
    #[arg(long, num_args = 0..=1, default_missing_value = "2s", value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,
}

/// A job id argument.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The job's id.
    pub id: JobId,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The job's id.
    pub id: JobId,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job's id.
    pub id: JobId,
    /// How many lines, counting from the end.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub lines: usize,
}

/// Arguments of `list`. Live jobs come from Redis, older ones from the job store.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only jobs of this priority (p0|p1|p2|urgent|normal|background).
    #[arg(long)]
    pub priority: Option<Priority>,
    /// Only jobs in this state.
    #[arg(long)]
    pub state: Option<JobState>,
    /// Only jobs of this team.
    #[arg(long)]
    pub team: Option<String>,
    /// Only jobs of this model type.
    #[arg(long)]
    pub model_type: Option<String>,
    /// Only jobs enqueued since then: a time (2026-11-01T00:00:00Z) or an age (7d).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<u64>,
    /// Only jobs enqueued before then: a time or an age.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<u64>,
    /// Only jobs after this cursor: the `--before` a full page prints at its end. Unlike
    /// `--offset`, a page found this way costs the same however deep it is.
    #[arg(long)]
    pub before: Option<ListCursor>,
    /// Skip this many (paging).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `enqueue`: one flag per spec field.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// Job name.
    #[arg(long)]
    pub name: String,
    /// Job id (makes enqueue idempotent); generated when absent.
    #[arg(long)]
    pub id: Option<JobId>,
    /// Owning team.
    #[arg(long, env = "GPUQ_TEAM", default_value = "default")]
    pub team: String,
    /// Model family, e.g. resnet50.
    #[arg(long, default_value = "generic")]
    pub model_type: String,
    /// p0|p1|p2 or urgent|normal|background.
    #[arg(long, short, default_value = "p1")]
    pub priority: Priority,
    /// Container image (Kubernetes launcher).
    #[arg(long)]
    pub image: Option<String>,
    /// Environment variable for the job, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// Environment variable from a secret of the job's team, VAR=SECRET/KEY (repeatable):
    /// the value never enters the spec.
    #[arg(long = "secret-env", value_parser = parse_secret_ref)]
    pub secret_env: Vec<(String, common::SecretRef)>,
    /// Number of GPUs.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub gpus: u32,
    /// GPU model, e.g. a100.
    #[arg(long)]
    pub gpu_type: Option<String>,
    /// CPU cores.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub cpu: f64,
    /// Memory, e.g. 16Gi.
    #[arg(long, default_value = "4Gi")]
    pub memory: Memory,
    /// Training epochs.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub epochs: u32,
    /// Training batch size.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true)]
    pub batch_size: u32,
    /// Attempts before the job is dead-lettered.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub max_attempts: u32,
    /// Per-attempt time limit, e.g. 90m or 2h.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// Defer the start to the next off-peak window (cheaper; see the pricing file).
    #[arg(long)]
    pub off_peak: bool,
    /// Put the job in a group (see `batch --group`).
    #[arg(long)]
    pub group: Option<String>,
    /// Most jobs of the group running at once (needs --group).
    #[arg(long, requires = "group")]
    pub max_running: Option<u32>,
    /// Never preempt this job (urgent jobs, or teams the preemption configuration allows).
    #[arg(long)]
    pub not_preemptible: bool,
    /// Time the job gets to checkpoint and exit when preempted (default: the
    /// configuration's grace, 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub preempt_grace: Option<Duration>,
    /// Print the job record as JSON.
    #[arg(long)]
    pub json: bool,
    /// The command to run, after `--` (argv, no shell).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Arguments of `batch`.
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// File with a JSON array of specs or one spec per line; `-` reads stdin.
    pub file: PathBuf,
    /// Defer every job to the next off-peak window.
    #[arg(long)]
    pub off_peak: bool,
    /// Put every job of the batch in this group (a spec's own `group` wins).
    #[arg(long)]
    pub group: Option<String>,
    /// Most jobs of the group running at once; 1 runs the batch one job after another,
    /// in order (needs --group).
    #[arg(long, requires = "group")]
    pub max_running: Option<u32>,
    /// Enqueue a batch larger than one atomic step (5,000 jobs) in atomic chunks. Jobs
    /// without an id get one derived from the input, so running the same command again
    /// after a failure part-way adds only what is missing.
    #[arg(long)]
    pub chunked: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// How often due retries are promoted.
    #[arg(long, env = "GPUQ_PROMOTE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub promote_interval: Duration,
    /// How often jobs of dead workers are recovered.
    #[arg(long, env = "GPUQ_REAP_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reap_interval: Duration,
    /// How often the outbox is checked when it was empty.
    #[arg(long, env = "GPUQ_DRAIN_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub drain_interval: Duration,
    /// Succeeded and cancelled jobs leave Redis this long after they end (0 keeps them).
    #[arg(long, env = "GPUQ_REDIS_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub redis_retention: Duration,
    /// How often retention looks for jobs to remove from Redis and the store.
    #[arg(long, env = "GPUQ_RETENTION_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
    /// Dead jobs leave Redis (and the dead-letter list) this long after they end, once the
    /// store has them (0 keeps them).
    #[arg(long, env = "GPUQ_DEAD_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub dead_retention: Duration,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "GPUQ_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: Option<String>,
    /// Finished jobs leave the job store this long after they end (0 keeps them forever).
    #[arg(long, env = "GPUQ_STORE_RETENTION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub store_retention: Duration,
    /// A quota file (as `quota apply` takes) to apply at start and again whenever its
    /// content changes: a ConfigMap mounted into the pod.
    #[arg(long, env = "GPUQ_QUOTAS")]
    pub quotas: Option<PathBuf>,
    /// How often the file given with --quotas is read again.
    #[arg(long, env = "GPUQ_QUOTAS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub quotas_interval: Duration,
    /// How often jobs running past twice their estimate, and budgets forecast to be
    /// exceeded, are counted for the metrics.
    #[arg(long, env = "GPUQ_COST_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub cost_interval: Duration,
    /// Also serve the HTTP API under /v1 (with /openapi.json, and the agent tools at
    /// /mcp) on the --listen address. It needs at least one token (`scheduler token
    /// create`), unless --insecure-no-auth.
    #[arg(long, env = "GPUQ_API")]
    pub api: bool,
    /// Serve the API without authentication: every caller is an admin of every team.
    /// For a demo on a laptop only.
    #[arg(long, env = "GPUQ_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Most API requests waiting at once for a job's state or following a log (each
    /// holds a Redis connection of its own).
    #[arg(long, env = "GPUQ_API_MAX_WAITS", default_value_t = 64)]
    pub api_max_waits: usize,
}

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: u32,
    /// Give up after this long.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep the demo's jobs in Redis afterwards (to explore them with `list`, `show`, `logs`).
    #[arg(long)]
    pub keep: bool,
}

/// A point in time as ms since the epoch: RFC 3339 (`2026-11-01T00:00:00Z`, or just the
/// date) or an age before now (`90m`, `7d`).
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(common::now_ms().saturating_sub(ago.as_millis() as u64));
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        })
        .map_err(|_| format!("{s:?} is neither a time like 2026-11-01T12:00:00Z nor an age like 7d"))
}

fn parse_secret_ref(s: &str) -> Result<(String, common::SecretRef), String> {
    let (var, r) = s
        .split_once('=')
        .ok_or_else(|| format!("expected VAR=SECRET/KEY, got {s:?}"))?;
    Ok((var.to_string(), common::SecretRef::try_from(r.to_string())?))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
