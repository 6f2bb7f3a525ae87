//! Test helpers: an isolated namespace per test, the real binaries, deadline-based waits.

use common::queue::RedisQueue;
use common::{JobId, JobRecord, JobSpec, JobState};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace of its own for one test, and a scratch directory; both removed on drop.
pub(crate) struct TestEnv {
    pub(crate) ns: String,
    pub(crate) queue: RedisQueue,
    pub(crate) dir: PathBuf,
}

impl TestEnv {
    pub(crate) async fn new() -> Self {
        let ns = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let queue = RedisQueue::connect(&redis_url(), &ns)
            .await
            .expect("Redis must be running for these tests");
        let dir = std::env::temp_dir().join(format!("gpuq-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        TestEnv { ns, queue, dir }
    }

    /// A path inside the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `scheduler ARGS` against this namespace.
    pub(crate) fn scheduler(&self, args: &[&str]) -> Output {
        self.scheduler_with_stdin(args, None)
    }

    pub(crate) fn scheduler_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(bin("scheduler"))
            .args(args)
            .env("REDIS_URL", redis_url())
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scheduler binary runs");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    /// Starts a worker process on this namespace with fast heartbeats.
    pub(crate) fn worker(&self, extra: &[&str]) -> WorkerProcess {
        let log = self.path(&format!("worker-{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(bin("worker"))
            .args([
                "--heartbeat-interval",
                "300ms",
                "--heartbeat-ttl",
                "1500ms",
                "--retry-backoff",
                "50ms",
            ])
            .args([
                "--kill-grace",
                "1s",
                "--cancel-check-interval",
                "100ms",
                "--idle-timeout",
                "1s",
            ])
            .arg("--work-dir")
            .arg(self.path("work"))
            .args(extra)
            .env("REDIS_URL", redis_url())
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("worker binary runs");
        WorkerProcess {
            child: Some(child),
            log,
        }
    }

    pub(crate) async fn record(&self, id: &JobId) -> JobRecord {
        self.queue.get(id).await.unwrap().expect("job exists")
    }

    /// Waits until the job is in `state`, failing the test after `within`.
    pub(crate) async fn wait_state(&self, id: &JobId, state: JobState, within: Duration) -> JobRecord {
        let q = &self.queue;
        wait_for(&format!("job {id} to be {state}"), within, || async move {
            q.get(id).await.unwrap().filter(|r| r.state == state)
        })
        .await
    }

    /// All keys this test created.
    pub(crate) fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("KEYS")
            .arg(format!("*{}*", self.ns))
            .query(&mut con)
            .unwrap()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let keys = self.keys();
        if !keys.is_empty() {
            let client = redis::Client::open(redis_url()).unwrap();
            let mut con = client.get_connection().unwrap();
            let _: () = redis::cmd("DEL").arg(keys).query(&mut con).unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running worker process; killed on drop.
pub(crate) struct WorkerProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl WorkerProcess {
    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// SIGKILL, and reap the process.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself, failing after `within`.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_for("worker to exit", within, || {
            let s = child.try_wait().unwrap();
            async move { s }
        })
        .await;
        self.child = None;
        status
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 20 ms until it yields a value; panics after `within`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Path of a workspace binary, built by `cargo build --workspace --bins`.
pub(crate) fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A spec running `sh -c SCRIPT`; the script sees the job's env (GPUQ_JOB_ID, ...).
pub(crate) fn sh(name: &str, script: &str) -> JobSpec {
    JobSpec::new(name, "test", vec!["sh".into(), "-c".into(), script.into()])
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
