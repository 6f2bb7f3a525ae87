//! Runs a job's argv as a local child process, without a shell.
//!
//! The child starts from a cleared environment: it gets only an allow-list of the worker's
//! variables ([`INHERITED`], and `--pass-env` names), then the job's own env and the `GPUQ_*`
//! variables. So a job never sees the worker's `REDIS_URL` or `DATABASE_URL` (with their
//! passwords), with which it could rewrite any other job's state. Its work directory is
//! mode 0700.
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
use tokio::io::{AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Variables a job inherits from its worker: what programs need to run, find their
/// libraries and GPUs, and speak the right language. Everything else must be named with
/// `--pass-env`.
pub(crate) const INHERITED: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "LD_LIBRARY_PATH"];
/// Prefixes of inherited variables (locale, CUDA and NVIDIA runtime settings).
pub(crate) const INHERITED_PREFIXES: [&str; 3] = ["LC_", "CUDA_", "NVIDIA_"];

/// Runs jobs as local processes.
#[derive(Debug, Clone)]
pub struct LocalLauncher {
    /// Time between SIGTERM and SIGKILL when an attempt is stopped.
    pub kill_grace: Duration,
    /// More of the worker's variables that jobs inherit (`--pass-env`).
    pub pass_env: Vec<String>,
    /// The binary each attempt runs under as its supervisor (this worker's own), which
    /// kills the attempt's whole process tree when it is stopped or the worker dies; `None`
    /// runs the program directly (only its process group is reached then).
    pub supervisor: Option<std::path::PathBuf>,
    /// Where the teams' secrets are (`--secrets-dir`): a job's `SECRET/KEY` is the file
    /// `DIR/TEAM/SECRET/KEY`, the layout of a Kubernetes Secret mounted per team.
    pub secrets_dir: Option<std::path::PathBuf>,
}

impl LocalLauncher {
    /// The job's secret variables, read from its own team's directory only.
    fn secrets(&self, spec: &common::JobSpec) -> Result<Vec<(String, String)>, String> {
        if spec.secret_env.is_empty() {
            return Ok(Vec::new());
        }
        let Some(dir) = &self.secrets_dir else {
            return Err("the job names secrets, and this worker has no --secrets-dir".into());
        };
        if spec.team.chars().all(|c| c == '.') {
            return Err(format!("team {:?} cannot hold secrets", spec.team));
        }
        spec.secret_env
            .iter()
            .map(|(var, r)| {
                let path = dir.join(&spec.team).join(&r.secret).join(&r.key);
                std::fs::read_to_string(&path)
                    .map(|v| (var.clone(), v))
                    .map_err(|e| format!("secret {r} of team {} (for {var}): {e}", spec.team))
            })
            .collect()
    }
}

impl LocalLauncher {
    /// The worker's variables a job inherits.
    fn inherited(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        std::env::vars_os()
            .filter(|(k, _)| {
                let Some(k) = k.to_str() else { return false };
                INHERITED.contains(&k)
                    || INHERITED_PREFIXES.iter().any(|p| k.starts_with(p))
                    || self.pass_env.iter().any(|p| p == k)
            })
            .collect()
    }
}

