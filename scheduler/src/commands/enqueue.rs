//! `enqueue` and `batch`.

use crate::app::{App, Caller, SameId};
use crate::cli::{BatchArgs, EnqueueArgs};
use crate::format::print_json;
use crate::{CliError, CliResult};
use common::queue::BatchKey;
use common::{parse_batch, JobSpec, Resources};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Batches at least this large get a progress display on a terminal.
const PROGRESS_THRESHOLD: usize = 1000;

pub(crate) async fn enqueue(app: &App, caller: &Caller, a: EnqueueArgs) -> CliResult<()> {
    let spec = JobSpec {
        id: a.id,
        name: a.name,
        team: a.team,
        model_type: a.model_type,
        priority: a.priority,
        image: a.image,
        command: a.command,
        env: a.env.into_iter().collect(),
        secret_env: a.secret_env.into_iter().collect(),
        resources: Resources {
            gpus: a.gpus,
            gpu_type: a.gpu_type,
            cpu: a.cpu,
            memory: a.memory,
        },
        epochs: a.epochs,
        batch_size: a.batch_size,
        max_attempts: a.max_attempts,
        // Sub-second limits round up to one second; zero is left for validation to reject.
        timeout_secs: if a.timeout.is_zero() {
            0
        } else {
            a.timeout.as_secs().max(1)
        },
        labels: a.labels.into_iter().collect(),
        not_before: if a.off_peak { app.off_peak_start() } else { None },
        group: a.group,
        group_max_running: a.max_running,
        preemptible: a.not_preemptible.then_some(false),
        preempt_grace_secs: a.preempt_grace.map(|g| g.as_secs()),
    };
    if let Some(at) = spec.not_before {
        eprintln!(
            "deferred to the off-peak window at {}",
            crate::format::timestamp(at)
        );
    }
    let outcome = app.enqueue(caller, spec, SameId::KeepExisting).await?;
    for w in &outcome.warnings {
        eprintln!("{w}");
    }
    if let Some(e) = &outcome.estimate {
        eprintln!("{}", e.line());
    }
    let id = &outcome.job.id;
    if a.json {
        // The job as `show` gives it, with its position.
        let job = app.job(caller, id).await?;
        print_json(&serde_json::json!({ "created": outcome.created, "job": job }));
    } else {
        println!("{id}");
        if !outcome.created {
            eprintln!("job {id} already exists; nothing changed");
        }
    }
    Ok(())
}

pub(crate) async fn batch(app: &App, caller: &Caller, a: BatchArgs) -> CliResult<()> {
    let input = super::read_input(&a.file)?;
    let mut specs = parse_batch(&input).map_err(|e| CliError::BadInput(e.to_string()))?;
    if let Some(group) = &a.group {
        for s in specs.iter_mut() {
            if s.group.is_none() {
                s.group = Some(group.clone());
                s.group_max_running = a.max_running.or(s.group_max_running);
            }
        }
        for s in &specs {
            s.validate().map_err(|e| CliError::BadInput(e.to_string()))?;
        }
    }
    if a.off_peak {
        if let Some(at) = app.off_peak_start() {
            for s in specs.iter_mut().filter(|s| s.not_before.is_none()) {
                s.not_before = Some(at);
            }
            eprintln!(
                "deferred to the off-peak window at {}",
                crate::format::timestamp(at)
            );
        }
    }
    let show_progress = !a.json && specs.len() >= PROGRESS_THRESHOLD && std::io::stderr().is_terminal();
    let spinner = show_progress.then(|| {
        let pb = ProgressBar::new_spinner()
            .with_message(format!("enqueueing {} jobs in one atomic step", specs.len()));
        pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let limit = common::queue::MAX_ATOMIC_BATCH;
    if specs.len() > limit && !a.chunked {
        return Err(CliError::BadInput(format!(
            "the batch holds {} jobs, more than the {limit} one atomic step takes; \
             pass --chunked to enqueue it in atomic chunks of {limit}",
            specs.len()
        )));
    }
    // A batch too big for one atomic step is resumable: the same command again after a
    // failure part-way finds what landed and adds only the rest.
    let key = (specs.len() > limit).then(|| {
        let options = format!("{:?} {:?} {}", a.group, a.max_running, a.off_peak);
        BatchKey::of(&caller.actor, &options, input.as_bytes())
    });
    let outcome = app
        .enqueue_batch(caller, specs, key.as_ref(), SameId::KeepExisting)
        .await;
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    let outcome = outcome?;
    for w in &outcome.warnings {
        eprintln!("{w}");
    }
    if a.json {
        print_json(&outcome.report);
        return Ok(());
    }
    if let Some(e) = &outcome.estimate {
        eprintln!("{}", e.line());
    }
    let report = &outcome.report;
    {
        // One write per 8 KiB rather than one per id (a batch can name 10^5).
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for id in &report.ids {
            writeln!(out, "{id}").map_err(|e| CliError::Infra(format!("writing the ids: {e}")))?;
        }
        out.flush()
            .map_err(|e| CliError::Infra(format!("writing the ids: {e}")))?;
    }
    eprintln!(
        "enqueued {} jobs; {} already existed and were left unchanged",
        report.created,
        report.existing.len()
    );
    Ok(())
}
