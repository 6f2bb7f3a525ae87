//! Commands about single jobs: `cancel`, `show`, `list`, `retry`, `logs`.

use crate::app::{App, Caller};
use crate::cli::{IdArgs, ListArgs, LogsArgs, ShowArgs};
use crate::format::{age, print_json, short_duration, timestamp};
use crate::CliResult;
use common::{now_ms, JobRecord, ListFilter};

pub(crate) async fn cancel(app: &App, caller: &Caller, a: IdArgs) -> CliResult<()> {
    let outcome = app.cancel(caller, &a.id, None).await?;
    if a.json {
        print_json(&outcome);
    } else if outcome.state == "cancelled" {
        println!("job {} cancelled", a.id);
    } else {
        println!("job {} is running; its worker is stopping it", a.id);
    }
    Ok(())
}

pub(crate) async fn retry(app: &App, caller: &Caller, a: IdArgs) -> CliResult<()> {
    app.retry(caller, &a.id).await?;
    if a.json {
        print_json(&serde_json::json!({ "id": a.id, "state": "queued" }));
    } else {
        println!("job {} queued again", a.id);
    }
    Ok(())
}

pub(crate) async fn show(app: &App, caller: &Caller, a: ShowArgs) -> CliResult<()> {
    // Finished jobs leave Redis after the retention period; the store keeps them.
    let record = app.job(caller, &a.id).await?;
    if a.json {
        print_json(&record);
        return Ok(());
    }
    let s = &record.spec;
    println!("job        {}", record.id);
    println!("name       {}", s.name);
    println!(
        "state      {}{}",
        record.state,
        record
            .progress
            .as_ref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default()
    );
    if let Some(why) = &record.waiting {
        println!("waiting    {why}");
    }
    if let Some(pos) = record.position {
        println!("position   {pos} job(s) ahead");
    }
    println!("priority   {} ({})", record.priority, record.priority.alias());
    println!("team       {}   model type {}", s.team, s.model_type);
    println!("attempt    {} of {}", record.attempt, record.attempt_limit);
    if let Some(w) = &record.worker {
        println!("worker     {w}");
    }
    if let Some(r) = &record.reason {
        println!("reason     {r}");
    }
    if let Some(j) = &record.preempted_for {
        println!("preempted  for {j}: stopping, then back to the head of its queue");
    }
    if !record.preempting.is_empty() {
        println!("preempting {}", record.preempting.join(", "));
    }
    if record.preemptions > 0 {
        println!(
            "preemptions {}, {:.1} GPU-s lost (see the history)",
            record.preemptions, record.lost_gpu_secs
        );
    }
    if let Some(c) = record.exit_code {
        println!("exit code  {c}");
    }
    println!(
        "resources  {} GPU{} {}, {} CPU, {}",
        s.resources.gpus,
        if s.resources.gpus == 1 { "" } else { "s" },
        s.resources.gpu_type.as_deref().unwrap_or(""),
        s.resources.cpu,
        s.resources.memory
    );
    println!(
        "training   {} epochs, batch size {}, timeout {}s",
        s.epochs, s.batch_size, s.timeout_secs
    );
    match (&s.image, s.command.is_empty()) {
        (Some(image), _) => println!("image      {image} {}", s.command.join(" ")),
        (None, _) => println!("command    {}", shell_words(&s.command)),
    }
    println!("history");
    for e in &record.events {
        let mut line = format!(
            "  {}  {:<10} attempt {}",
            timestamp(e.at),
            e.state.as_str(),
            e.attempt
        );
        if let Some(w) = &e.worker {
            line.push_str(&format!("  on {w}"));
        }
        if let Some(d) = &e.detail {
            line.push_str(&format!("  {d}"));
        }
        println!("{line}");
    }
    Ok(())
}

pub(crate) async fn list(app: &App, caller: &Caller, a: ListArgs) -> CliResult<()> {
    let filter = ListFilter {
        state: a.state,
        priority: a.priority,
        team: a.team,
        model_type: a.model_type,
        since_ms: a.since,
        until_ms: a.until,
        before: a.before,
        offset: a.offset,
        limit: a.limit,
    };
    let page = app.list(caller, filter.clone()).await?;
    let jobs = page.jobs;
    // A full page may have more after it: say how to get the next one (on stderr, so
    // that --json output stays one document).
    if let Some(next) = &page.next {
        let offset = if filter.offset > 0 {
            " (and drop --offset)"
        } else {
            ""
        };
        eprintln!("more: add --before {next}{offset}");
    }
    if a.json {
        print_json(&jobs);
        return Ok(());
    }
    if jobs.is_empty() {
        println!("no jobs");
        return Ok(());
    }
    println!(
        "{:<38} {:<4} {:<10} {:<8} {:>8}  {:<14} NAME",
        "ID", "PRI", "STATE", "ATTEMPT", "AGE", "TEAM"
    );
    for j in &jobs {
        println!(
            "{:<38} {:<4} {:<10} {:<8} {:>8}  {:<14} {}",
            j.id.as_str(),
            j.priority.as_str(),
            j.state.as_str(),
            format!("{}/{}", j.attempt, j.attempt_limit),
            age(j.enqueued_at),
            j.spec.team,
            j.spec.name
        );
    }
    Ok(())
}

pub(crate) async fn logs(app: &App, caller: &Caller, a: LogsArgs) -> CliResult<()> {
    for line in app.logs(caller, &a.id, a.lines).await? {
        println!("{line}");
    }
    Ok(())
}

/// Elapsed time of a running job, or total run time of a finished one.
pub(crate) fn elapsed(j: &JobRecord) -> Option<String> {
    let start = j.started_at?;
    let end = j.finished_at.unwrap_or_else(now_ms);
    Some(short_duration(end.saturating_sub(start)))
}

/// Argv shown so it could be pasted into a shell.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
