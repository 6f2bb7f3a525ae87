//! The CLI's adapter over the application layer: one module per group of subcommands,
//! each turning its arguments into an [`App`] call and the result into text or JSON.

pub(crate) mod budget;
pub(crate) mod cost;
pub(crate) mod demo;
mod enqueue;
mod jobs;
pub(crate) mod quota;
mod status;
mod store;
mod token;

use crate::app::{App, Caller};
use crate::cli::Command;
use crate::{CliError, CliResult};
use tokio_util::sync::CancellationToken;

/// Runs a subcommand as an operator (every team, every operation): whoever can reach
/// Redis and the store can do all of this anyway. Tokens are for the API.
pub(crate) async fn dispatch(app: &App, command: Command, shutdown: CancellationToken) -> CliResult<()> {
    let op = Caller::operator();
    match command {
        Command::Enqueue(a) => enqueue::enqueue(app, &op, *a).await,
        Command::Batch(a) => enqueue::batch(app, &op, a).await,
        Command::Budget(crate::cli::BudgetCommand::Set(a)) => budget::set(app, &op, a).await,
        Command::Budget(crate::cli::BudgetCommand::Show(a)) => budget::show(app, &op, a).await,
        Command::Cost(c) => cost::run(app, &op, c).await,
        Command::Cancel(a) => jobs::cancel(app, &op, a).await,
        Command::Show(a) => jobs::show(app, &op, a).await,
        Command::List(a) => jobs::list(app, &op, a).await,
        Command::Retry(a) => jobs::retry(app, &op, a).await,
        Command::Logs(a) => jobs::logs(app, &op, a).await,
        Command::Status(a) => status::status(app, &op, a.json, a.watch, &shutdown).await,
        Command::Workers(a) => status::workers(app, &op, a.json).await,
        Command::Serve(a) => {
            app.store().await?;
            crate::serve::run(app.clone(), a, shutdown).await
        }
        Command::Reconcile(a) => {
            let store = app.store().await?;
            let report = crate::store_sync::reconcile::reconcile(
                app.queue(),
                store,
                a.adopt,
                None,
                Some(&*crate::app::attempt_pricer(app.pricing().clone())),
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
        Command::Store(c) => store::run(app, c).await,
        Command::Quota(c) => quota::run(app, &op, c).await,
        Command::Token(c) => token::run(app, &op, c).await,
        Command::Mcp(a) => {
            let caller = match &a.token {
                Some(t) => app.authenticate(t).await?,
                None => op,
            };
            crate::mcp::stdio(app.clone(), caller).await
        }
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
