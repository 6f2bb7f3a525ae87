//! `enqueue` and `batch`.

use crate::cli::{BatchArgs, EnqueueArgs};
use crate::format::print_json;
use crate::{CliError, CliResult};
use common::queue::RedisQueue;
use common::{parse_batch, JobSpec, Resources};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Batches at least this large get a progress display on a terminal.
const PROGRESS_THRESHOLD: usize = 1000;

pub(crate) async fn enqueue(
    queue: &RedisQueue,
    a: EnqueueArgs,
    store_url: &str,
    pricing: Option<&std::path::Path>,
) -> CliResult<()> {
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
        not_before: if a.off_peak {
            super::cost::off_peak_start(pricing)?
        } else {
            None
        },
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
    spec.validate().map_err(|e| CliError::BadInput(e.to_string()))?;
    super::budget::enforce(store_url, pricing, std::slice::from_ref(&spec)).await?;
    let report = queue.enqueue_batch(vec![spec.clone()]).await?;
    if report.created == 1 {
        super::cost::print_for_enqueue(store_url, pricing, std::slice::from_ref(&spec)).await;
    }
    let id = &report.ids[0];
    if a.json {
        let record = queue.get(id).await?.map(common::JobRecord::redacted);
        print_json(&serde_json::json!({ "created": report.created == 1, "job": record }));
    } else if report.created == 1 {
        println!("{id}");
    } else {
        println!("{id}");
        eprintln!("job {id} already exists; nothing changed");
    }
    Ok(())
}

pub(crate) async fn batch(
    queue: &RedisQueue,
    a: BatchArgs,
    store_url: &str,
    pricing: Option<&std::path::Path>,
) -> CliResult<()> {
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
        if let Some(at) = super::cost::off_peak_start(pricing)? {
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
    super::budget::enforce(store_url, pricing, &specs).await?;
    let report = if specs.len() > limit {
        common::queue::assign_batch_ids(input.as_bytes(), &mut specs);
        enqueue_chunks(queue, &specs).await
    } else {
        queue.enqueue_batch(specs.clone()).await.map_err(CliError::from)
    };
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    let report = report?;
    if a.json {
        print_json(&report);
        return Ok(());
    }
    if !a.json && report.created > 0 {
        super::cost::print_for_enqueue(store_url, pricing, &specs).await;
    }
    for id in &report.ids {
        println!("{id}");
    }
    eprintln!(
        "enqueued {} jobs; {} already existed and were left unchanged",
        report.created,
        report.existing.len()
    );
    Ok(())
}

/// Enqueues `specs` (ids assigned) in atomic chunks, in order. A failure part-way says how
/// far it got; the same command again adds only what is missing.
async fn enqueue_chunks(
    queue: &RedisQueue,
    specs: &[common::JobSpec],
) -> CliResult<common::queue::EnqueueReport> {
    let limit = common::queue::MAX_ATOMIC_BATCH;
    let chunks = specs.len().div_ceil(limit);
    let mut total = common::queue::EnqueueReport {
        ids: Vec::with_capacity(specs.len()),
        created: 0,
        existing: Vec::new(),
    };
    for (n, chunk) in specs.chunks(limit).enumerate() {
        match queue.enqueue_batch(chunk.to_vec()).await {
            Ok(r) => {
                total.ids.extend(r.ids);
                total.created += r.created;
                total.existing.extend(r.existing);
            }
            Err(e) => {
                let done = n * limit;
                let why = CliError::from(e);
                return Err(CliError::Infra(format!(
                    "{why}; chunks 1 to {n} of {chunks} ({done} jobs) are enqueued: run the same command again to add the rest"
                )));
            }
        }
    }
    Ok(total)
}
