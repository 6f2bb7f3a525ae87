//! The job store: the system of record behind the hot queue.
//!
//! PostgreSQL in production, SQLite embedded by default, chosen at run time from the URL
//! through sqlx's `Any` driver; one set of migrations serves both (plain SQL, BIGINT times
//! in ms, JSON as text, `$n` placeholders, which both backends accept).
//!
//! The store is written only from the outbox (see [`crate::queue::OutboxEvent`]): the Lua
//! scripts append every transition to a Redis stream in the same atomic step as the change,
//! and `scheduler serve` applies the stream here in batches. A crash between commit and
//! acknowledgement replays entries, which is harmless: history rows are keyed by the
//! stream entry id and job rows only move forward in stream order.

mod apply;
mod costs;
mod read;
mod tokens;

pub use apply::{AppliedTransition, Pricer};
pub use costs::{AttemptCost, BudgetRow};
pub use tokens::{AuditEntry, TokenRow};

use crate::queue::mask_url;
use crate::{Error, Result};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::path::PathBuf;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The backend behind a store URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`
    Postgres,
    /// `sqlite://`
    Sqlite,
}

impl Backend {
    /// The `n`th (1-based) parameter of a statement whose parameters are all bound in
    /// order. SQLite gets a bare `?`: sqlx looks each named one (`$n`) up by name, and
    /// SQLite finds a name by walking the statement's list, so binding the hundreds of
    /// a multi-row insert took a quarter of `serve`'s time while draining.
    pub(crate) fn mark(self, n: usize) -> String {
        match self {
            Backend::Sqlite => "?".into(),
            Backend::Postgres => format!("${n}"),
        }
    }
}

/// A connection pool to the job store.
#[derive(Debug, Clone)]
pub struct JobStore {
    pool: AnyPool,
    backend: Backend,
    display_url: String,
}

impl JobStore {
    /// The default store: an SQLite file under the user's data directory
    /// (`$XDG_DATA_HOME/gpuq/jobs.db`, else `~/.local/share/gpuq/jobs.db`).
    pub fn default_url() -> String {
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(std::env::temp_dir);
        sqlite_url(&base.join("gpuq").join("jobs.db"))
    }

    /// Opens the store at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let display_url = mask_url(url);
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(Error::InvalidInput(format!(
                "unsupported database URL {display_url}: use postgres://... or sqlite://PATH"
            )));
        };
        if backend == Backend::Sqlite {
            if let Some(parent) = sqlite_path(url).as_ref().and_then(|p| p.parent()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Store(format!("cannot create {}: {e}", parent.display())))?;
            }
        }
        sqlx::any::install_default_drivers();
        let url = with_sqlite_defaults(url);
        let mut options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5));
        if backend == Backend::Postgres {
            // sqlx prepares and caches every statement, and PostgreSQL soon reuses one
            // generic plan per statement. A store that starts empty would keep the plans
            // made for an empty table (sequential scans) while it fills: looking up 100
            // job ids took 50 ms at 50k rows, and a 50k-job burst took 90 s to record.
            // Planning each execution with its parameters costs far less than that.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, "SET plan_cache_mode = force_custom_plan").await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(&url)
            .await
            .map_err(|e| Error::Store(format!("cannot open job store at {display_url}: {e}")))?;
        if backend == Backend::Sqlite {
            // WAL lets readers (CLI) work while `serve` writes.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(store_err)?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::Store(format!("migrating job store at {display_url}: {e}")))?;
        Ok(JobStore {
            pool,
            backend,
            display_url,
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL with the password masked.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://PATH?mode=rwc` for a file path.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Creates the SQLite file when missing, unless the URL says otherwise.
fn with_sqlite_defaults(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_string()
    }
}

/// A refusal of the data itself (a constraint, an encoding, a trigger's exception) is told
/// apart from every other fault: the drainer sets the first aside and retries the rest.
/// Database errors that are about the moment, not the data (SQLite busy or locked, a
/// PostgreSQL deadlock, serialization failure or shutdown), are faults to retry.
pub(crate) fn store_err(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) if refuses_the_data(db.as_ref()) => Error::StoreRefused(db.to_string()),
        e => Error::Store(e.to_string()),
    }
}

fn refuses_the_data(db: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::error::ErrorKind;
    if !matches!(db.kind(), ErrorKind::Other) {
        // Unique, foreign-key, not-null or check violations, on either backend.
        return true;
    }
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    // PostgreSQL SQLSTATE: class 22 data exception (a NUL byte, a bad encoding), class 23
    // integrity constraint, P0001 raised by a trigger or function.
    if code.len() == 5 {
        return code.starts_with("22") || code.starts_with("23") || code == "P0001";
    }
    // SQLite result codes (4 digits at most; the primary code is the low byte of the
    // extended one): 18 TOOBIG, 19 CONSTRAINT, 20 MISMATCH.
    code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 18..=20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/gpuq/jobs.db?mode=rwc"),
            Some("/var/lib/gpuq/jobs.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(with_sqlite_defaults("sqlite:///a.db"), "sqlite:///a.db?mode=rwc");
        assert_eq!(
            with_sqlite_defaults("sqlite:///a.db?mode=ro"),
            "sqlite:///a.db?mode=ro"
        );
        assert!(JobStore::default_url().ends_with("gpuq/jobs.db?mode=rwc"));
    }
}
