//! Command-line parsing, by hand.
//!
//! The trainer depends only on serde, so flags are parsed here rather than
//! with clap. The worker passes `GPUQ_EPOCHS`, `GPUQ_BATCH_SIZE` and
//! `GPUQ_CHECKPOINT_DIR` to every job, so those settings fall back to the
//! environment: a job's command can be just `trainer`. Precedence is flag,
//! then environment variable, then default; an empty variable counts as
//! unset. Every error names the flag or variable at fault.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// File name used inside the directory given by `GPUQ_CHECKPOINT_DIR`.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Upper bound on `--samples`, so a typo cannot make the trainer allocate
/// gigabytes (each sample costs about 100 bytes).
pub(crate) const MAX_SAMPLES: usize = 2_000_000;

/// Printed for `--help`.
pub(crate) const USAGE: &str = "\
trainer: train logistic regression on deterministic synthetic data

Prints one JSON line per epoch to stdout, then a final {\"event\":\"done\",...} line.

USAGE: trainer [OPTIONS]

OPTIONS:
  --epochs N            epochs to train, >= 1 [env GPUQ_EPOCHS, default 5]
  --batch-size N        mini-batch size, >= 1 [env GPUQ_BATCH_SIZE, default 32]
  --samples N           synthetic dataset size, 1..=2000000 [default 4000]
  --seed N              seed for data and shuffles [default 42]
  --lr F                learning rate, > 0 [default 0.1]
  --checkpoint PATH     checkpoint file, written atomically after every epoch
                        and resumed from on start [env GPUQ_CHECKPOINT_DIR
                        (uses DIR/checkpoint.json); default: no checkpoint]
  --epoch-delay-ms N    extra pause after each epoch, for demos [default 0]
  --fail-at-epoch N     exit with code 3 right after epoch N is printed and
                        checkpointed (a resumed run has passed it, so succeeds)
  -h, --help            print this help

Values may also be given as --flag=value.
EXIT CODES: 0 done, 1 runtime error, 2 bad arguments, 3 --fail-at-epoch hit
";

/// A fully resolved training configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// Total epochs the run should reach (including ones already done).
    pub(crate) epochs: u32,
    /// Samples per SGD step.
    pub(crate) batch_size: usize,
    /// Dataset size.
    pub(crate) samples: usize,
    /// Seed for the dataset and the per-epoch shuffles.
    pub(crate) seed: u64,
    /// SGD learning rate.
    pub(crate) lr: f64,
    /// Where to checkpoint, if anywhere.
    pub(crate) checkpoint: Option<PathBuf>,
    /// Artificial pause after each epoch so demos show progress.
    pub(crate) epoch_delay_ms: u64,
    /// Epoch after which to exit with code 3, to exercise failure handling.
    pub(crate) fail_at_epoch: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 32,
            samples: 4000,
            seed: 42,
            lr: 0.1,
            checkpoint: None,
            epoch_delay_ms: 0,
            fail_at_epoch: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Train with this configuration.
    Run(Config),
    /// Print [`USAGE`] and exit successfully.
    Help,
}

/// A one-line, user-facing description of a bad argument.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArgError(String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `args` (without the program name), consulting `env` for the
/// variables the worker sets. `env` is injected so tests need not mutate
/// the real process environment.
pub(crate) fn parse<I, E>(args: I, env: E) -> Result<Command, ArgError>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
{
    let mut config = Config::default();
    let (mut epochs, mut batch_size, mut checkpoint) = (None, None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        if !flag.starts_with("--") {
            return Err(ArgError(format!("unexpected argument '{arg}' (see --help)")));
        }
        const FLAGS: [&str; 8] = [
            "--epochs",
            "--batch-size",
            "--samples",
            "--seed",
            "--lr",
            "--checkpoint",
            "--epoch-delay-ms",
            "--fail-at-epoch",
        ];
        if !FLAGS.contains(&flag) {
            return Err(ArgError(format!("unknown argument '{flag}' (see --help)")));
        }
        // A following flag is never taken as a value, so `--epochs --seed 1`
        // reports the missing value instead of a confusing parse error.
        let value = match inline.or_else(|| args.next()) {
            Some(value) if !value.starts_with("--") => value,
            _ => return Err(ArgError(format!("missing value for {flag}"))),
        };
        match flag {
            "--epochs" => epochs = Some(parse_int(flag, &value, 1, None)?),
            "--batch-size" => batch_size = Some(parse_int(flag, &value, 1, None)?),
            "--samples" => config.samples = parse_int(flag, &value, 1, Some(MAX_SAMPLES))?,
            "--seed" => config.seed = parse_int(flag, &value, 0, None)?,
            "--lr" => config.lr = parse_lr(flag, &value)?,
            "--checkpoint" if value.is_empty() => {
                return Err(ArgError(
                    "invalid value '' for --checkpoint: expected a file path".to_owned(),
                ))
            }
            "--checkpoint" => checkpoint = Some(PathBuf::from(value)),
            "--epoch-delay-ms" => config.epoch_delay_ms = parse_int(flag, &value, 0, None)?,
            _ => config.fail_at_epoch = Some(parse_int(flag, &value, 1, None)?),
        }
    }

    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    config.epochs = match (epochs, env("GPUQ_EPOCHS")) {
        (Some(v), _) => v,
        (None, Some(raw)) => parse_int("GPUQ_EPOCHS", &raw, 1, None)?,
        (None, None) => config.epochs,
    };
    config.batch_size = match (batch_size, env("GPUQ_BATCH_SIZE")) {
        (Some(v), _) => v,
        (None, Some(raw)) => parse_int("GPUQ_BATCH_SIZE", &raw, 1, None)?,
        (None, None) => config.batch_size,
    };
    config.checkpoint =
        checkpoint.or_else(|| env("GPUQ_CHECKPOINT_DIR").map(|dir| PathBuf::from(dir).join(CHECKPOINT_FILE)));
    Ok(Command::Run(config))
}

