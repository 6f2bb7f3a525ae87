//! `trainer`: a small but real training job for the GPU queue's demo and tests.
//!
//! It fits a logistic regression to deterministic synthetic data, so a job
//! does genuine, reproducible work instead of sleeping. Progress goes to
//! stdout as one JSON object per line (easy for the worker to forward and for
//! tests to parse); warnings and errors go to stderr. State is checkpointed
//! after every epoch, so a preempted or retried job resumes where it stopped
//! and ends with exactly the weights an uninterrupted run would have.
//!
//! Exit codes: 0 done, 1 runtime error (I/O), 2 bad arguments,
//! 3 deliberate failure requested with `--fail-at-epoch`.

mod args;
mod checkpoint;
mod data;
mod model;
#[cfg(test)]
mod testutil;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::{Command, Config};
use crate::checkpoint::{Checkpoint, LoadError};
use crate::data::{Dataset, FEATURES};
use crate::model::LogisticRegression;

/// Exit code for bad arguments (the usual convention for usage errors).
const EXIT_USAGE: u8 = 2;
/// Exit code for the failure requested by `--fail-at-epoch`; distinct from
/// real errors so tests can tell them apart.
const EXIT_FAIL_AT_EPOCH: u8 = 3;

/// Progress line printed after every epoch.
#[derive(Debug, Serialize)]
struct EpochLine {
    epoch: u32,
    epochs: u32,
    loss: f64,
    accuracy: f64,
    /// Wall time of this epoch's training and evaluation, excluding
    /// `--epoch-delay-ms`, so it reflects the real work done.
    elapsed_ms: u64,
    /// The epoch just saved, when checkpointing: a gpuq worker counts what a preemption
    /// would lose from the last such line.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<u32>,
}

/// Lifecycle lines, tagged with an `"event"` field so consumers can tell
/// them from epoch lines.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    /// Printed first when continuing from a checkpoint; `from_epoch` is the
    /// first epoch this run will train.
    Resumed { from_epoch: u32 },
    /// Always the last line of a successful run.
    Done { epochs: u32, loss: f64, accuracy: f64 },
}

/// How a run ended, when it did not hit an error.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// All epochs are done.
    Completed,
    /// `--fail-at-epoch` was reached after this epoch was checkpointed.
    FailedAtEpoch(u32),
}