impl Launcher for LocalLauncher {
    fn name(&self) -> &'static str {
        "local"
    }

    fn run<'a>(&'a self, ctx: AttemptContext<'a>) -> BoxFuture<'a, LaunchResult> {
        Box::pin(self.run_process(ctx))
    }

    fn secret_values(&self, job: &common::queue::ClaimedJob) -> Vec<String> {
        self.secrets(&job.spec)
            .map(|s| {
                s.into_iter()
                    .map(|(_, v)| v)
                    .filter(|v| !v.trim().is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl LocalLauncher {
    async fn run_process(&self, ctx: AttemptContext<'_>) -> LaunchResult {
        let spec = &ctx.job.spec;
        let Some((program, args)) = spec.command.split_first() else {
            return LaunchResult::Invalid("the local launcher needs a command".into());
        };
        if let Err(e) = private_dirs(&ctx.checkpoint_dir) {
            return LaunchResult::Error(format!("cannot create {}: {e}", ctx.checkpoint_dir.display()));
        }
        let secrets = match self.secrets(spec) {
            Ok(s) => s,
            Err(why) => return LaunchResult::Invalid(why),
        };
        let inherited = self.inherited();
        let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = inherited
            .into_iter()
            .chain(spec.env.iter().map(|(k, v)| (k.into(), v.into())))
            .chain(secrets.into_iter().map(|(k, v)| (k.into(), v.into())))
            .chain(
                job_environment(&ctx)
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into())),
            )
            .collect();
        // Resolved here, as exec would, so a missing program is told from a failing one.
        let resolved = match resolve(program, &env) {
            Ok(path) => path,
            Err(why) => return LaunchResult::Invalid(format!("cannot start {program:?}: {why}")),
        };
        let mut cmd = match &self.supervisor {
            Some(supervisor) => {
                let mut c = Command::new(supervisor);
                c.arg(crate::supervise::ROLE)
                    .arg(self.kill_grace.as_millis().to_string())
                    .arg(std::process::id().to_string())
                    .arg("--")
                    .arg(&resolved);
                c
            }
            None => Command::new(&resolved),
        };
        cmd.args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd, self.supervisor.is_some());
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
            _ = ctx.stop.cancelled() => self.stop(&mut child, ctx.preempt_grace(), &ctx.hurry).await,
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
    /// A preemption victim first gets `preempt_grace` after a SIGTERM to the job alone
    /// (through the supervisor's SIGUSR1, so the supervisor itself does not start its own
    /// short kill grace), then the usual stop.
    async fn stop(
        &self,
        child: &mut Child,
        preempt_grace: Option<Duration>,
        hurry: &tokio_util::sync::CancellationToken,
    ) -> std::io::Result<std::process::ExitStatus> {
        if let (Some(pid), Some(grace)) = (child.id(), preempt_grace) {
            let pid = Pid::from_raw(pid as i32);
            if self.supervisor.is_some() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGUSR1);
            } else {
                let _ = killpg(pid, Signal::SIGTERM);
            }
            tokio::select! {
                ended = tokio::time::timeout(grace, child.wait()) => {
                    if let Ok(status) = ended {
                        let _ = killpg(pid, Signal::SIGKILL);
                        return status;
                    }
                }
                _ = hurry.cancelled() => {}
            }
        }
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

/// Finds `program` as execvp would: a path when it holds a `/`, else the first executable
/// file of that name on the job's PATH.
fn resolve(
    program: &str,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return match std::fs::metadata(&p) {
            Err(_) => Err("program not found".into()),
            Ok(_) if !executable(&p) => Err("permission denied".into()),
            Ok(_) => Ok(p),
        };
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut seen_denied = false;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if executable(&candidate) {
            return Ok(candidate);
        }
        seen_denied |= candidate.is_file();
    }
    Err(if seen_denied {
        "permission denied"
    } else {
        "program not found"
    }
    .into())
}

/// Creates the checkpoint directory and its parents that are missing with mode 0700, and
/// makes the job's directory (its parent) 0700 whatever it was: other users of the machine
/// may not read or replace a job's checkpoints.
fn private_dirs(checkpoint: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(checkpoint)?;
    for dir in [Some(checkpoint), checkpoint.parent()].into_iter().flatten() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Longest output line kept, in bytes; the rest of a longer line is dropped.
const MAX_LINE: usize = 16 * 1024;

/// Forwards the job's output line by line. It reads to the end whatever the job writes,
/// so the job never gets SIGPIPE: bytes that are not UTF-8 are replaced, a line longer
/// than [`MAX_LINE`] is cut, and a carriage return that redraws a line (a progress bar)
/// keeps only the last drawing (`\r\n` still ends a line).
async fn forward_lines(stream: impl AsyncRead + Unpin, out: mpsc::Sender<String>) {
    use tokio::io::AsyncReadExt;
    let mut reader = BufReader::new(stream);
    let mut chunk = vec![0u8; 8192];
    let mut lines = Lines::default();
    let mut open = true;
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in lines.push(&chunk[..n]) {
            if open && out.send(line).await.is_err() {
                open = false;
            }
        }
    }
    if let Some(last) = lines.finish() {
        let _ = out.send(last).await;
    }
}

/// Splits raw output into lines (see [`forward_lines`]).
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    truncated: bool,
    after_cr: bool,
}

impl Lines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b != b'\n' {
                    // A redraw: what follows replaces the line.
                    self.line.clear();
                    self.truncated = false;
                }
            }
            match b {
                b'\n' => done.push(self.take()),
                b'\r' => self.after_cr = true,
                _ if self.line.len() < MAX_LINE => self.line.push(b),
                _ => self.truncated = true,
            }
        }
        done
    }

    fn take(&mut self) -> String {
        let mut s = String::from_utf8_lossy(&self.line).into_owned();
        if self.truncated {
            s.push_str(" [line cut at 16 KiB]");
        }
        self.line.clear();
        self.truncated = false;
        s
    }

    fn finish(&mut self) -> Option<String> {
        (!self.line.is_empty()).then(|| self.take())
    }
}

/// Asks the kernel to signal the child when the worker thread that spawned it dies: the
/// supervisor gets SIGTERM (it then stops the whole tree), a bare program SIGKILL.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command, supervised: bool) {
    let signal = if supervised {
        Signal::SIGTERM
    } else {
        Signal::SIGKILL
    };
    // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe
    // prctl(2) system call.
    unsafe {
        cmd.pre_exec(move || nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from));
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn output_is_split_lossily_with_redraws_and_long_lines_handled() {
        let mut l = Lines::default();
        let mut got = l.push(b"a\xffb\nprog 10%\rprog 5");
        got.extend(l.push(b"0%\rprog 100%\r\nwin\r\n"));
        got.extend(l.push(&vec![b'x'; 20_000]));
        got.extend(l.push(b"\ntail"));
        got.extend(l.finish());
        assert_eq!(got[0], "a\u{fffd}b");
        assert_eq!(got[1], "prog 100%");
        assert_eq!(got[2], "win");
        assert!(got[3].len() < 16 * 1024 + 40 && got[3].ends_with("[line cut at 16 KiB]"));
        assert_eq!(got[4], "tail");
        assert_eq!(got.len(), 5);
    }
}
