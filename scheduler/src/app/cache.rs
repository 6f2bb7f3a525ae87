//! What a long-running process (`serve`, `scheduler mcp`) keeps of the store's settings,
//! so that a request reads no table on its way in: the tokens it has seen, the month's
//! budgets, and each model type's run history for estimates.
//!
//! Tokens and budgets are dropped whenever the settings epoch in Redis moves (a token
//! revoked or a budget set, by any process), and after [`SETTINGS_TTL`] in any case (a
//! row edited in the database by hand). Run histories only refine estimates, so they are
//! simply kept for [`HISTORY_TTL`].

use super::Caller;
use common::store::BudgetRow;
use cost::RunSample;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a cached token or budget is used without reading it again.
pub(crate) const SETTINGS_TTL: Duration = Duration::from_secs(60);
/// The longest a model type's run history is used for estimates without reading it again.
pub(crate) const HISTORY_TTL: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// The settings epoch read once for the request being served (see [`one_request`]).
    static REQUEST_EPOCH: std::cell::Cell<Option<u64>>;
}

/// Runs `f` as one request: the settings epoch is read at most once in it, however many
/// checks it makes (authentication, then the budget check). Outside a request (the CLI,
/// a tool call on stdio) every check reads it.
pub async fn one_request<F: std::future::Future>(f: F) -> F::Output {
    REQUEST_EPOCH.scope(std::cell::Cell::new(None), f).await
}

/// How long the HTTP API trusts the settings epoch it read last, across requests: a
/// Redis read less on every request. A change made through this process applies at once
/// (it drops its own copies); one made by another process (the CLI) reaches the API's
/// requests within this. The CLI and the tools on stdio read the epoch on every check.
pub(crate) const API_EPOCH_TRUST: Duration = Duration::from_millis(50);

/// True inside [`one_request`].
pub(crate) fn in_request() -> bool {
    REQUEST_EPOCH.try_with(|_| ()).is_ok()
}

/// The epoch this request already read, if any.
pub(crate) fn request_epoch() -> Option<u64> {
    REQUEST_EPOCH.try_with(|c| c.get()).ok().flatten()
}

/// Records the epoch this request read.
pub(crate) fn set_request_epoch(epoch: u64) {
    let _ = REQUEST_EPOCH.try_with(|c| c.set(Some(epoch)));
}

/// A cached token: the caller and when the token expires (ms).
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub(crate) caller: Caller,
    pub(crate) token_id: String,
    pub(crate) expires_at: Option<u64>,
}

/// Entries with when they were read.
type Timed<K, V> = Mutex<HashMap<K, (V, Instant)>>;

#[derive(Default)]
pub(crate) struct Cache {
    /// The settings epoch the cached tokens and budgets were read under, and when.
    epoch: Mutex<Option<(u64, Instant)>>,
    tokens: Timed<String, CachedToken>,
    /// By (month, team; empty for every team).
    budgets: Timed<(String, String), Vec<BudgetRow>>,
    histories: Timed<String, Vec<RunSample>>,
    /// Estimates by configuration and start minute.
    estimates: Timed<(String, u64), super::Estimate>,
}

fn fresh<T: Clone>(entry: Option<&(T, Instant)>, ttl: Duration) -> Option<T> {
    entry.filter(|(_, at)| at.elapsed() < ttl).map(|(v, _)| v.clone())
}

impl Cache {
    /// Drops the settings when `epoch` is not the one they were read under.
    pub(crate) fn observe_epoch(&self, epoch: u64) {
        let mut seen = self.epoch.lock().expect("cache lock");
        if seen.map(|(e, _)| e) != Some(epoch) {
            self.drop_settings();
        }
        *seen = Some((epoch, Instant::now()));
    }

    /// The epoch read within `within`, if any.
    pub(crate) fn recent_epoch(&self, within: Duration) -> Option<u64> {
        self.epoch
            .lock()
            .expect("cache lock")
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(e, _)| e)
    }

    /// Drops the cached tokens and budgets (after this process changed one).
    pub(crate) fn drop_settings(&self) {
        self.tokens.lock().expect("cache lock").clear();
        self.budgets.lock().expect("cache lock").clear();
    }

    pub(crate) fn token(&self, hash: &str) -> Option<CachedToken> {
        fresh(self.tokens.lock().expect("cache lock").get(hash), SETTINGS_TTL)
    }

    pub(crate) fn put_token(&self, hash: String, t: CachedToken) {
        let mut tokens = self.tokens.lock().expect("cache lock");
        // Bounded by the tokens that exist (unknown ones are never cached); a sweep of
        // the stale keeps it so when many come and go.
        if tokens.len() > 10_000 {
            tokens.retain(|_, (_, at)| at.elapsed() < SETTINGS_TTL);
        }
        tokens.insert(hash, (t, Instant::now()));
    }

    pub(crate) fn budgets(&self, month: &str, team: &str) -> Option<Vec<BudgetRow>> {
        fresh(
            self.budgets
                .lock()
                .expect("cache lock")
                .get(&(month.to_string(), team.to_string())),
            SETTINGS_TTL,
        )
    }

    pub(crate) fn put_budgets(&self, month: &str, team: &str, rows: Vec<BudgetRow>) {
        self.budgets
            .lock()
            .expect("cache lock")
            .insert((month.to_string(), team.to_string()), (rows, Instant::now()));
    }

    pub(crate) fn history(&self, model_type: &str) -> Option<Vec<RunSample>> {
        fresh(
            self.histories.lock().expect("cache lock").get(model_type),
            HISTORY_TTL,
        )
    }

    pub(crate) fn put_history(&self, model_type: &str, h: Vec<RunSample>) {
        self.histories
            .lock()
            .expect("cache lock")
            .insert(model_type.to_string(), (h, Instant::now()));
    }

    pub(crate) fn estimate(&self, key: &(String, u64)) -> Option<super::Estimate> {
        fresh(self.estimates.lock().expect("cache lock").get(key), HISTORY_TTL)
    }

    pub(crate) fn put_estimate(&self, key: (String, u64), e: super::Estimate) {
        let mut estimates = self.estimates.lock().expect("cache lock");
        if estimates.len() > 10_000 {
            estimates.retain(|_, (_, at)| at.elapsed() < HISTORY_TTL);
        }
        estimates.insert(key, (e, Instant::now()));
    }
}
