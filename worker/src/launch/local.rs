//! Runs a job's argv as a local child process, without a shell.
//!
//! The child gets its own process group, so stopping it (SIGTERM, then SIGKILL after a
//! grace period) reaches everything it started. It is also asked to die with the worker
//! (`PR_SET_PDEATHSIG`): if the worker is SIGKILLed, the reaper hands the job to another
//! worker, and a leftover copy would only compete with the retry.

use super::{job_environment, AttemptContext, BoxFuture, LaunchResult, Launcher};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Runs jobs as local processes.
#[derive(Debug, Clone)]
pub struct LocalLauncher {
    /// Time between SIGTERM and SIGKILL when an attempt is stopped.
    pub kill_grace: Duration,
}

impl Launcher for LocalLauncher {
    fn name(&self) -> &'static str {
        "local"
    }

    fn run<'a>(&'a self, ctx: AttemptContext<'a>) -> BoxFuture<'a, LaunchResult> {
        Box::pin(self.run_process(ctx))
    }
}

impl LocalLauncher {
    async fn run_process(&self, ctx: AttemptContext<'_>) -> LaunchResult {
        let spec = &ctx.job.spec;
        let Some((program, args)) = spec.command.split_first() else {
            return LaunchResult::Invalid("the local launcher needs a command".into());
        };
        if let Err(e) = std::fs::create_dir_all(&ctx.checkpoint_dir) {
            return LaunchResult::Error(format!("cannot create {}: {e}", ctx.checkpoint_dir.display()));
        }
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(&spec.env)
            .envs(job_environment(&ctx))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return LaunchResult::Invalid(format!("cannot start {program:?}: program not found"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return LaunchResult::Invalid(format!("cannot start {program:?}: permission denied"));
            }
            Err(e) => return LaunchResult::Error(format!("cannot start {program:?}: {e}")),
        };
        let readers = [
            child
                .stdout
                .take()
                .map(|o| tokio::spawn(forward_lines(o, ctx.output.clone()))),
            child
                .stderr
                .take()
                .map(|e| tokio::spawn(forward_lines(e, ctx.output.clone()))),
        ];
        let status = tokio::select! {
            status = child.wait() => status,
            _ = ctx.stop.cancelled() => self.stop(&mut child).await,
        };
        for r in readers.into_iter().flatten() {
            let _ = r.await;
        }
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => LaunchResult::Exited(code),
                (None, Some(sig)) => LaunchResult::Killed(
                    Signal::try_from(sig)
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|_| format!("signal {sig}")),
                ),
                (None, None) => LaunchResult::Error("process ended without status".into()),
            },
            Err(e) => LaunchResult::Error(format!("waiting for the process: {e}")),
        }
    }

    /// SIGTERM to the whole process group, SIGKILL if it has not exited after the grace.
    async fn stop(&self, child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
        if let Some(pid) = child.id() {
            let group = Pid::from_raw(pid as i32);
            let _ = killpg(group, Signal::SIGTERM);
            if let Ok(status) = tokio::time::timeout(self.kill_grace, child.wait()).await {
                let _ = killpg(group, Signal::SIGKILL);
                return status;
            }
            let _ = killpg(group, Signal::SIGKILL);
        }
        child.wait().await
    }
}

async fn forward_lines(stream: impl AsyncRead + Unpin, out: mpsc::Sender<String>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if out.send(line).await.is_err() {
            break;
        }
    }
}

/// Asks the kernel to SIGKILL the child when the worker thread that spawned it dies.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe
    // prctl(2) system call.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
}
