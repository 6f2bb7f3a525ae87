//! The `scheduler` binary's library: the operator CLI and the long-running `serve` mode.
//!
//! The scheduler validates and enqueues jobs and looks after the queue (recovering the
//! jobs of dead workers, promoting due retries). It never runs jobs itself.

pub mod api;
pub mod app;
mod cli;
mod commands;
mod error;
mod format;
pub mod mcp;
pub mod metrics;
pub mod serve;
pub mod store_sync;
pub mod ui;

pub use cli::{Cli, Command};
pub use error::{CliError, CliResult};

use std::time::Duration;

/// Runs one CLI invocation.
pub async fn run(cli: Cli, shutdown: tokio_util::sync::CancellationToken) -> CliResult<()> {
    if let Command::Demo(args) = &cli.command {
        return commands::demo::run(&cli, args, shutdown).await;
    }
    // Operators want a quick answer: retry an unreachable Redis for a few seconds, then say so.
    let patience = match cli.command {
        Command::Serve(_) => Duration::from_secs(60),
        _ => Duration::from_secs(3),
    };
    let queue = cli.redis.connect(patience).await.map_err(|e| {
        if e.is_bad_input() {
            CliError::BadInput(e.to_string())
        } else {
            CliError::Infra(format!(
                "cannot reach Redis at {}: {e}",
                common::queue::mask_url(&cli.redis.redis_url)
            ))
        }
    })?;
    let store_url = cli
        .database_url
        .clone()
        .unwrap_or_else(common::store::JobStore::default_url);
    let pricing = app::load_pricing(cli.pricing.as_deref())?;
    let app = app::App::new(queue, store_url, pricing);
    commands::dispatch(&app, cli.command, shutdown).await
}
