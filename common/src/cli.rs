//! Pieces both binaries share: Redis connection flags, logging setup, signal handling.
//! Behind the `cli` feature so library users do not pull in clap.

use crate::queue::RedisQueue;
use crate::{Backoff, Result};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How to reach the queue. Flattened into every binary's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis server URL.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    pub redis_url: String,
    /// Namespace of the queue; every key lives under the Redis Cluster hash tag `{NAMESPACE}`.
    #[arg(long, env = "GPUQ_NAMESPACE", default_value = "gpuq", global = true)]
    pub namespace: String,
    /// Most transitions the outbox may hold before enqueue is refused (the job store is
    /// not taking them: is `scheduler serve` running?). The outbox is never trimmed.
    #[arg(long, env = "GPUQ_OUTBOX_LIMIT", default_value_t = crate::queue::DEFAULT_OUTBOX_LIMIT, global = true)]
    pub outbox_limit: u64,
}

impl RedisArgs {
    /// Opens the queue and waits for Redis to answer, retrying with backoff up to `patience`.
    /// Bad arguments fail at once; an unreachable server fails once patience runs out.
    pub async fn connect(&self, patience: Duration) -> Result<RedisQueue> {
        let queue = RedisQueue::open(&self.redis_url, &self.namespace)?.with_outbox_limit(self.outbox_limit);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + patience;
        let mut n = 0;
        loop {
            match queue.ping().await {
                Ok(()) => return Ok(queue),
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    n += 1;
                    tracing::warn!(url = %queue.display_url(), error = %e, attempt = n, "Redis not reachable yet; retrying");
                    tokio::time::sleep(backoff.jittered(n)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Parses the command line; on a usage error prints one line (`error: ...`) and exits
/// with status 2. `--help` and `--version` print as usual.
pub fn parse_args<T: clap::Parser>() -> T {
    T::try_parse().unwrap_or_else(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) || !e.use_stderr() {
            e.exit();
        }
        eprintln!("{}", one_line(&e.to_string()));
        std::process::exit(2);
    })
}

/// A clap error on one line: its message with what follows it (the missing arguments, a
/// tip), without the usage. clap puts the names of missing arguments on lines of their
/// own, so the first line alone would not say what is missing.
fn one_line(rendered: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.to_string());
        }
    }
    let Some((first, rest)) = parts.split_first() else {
        return "error: invalid arguments".into();
    };
    if rest.is_empty() {
        return first.clone();
    }
    let (tips, names): (Vec<&String>, Vec<&String>) = rest.iter().partition(|l| l.starts_with("tip:"));
    let mut out = first.trim_end_matches(':').to_string();
    if !names.is_empty() {
        out.push_str(": ");
        out.push_str(&names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
    }
    for tip in tips {
        out.push_str(" (");
        out.push_str(tip);
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_errors_fit_one_line_and_keep_what_is_missing() {
        let missing = "error: the following required arguments were not provided:\n  --name <NAME>\n  --team <TEAM>\n\nUsage: scheduler enqueue --name <NAME>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line(missing),
            "error: the following required arguments were not provided: --name <NAME>, --team <TEAM>"
        );
        let unknown = "error: unexpected argument '--fo' found\n\n  tip: a similar argument exists: '--foo'\n\nUsage: x\n";
        assert_eq!(
            super::one_line(unknown),
            "error: unexpected argument '--fo' found (tip: a similar argument exists: '--foo')"
        );
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal and the process runs in a container
    /// (Kubernetes sets KUBERNETES_SERVICE_HOST; Docker leaves /.dockerenv), else text.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG`-style filter (else `default_level`),
/// written to stderr so stdout stays free for command output.
pub fn init_telemetry(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        LogFormat::Auto => {
            use std::io::IsTerminal;
            let in_container = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                || std::path::Path::new("/.dockerenv").exists();
            !std::io::stderr().is_terminal() && in_container
        }
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let _ = match json {
        false => builder.try_init(),
        true => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; a second one exits at once with
/// status 130 (whatever was in flight is recovered by the reaper).
pub fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown requested; a second signal exits immediately");
        shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}
