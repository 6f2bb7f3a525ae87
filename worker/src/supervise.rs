//! The supervisor each local attempt runs under: `worker __supervise GRACE_MS WORKER_PID --
//! PROGRAM ARGS...`, the worker's own binary in a second role.
//!
//! `PR_SET_PDEATHSIG` only reaches a process's direct child, and a process group misses a
//! grandchild that started a session of its own (`setsid`, a daemonizing tool, some
//! launchers). So the supervisor makes itself a child subreaper: every orphaned descendant
//! of the job becomes its child. It asks to get SIGTERM when the worker dies, and on
//! SIGTERM (from the worker's stop, or the worker's death) it sends SIGTERM to every
//! descendant, SIGKILLs what is left after the grace, and reaps them all. When the job's
//! program ends by itself, the supervisor does the same to whatever it left behind, then
//! ends the way the program did (its exit code, or its signal). Nothing of a job outlives
//! its attempt, even when the worker is SIGKILLed.
//!
//! SIGUSR1 (a preemption) sends SIGTERM to every descendant and nothing more: the job gets
//! the whole preemption grace to checkpoint and exit, and the worker follows with the
//! usual SIGTERM (then this grace) if it has not.

use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// The first argument that selects this role.
pub const ROLE: &str = "__supervise";

/// Runs the supervisor; never returns.
pub fn main(args: Vec<OsString>) -> ! {
    let [grace, worker, sep, program, rest @ ..] = &args[..] else {
        eprintln!("gpuq supervisor: usage: worker {ROLE} GRACE_MS WORKER_PID -- PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let grace = Duration::from_millis(grace.to_str().and_then(|g| g.parse().ok()).unwrap_or(5000));
    let worker: i32 = worker.to_str().and_then(|w| w.parse().ok()).unwrap_or(0);
    if sep != "--" {
        eprintln!("gpuq supervisor: expected -- before the program");
        std::process::exit(2);
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGALRM,
        Signal::SIGUSR1,
    ] {
        signals.add(s);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None);
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    // The job gets the default signal mask back.
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec only the async-signal-safe sigprocmask(2) is called.
    unsafe {
        cmd.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(std::io::Error::from)
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => Pid::from_raw(c.id() as i32),
        Err(e) => {
            eprintln!("gpuq supervisor: cannot start {program:?}: {e}");
            std::process::exit(127);
        }
    };
    let mut ended: Option<WaitStatus> = None;
    let mut stopping = false;
    // The worker may have died before the death signal was asked for.
    if worker != 0 && nix::unistd::getppid().as_raw() != worker {
        stopping = true;
        stop_all(Signal::SIGTERM, grace);
    }
    loop {
        // Reap every child that has ended (orphans become ours as subreaper); when none is
        // left, the attempt is over.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if status.pid() == Some(child) {
                        ended = Some(status);
                    }
                }
                Err(_) => finish(ended),
            }
        }
        if ended.is_some() && !stopping {
            // The program ended by itself: what it left behind goes too.
            stopping = true;
            stop_all(Signal::SIGTERM, grace);
        }
        match signals.wait() {
            Ok(Signal::SIGALRM) => signal_descendants(Signal::SIGKILL),
            Ok(Signal::SIGUSR1) if !stopping => signal_descendants(Signal::SIGTERM),
            Ok(Signal::SIGTERM | Signal::SIGINT) if !stopping => {
                stopping = true;
                stop_all(Signal::SIGTERM, grace);
            }
            _ => {}
        }
    }
}

/// Sends `signal` to every descendant now, and SIGKILL to those left after `grace`.
fn stop_all(signal: Signal, grace: Duration) {
    signal_descendants(signal);
    nix::unistd::alarm::set(grace.as_secs().max(1) as u32);
}

/// Ends the way the program did: its exit code, or its signal raised on ourselves.
fn finish(ended: Option<WaitStatus>) -> ! {
    match ended {
        Some(WaitStatus::Exited(_, code)) => std::process::exit(code),
        Some(WaitStatus::Signaled(_, sig, _)) => {
            let mut only = SigSet::empty();
            only.add(sig);
            #[allow(unsafe_code)]
            // SAFETY: restoring the default disposition of a signal we are about to raise.
            unsafe {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
            }
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
            let _ = kill(Pid::this(), sig);
            std::process::exit(128 + sig as i32)
        }
        _ => std::process::exit(1),
    }
}

/// Sends `signal` to every descendant of this process, found through /proc.
fn signal_descendants(signal: Signal) {
    for pid in descendants(std::process::id() as i32) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}
