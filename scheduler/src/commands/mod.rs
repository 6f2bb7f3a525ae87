//! One module per group of subcommands.

pub(crate) mod budget;
pub(crate) mod cost;
pub(crate) mod demo;

pub(crate) use cost::attempt_pricer;
mod enqueue;
mod jobs;
pub(crate) mod quota;
mod status;
mod store;

use crate::cli::Command;
use crate::{CliError, CliResult};
use common::queue::RedisQueue;
use tokio_util::sync::CancellationToken;

/// Runs a subcommand against a connected queue.
pub(crate) async fn dispatch(
    command: Command,
    queue: RedisQueue,
    store_url: String,
    pricing: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
) -> CliResult<()> {
    match command {
        Command::Enqueue(a) => enqueue::enqueue(&queue, *a, &store_url, pricing.as_deref()).await,
        Command::Batch(a) => enqueue::batch(&queue, a, &store_url, pricing.as_deref()).await,
        Command::Budget(crate::cli::BudgetCommand::Set(a)) => {
            budget::set(&crate::open_store(&store_url).await?, pricing.as_deref(), a).await
        }
        Command::Budget(crate::cli::BudgetCommand::Show(a)) => {
            budget::show(&crate::open_store(&store_url).await?, pricing.as_deref(), a).await
        }
        Command::Cost(crate::cli::CostCommand::Report(a)) => {
            cost::report_command(&crate::open_store(&store_url).await?, pricing.as_deref(), a).await
        }
        Command::Cost(crate::cli::CostCommand::Forecast(a)) => {
            cost::forecast_command(&queue, pricing.as_deref(), a).await
        }
        Command::Cost(crate::cli::CostCommand::Compare(a)) => {
            cost::compare_command(&store_url, pricing.as_deref(), a).await
        }
        Command::Cost(crate::cli::CostCommand::Recommend(a)) => {
            cost::recommend_command(&queue, &store_url, pricing.as_deref(), a).await
        }
        Command::Cost(crate::cli::CostCommand::Estimate(a)) => {
            cost::estimate_command(&store_url, pricing.as_deref(), a).await
        }
        Command::Cancel(a) => jobs::cancel(&queue, a).await,
        Command::Show(a) => jobs::show(&queue, &store_url, a).await,
        Command::List(a) => jobs::list(&queue, &store_url, a).await,
        Command::Retry(a) => jobs::retry(&queue, a).await,
        Command::Logs(a) => jobs::logs(&queue, a).await,
        Command::Status(a) => status::status(&queue, &store_url, a.json, a.watch, &shutdown).await,
        Command::Workers(a) => status::workers(&queue, a.json).await,
        Command::Serve(a) => {
            let store = crate::open_store(&store_url).await?;
            crate::serve::run(queue, store, a, cost::model(pricing.as_deref())?, shutdown).await
        }
        Command::Reconcile(a) => {
            let store = crate::open_store(&store_url).await?;
            let report = crate::store_sync::reconcile::reconcile(
                &queue,
                &store,
                a.adopt,
                None,
                Some(&*attempt_pricer(cost::model(pricing.as_deref())?)),
            )
            .await?;
            if a.json {
                crate::format::print_json(&report);
            } else {
                println!(
                    "reconciled: {} transitions written to the store, {} jobs recorded from Redis, {} jobs restored to Redis",
                    report.drained, report.recorded, report.restored
                );
                if report.would_restore > 0 {
                    println!(
                        "not restored: the store holds {} unfinished jobs (first: {}) from another Redis, or from this one before it lost its data; \
                         `scheduler reconcile --adopt` restores them here",
                        report.would_restore,
                        report.would_restore_ids.join(", ")
                    );
                }
            }
            Ok(())
        }
        Command::Store(c) => {
            store::run(
                &queue,
                &crate::open_store(&store_url).await?,
                c,
                pricing.as_deref(),
            )
            .await
        }
        Command::Quota(c) => quota::run(&queue, c).await,
        Command::Demo(_) => unreachable!("the demo brings its own Redis and is dispatched before connecting"),
    }
}

/// Reads a command's input: the file at `path`, or stdin for `-`.
pub(super) fn read_input(path: &std::path::Path) -> CliResult<String> {
    let mut s = String::new();
    if path.as_os_str() == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CliError::BadInput(format!("cannot read stdin: {e}")))?;
    } else {
        s = std::fs::read_to_string(path)
            .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))?;
    }
    Ok(s)
}
