//! `scheduler store errors|retry`: the outbox entries the job store refused.

use crate::app::App;
use crate::cli::StoreCommand;
use crate::CliResult;
use serde::Serialize;

#[derive(Serialize)]
struct RefusedView<'a> {
    entry: &'a str,
    job: String,
    from: Option<String>,
    to: String,
    at: u64,
    error: &'a str,
}

pub(crate) async fn run(app: &App, command: StoreCommand) -> CliResult<()> {
    let queue = app.queue();
    match command {
        StoreCommand::Errors(a) => {
            let entries = queue.refused_entries(10_000).await?;
            let views: Vec<RefusedView<'_>> = entries
                .iter()
                .map(|r| RefusedView {
                    entry: &r.event.event_id,
                    job: r.event.job.to_string(),
                    from: r.event.from.map(|s| s.to_string()),
                    to: r.event.to.to_string(),
                    at: r.event.at,
                    error: &r.error,
                })
                .collect();
            if a.json {
                crate::format::print_json(&views);
            } else if views.is_empty() {
                println!("the job store has refused no transitions");
            } else {
                println!(
                    "{} transitions the job store refused (oldest first):",
                    views.len()
                );
                for v in &views {
                    println!(
                        "  {}  job {}  {} -> {}  {}",
                        v.entry,
                        v.job,
                        v.from.as_deref().unwrap_or("(new)"),
                        v.to,
                        v.error
                    );
                }
                println!("replay them with `scheduler store retry` once the cause is fixed");
            }
            Ok(())
        }
        StoreCommand::Retry(a) => {
            let pricer = crate::app::attempt_pricer(app.pricing().clone());
            let store = app.store().await?;
            let (taken, left) = crate::store_sync::drain::retry_refused(queue, store, Some(&*pricer)).await?;
            if a.json {
                crate::format::print_json(&serde_json::json!({ "taken": taken, "still_refused": left }));
            } else {
                println!("{taken} transitions written to the job store, {left} still refused");
            }
            if left > 0 {
                return Err(crate::CliError::Infra(format!(
                    "{left} transitions are still refused by the job store: see `scheduler store errors`"
                )));
            }
            Ok(())
        }
    }
}
