//! The application layer: every operation on the pool, written once, under every
//! interface.
//!
//! The CLI (`commands`), the HTTP API (`api`) and the agent tools (`mcp`) are adapters:
//! they turn their input into a call here, with the [`Caller`] they authenticated, and
//! turn the typed result or [`AppError`] into their own output. Authorisation lives here
//! too, so that no interface can skip it: a team-scoped caller sees only its team's jobs
//! (another team's job is "not found"), and each operation names the [`Role`] it needs.

mod budgets;
mod cache;
mod caller;
mod commit;
mod costs;
mod error;
mod jobs;
mod quotas;
mod spend;
mod status;
mod tokens;

pub(crate) use budgets::standing;
pub use budgets::{BudgetSet, Standing};
pub use cache::one_request;
pub use caller::{Caller, Role};
pub(crate) use costs::{attempt_pricer, specs_from_values, Estimator};
pub use costs::{
    check_time, load_pricing, CompareRequest, CostSummary, Estimate, EstimateRequest, ReportRequest,
    MAX_TIME_MS,
};
pub use error::{AppError, AppResult};
pub use jobs::{
    parse_job_id, BatchOutcome, CancelOutcome, EnqueueOutcome, JobPage, ListRequest, SameId, Validation,
    Wait, MAX_WAIT,
};
pub use quotas::{parse_quota_file, QuotaView};
pub(crate) use quotas::{PoolRow, TeamRow};
pub use spend::{DailySpend, DAY_MS, MAX_DAYS};
pub use status::{Activity, Capacity, Dashboard, Health, QueueRow, ACTIVITY_MINUTES, RUNNING_SHOWN};
pub use tokens::{token_hash, CreatedToken, TokenRequest, TOKEN_PREFIX};

use common::queue::RedisQueue;
use common::store::JobStore;
use cost::CostModel;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// What every operation works with: the queue, the job store (opened on first use, once
/// per process) and the pricing. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct App {
    queue: RedisQueue,
    store_url: String,
    store: Arc<OnceCell<JobStore>>,
    pricing: Arc<CostModel>,
    cache: Arc<cache::Cache>,
    /// Single enqueues share script calls (started on the first).
    committer: Arc<std::sync::OnceLock<commit::Committer>>,
}

impl App {
    /// An application over `queue`, with the store at `store_url` opened when an
    /// operation first needs it (commands that only touch Redis never open it).
    pub fn new(queue: RedisQueue, store_url: String, pricing: CostModel) -> Self {
        App {
            queue,
            store_url,
            store: Arc::new(OnceCell::new()),
            pricing: Arc::new(pricing),
            cache: Arc::default(),
            committer: Arc::default(),
        }
    }

    /// An application over an already open store (`serve`).
    pub fn with_store(queue: RedisQueue, store: JobStore, pricing: CostModel) -> Self {
        let url = store.display_url().to_string();
        App {
            queue,
            store_url: url,
            store: Arc::new(OnceCell::new_with(Some(store))),
            pricing: Arc::new(pricing),
            cache: Arc::default(),
            committer: Arc::default(),
        }
    }

    /// The queue.
    pub fn queue(&self) -> &RedisQueue {
        &self.queue
    }

    /// The group commit for single enqueues.
    pub(crate) fn committer(&self) -> &commit::Committer {
        self.committer
            .get_or_init(|| commit::Committer::start(self.queue.clone()))
    }

    /// The pricing model.
    pub fn pricing(&self) -> &CostModel {
        &self.pricing
    }

    /// The store URL with any password masked.
    pub fn store_display_url(&self) -> String {
        common::queue::mask_url(&self.store_url)
    }

    /// The job store, opened on first use. A store that cannot be opened is an
    /// infrastructure fault (503, exit 1), and the next call tries again.
    pub async fn store(&self) -> AppResult<&JobStore> {
        self.store
            .get_or_try_init(|| async { JobStore::open(&self.store_url).await })
            .await
            .map_err(AppError::from)
    }

    /// Drops cached settings if another process changed one since they were read.
    pub(crate) async fn observe_settings(&self) -> AppResult<()> {
        if cache::request_epoch().is_some() {
            return Ok(());
        }
        if cache::in_request() {
            if let Some(epoch) = self.cache.recent_epoch(cache::API_EPOCH_TRUST) {
                cache::set_request_epoch(epoch);
                return Ok(());
            }
        }
        let epoch = self.queue.settings_epoch().await?;
        self.cache.observe_epoch(epoch);
        cache::set_request_epoch(epoch);
        Ok(())
    }

    /// After this process changed a setting: its own copies go at once, and the epoch
    /// moves for every other process.
    pub(crate) async fn settings_changed(&self) -> AppResult<()> {
        self.cache.drop_settings();
        self.queue.bump_settings_epoch().await?;
        Ok(())
    }

    /// The month's budgets of a team (every team's for `None`), cached per process.
    pub(crate) async fn budget_rows(
        &self,
        store: &JobStore,
        month: &str,
        team: Option<&str>,
    ) -> AppResult<Vec<common::store::BudgetRow>> {
        self.observe_settings().await?;
        let key = team.unwrap_or("");
        if let Some(rows) = self.cache.budgets(month, key) {
            return Ok(rows);
        }
        let rows = store.budgets(month, team).await?;
        self.cache.put_budgets(month, key, rows.clone());
        Ok(rows)
    }

    /// The store when it can be opened, for operations that do without it (estimates
    /// fall back to the default table, reads to Redis alone).
    pub async fn store_if_open(&self) -> Option<&JobStore> {
        self.store().await.ok()
    }
}

impl App {
    /// Records a write that is not a job transition (budgets, quotas, tokens) in the
    /// store's audit log. The write itself has happened: a store that cannot take the
    /// entry is logged, not turned into a failure of the write.
    pub(crate) async fn audit(&self, caller: &Caller, action: &str, target: &str, detail: &str) {
        let entry = common::store::AuditEntry {
            at: common::now_ms(),
            actor: caller.actor.clone(),
            action: action.into(),
            target: target.into(),
            detail: detail.into(),
        };
        let result = match self.store().await {
            Ok(store) => store.audit(&entry).await.map_err(AppError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, actor = %entry.actor, action, target, "cannot write the audit log");
        }
    }
}