/// Parses a whole number in `min..=max` (no upper bound when `max` is None).
fn parse_int<T>(name: &str, raw: &str, min: T, max: Option<T>) -> Result<T, ArgError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    match raw.trim().parse::<T>() {
        Ok(v) if v >= min && max.is_none_or(|max| v <= max) => Ok(v),
        _ => Err(ArgError(match max {
            Some(max) => {
                format!("invalid value '{raw}' for {name}: expected a whole number from {min} to {max}")
            }
            None => format!("invalid value '{raw}' for {name}: expected a whole number >= {min}"),
        })),
    }
}

/// Parses a learning rate: finite and strictly positive, since zero would
/// train nothing and a negative rate would climb the loss.
fn parse_lr(name: &str, raw: &str) -> Result<f64, ArgError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(ArgError(format!(
            "invalid value '{raw}' for {name}: expected a finite number > 0"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, ArgError> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(args.iter().map(|s| s.to_string()), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse_with(args, env) {
            Ok(Command::Run(config)) => config,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn error(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse_with(args, env) {
            Err(e) => e.to_string(),
            other => panic!("expected an error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_without_args_or_env() {
        assert_eq!(config(&[], &[]), Config::default());
    }

    #[test]
    fn all_flags_parse_in_both_forms() {
        let c = config(
            &[
                "--epochs",
                "7",
                "--batch-size=16",
                "--samples",
                "100",
                "--seed",
                "0",
                "--lr",
                "0.5",
                "--checkpoint",
                "/tmp/x.json",
                "--epoch-delay-ms",
                "20",
                "--fail-at-epoch=3",
            ],
            &[],
        );
        assert_eq!(
            c,
            Config {
                epochs: 7,
                batch_size: 16,
                samples: 100,
                seed: 0,
                lr: 0.5,
                checkpoint: Some(PathBuf::from("/tmp/x.json")),
                epoch_delay_ms: 20,
                fail_at_epoch: Some(3),
            }
        );
    }

    #[test]
    fn env_vars_are_fallbacks_and_flags_win() {
        let env = [
            ("GPUQ_EPOCHS", "9"),
            ("GPUQ_BATCH_SIZE", "64"),
            ("GPUQ_CHECKPOINT_DIR", "/ckpt"),
        ];
        let c = config(&[], &env);
        assert_eq!((c.epochs, c.batch_size), (9, 64));
        assert_eq!(c.checkpoint, Some(PathBuf::from("/ckpt/checkpoint.json")));
        let c = config(
            &["--epochs", "2", "--batch-size", "8", "--checkpoint", "a.json"],
            &env,
        );
        assert_eq!((c.epochs, c.batch_size), (2, 8));
        assert_eq!(c.checkpoint, Some(PathBuf::from("a.json")));
        let c = config(&[], &[("GPUQ_EPOCHS", ""), ("GPUQ_CHECKPOINT_DIR", "")]);
        assert_eq!((c.epochs, c.checkpoint), (5, None));
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse_with(&["--epochs", "3", "--help"], &[]), Ok(Command::Help));
        assert_eq!(parse_with(&["-h"], &[]), Ok(Command::Help));
    }

    #[test]
    fn bad_values_are_rejected_naming_the_argument() {
        let cases: &[(&[&str], &str)] = &[
            (&["--epochs", "0"], "--epochs"),
            (&["--epochs", "abc"], "--epochs"),
            (&["--epochs", "-1"], "--epochs"),
            (&["--batch-size", "0"], "--batch-size"),
            (&["--samples", "0"], "--samples"),
            (&["--samples", "2000001"], "--samples"),
            (&["--seed", "1.5"], "--seed"),
            (&["--lr", "0"], "--lr"),
            (&["--lr", "-0.1"], "--lr"),
            (&["--lr", "NaN"], "--lr"),
            (&["--lr", "inf"], "--lr"),
            (&["--checkpoint="], "--checkpoint"),
            (&["--epoch-delay-ms", "soon"], "--epoch-delay-ms"),
            (&["--fail-at-epoch", "0"], "--fail-at-epoch"),
            (&["--epochs"], "missing value for --epochs"),
            (&["--epochs", "--seed", "1"], "missing value for --epochs"),
            (&["--frobnicate", "1"], "unknown argument '--frobnicate'"),
            (&["extra"], "unexpected argument 'extra'"),
        ];
        for (args, expected) in cases {
            let message = error(args, &[]);
            assert!(message.contains(expected), "{args:?} gave {message:?}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        assert!(error(&[], &[("GPUQ_EPOCHS", "many")]).contains("GPUQ_EPOCHS"));
        assert!(error(&[], &[("GPUQ_BATCH_SIZE", "0")]).contains("GPUQ_BATCH_SIZE"));
        // A valid flag means the bad variable is never consulted.
        assert_eq!(config(&["--epochs", "1"], &[("GPUQ_EPOCHS", "many")]).epochs, 1);
    }
}