fn main() -> ExitCode {
    let argv: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let Ok(argv) = argv else {
        eprintln!("trainer: arguments must be valid UTF-8");
        return ExitCode::from(EXIT_USAGE);
    };
    let config = match args::parse(argv, |name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("trainer: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&config, &mut io::stdout().lock()) {
        Ok(Outcome::Completed) => ExitCode::SUCCESS,
        Ok(Outcome::FailedAtEpoch(epoch)) => {
            eprintln!("trainer: failing on purpose after epoch {epoch} (--fail-at-epoch)");
            ExitCode::from(EXIT_FAIL_AT_EPOCH)
        }
        Err(e) => {
            eprintln!("trainer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Trains according to `config`, writing JSON lines to `out`.
///
/// Order within an epoch is train, evaluate, checkpoint, print: once a
/// consumer has seen an epoch's line, that epoch is durable.
fn run(config: &Config, out: &mut impl Write) -> Result<Outcome, String> {
    let data = Dataset::synthetic(config.seed, config.samples, FEATURES);
    let mut model = LogisticRegression::new(FEATURES);
    let mut completed = 0;

    if let Some(path) = &config.checkpoint {
        let dir = checkpoint::parent_dir(path);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create checkpoint directory {}: {e}", dir.display()))?;
        let ignore = |reason: &str| {
            eprintln!(
                "trainer: ignoring checkpoint {}: {reason}; starting from epoch 1",
                path.display()
            );
        };
        match checkpoint::load(path) {
            Ok(None) => {}
            Ok(Some(saved)) => match saved.check_compatible(config.seed, FEATURES, config.samples) {
                Ok(()) => {
                    completed = saved.epochs_completed;
                    model = LogisticRegression::from_params(saved.params);
                }
                Err(reason) => ignore(&reason),
            },
            Err(LoadError::Invalid(reason)) => ignore(&reason),
            // Unreadable is not the same as absent: overwriting it could
            // destroy progress, so let the queue see the failure.
            Err(e @ LoadError::Io(_)) => {
                return Err(format!("cannot read checkpoint {}: {e}", path.display()))
            }
        }
    }

    if completed > 0 && completed < config.epochs {
        emit(
            out,
            &Event::Resumed {
                from_epoch: completed + 1,
            },
        )?;
    }
    for epoch in completed + 1..=config.epochs {
        let started = Instant::now();
        let order = data::epoch_order(config.seed, epoch, data.len());
        model.train_epoch(&data, &order, config.batch_size, config.lr);
        let metrics = model.evaluate(&data);
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(path) = &config.checkpoint {
            let saved = Checkpoint {
                version: checkpoint::FORMAT_VERSION,
                seed: config.seed,
                features: FEATURES,
                samples: config.samples,
                epochs_completed: epoch,
                params: model.params().to_vec(),
            };
            checkpoint::save_atomic(path, &saved)
                .map_err(|e| format!("cannot write checkpoint {}: {e}", path.display()))?;
        }
        emit(
            out,
            &EpochLine {
                epoch,
                epochs: config.epochs,
                loss: round6(metrics.loss),
                accuracy: round6(metrics.accuracy),
                elapsed_ms,
                checkpoint: config.checkpoint.is_some().then_some(epoch),
            },
        )?;
        if config.fail_at_epoch == Some(epoch) {
            return Ok(Outcome::FailedAtEpoch(epoch));
        }
        if epoch < config.epochs && config.epoch_delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(config.epoch_delay_ms));
        }
    }

    // Re-evaluating is cheap and also covers a checkpoint that was already
    // complete, where no epoch ran in this process.
    let metrics = model.evaluate(&data);
    emit(
        out,
        &Event::Done {
            epochs: completed.max(config.epochs),
            loss: round6(metrics.loss),
            accuracy: round6(metrics.accuracy),
        },
    )?;
    Ok(Outcome::Completed)
}

/// Writes one JSON line and flushes, so a reader piping our stdout sees
/// each epoch as it happens rather than when a buffer fills.
fn emit(out: &mut impl Write, line: &impl Serialize) -> Result<(), String> {
    let write = |out: &mut dyn Write| -> io::Result<()> {
        serde_json::to_writer(&mut *out, line)?;
        out.write_all(b"\n")?;
        out.flush()
    };
    write(out).map_err(|e| format!("cannot write progress to stdout: {e}"))
}

/// Rounds metrics for display; six decimals is plenty to see a trend and
/// keeps lines short.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use serde_json::Value;

    fn config(epochs: u32, checkpoint: Option<&TempDir>) -> Config {
        Config {
            epochs,
            samples: 500,
            checkpoint: checkpoint.map(|d| d.path().join("nested").join("checkpoint.json")),
            ..Config::default()
        }
    }

    /// Runs the trainer and returns its outcome and parsed output lines.
    fn run_lines(config: &Config) -> (Outcome, Vec<Value>) {
        let mut out = Vec::new();
        let outcome = run(config, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (outcome, lines)
    }

    fn saved(config: &Config) -> Checkpoint {
        checkpoint::load(config.checkpoint.as_ref().unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn plain_run_prints_each_epoch_then_done() {
        let (outcome, lines) = run_lines(&config(3, None));
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(lines.len(), 4);
        for (i, line) in lines[..3].iter().enumerate() {
            assert_eq!(line["epoch"], i as u64 + 1);
            assert_eq!(line["epochs"], 3);
            assert!(line["loss"].is_f64() && line["accuracy"].is_f64() && line["elapsed_ms"].is_u64());
        }
        assert!(lines[2]["loss"].as_f64() < lines[0]["loss"].as_f64());
        assert_eq!(lines[3]["event"], "done");
        assert_eq!(lines[3]["epochs"], 3);
        assert_eq!(lines[3]["loss"], lines[2]["loss"]);
    }

    #[test]
    fn interrupted_run_resumes_at_next_epoch_and_matches_uninterrupted() {
        let (dir_a, dir_b) = (TempDir::new("resume-a"), TempDir::new("resume-b"));
        let interrupted = Config {
            fail_at_epoch: Some(2),
            ..config(4, Some(&dir_a))
        };
        let (outcome, lines) = run_lines(&interrupted);
        assert_eq!(outcome, Outcome::FailedAtEpoch(2));
        assert_eq!(lines.len(), 2);
        assert_eq!(saved(&interrupted).epochs_completed, 2);

        // Retrying the very same command passes the failure point.
        let (outcome, lines) = run_lines(&interrupted);
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(lines[0], serde_json::json!({"event": "resumed", "from_epoch": 3}));
        assert_eq!(lines[1]["epoch"], 3);
        assert_eq!(lines[2]["epoch"], 4);
        assert_eq!(lines[3]["event"], "done");
        assert_eq!(lines.len(), 4);

        let straight = config(4, Some(&dir_b));
        let (_, straight_lines) = run_lines(&straight);
        assert_eq!(saved(&interrupted), saved(&straight));
        assert_eq!(lines[3], straight_lines[4]);
    }

    #[test]
    fn finished_checkpoint_only_reports_done() {
        let dir = TempDir::new("finished");
        let cfg = config(2, Some(&dir));
        let (_, first) = run_lines(&cfg);
        let (outcome, lines) = run_lines(&cfg);
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(lines, vec![first[2].clone()]);
    }

    #[test]
    fn checkpoint_for_another_seed_is_ignored() {
        let dir = TempDir::new("other-seed");
        run_lines(&Config {
            seed: 1,
            ..config(2, Some(&dir))
        });
        let (_, lines) = run_lines(&config(2, Some(&dir)));
        assert_eq!(lines[0]["epoch"], 1);
        assert_eq!(saved(&config(2, Some(&dir))).seed, 42);
    }
}
