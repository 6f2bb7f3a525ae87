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
    /// The job store the binaries use (an SQLite file in `dir` unless a test says otherwise).
    pub(crate) database_url: String,
    /// Pricing file for the binaries (GPUQ_PRICING), when a test sets one.
    pub(crate) pricing: Option<PathBuf>,
}

impl TestEnv {
    pub(crate) async fn new() -> Self {
        let ns = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let queue = RedisQueue::connect(&redis_url(), &ns)
            .await
            .expect("Redis must be running for these tests");
        let dir = std::env::temp_dir().join(format!("gpuq-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let database_url = common::store::sqlite_url(&dir.join("jobs.db"));
        TestEnv {
            ns,
            queue,
            dir,
            database_url,
            pricing: None,
        }
    }

    /// The same, with the binaries pointed at `database_url`.
    pub(crate) async fn with_store(database_url: &str) -> Self {
        let mut env = TestEnv::new().await;
        env.database_url = database_url.to_string();
        env
    }

    /// Starts `scheduler serve` on this namespace and store.
    pub(crate) fn serve(&self) -> WorkerProcess {
        self.serve_with(&["--listen", &format!("127.0.0.1:{}", free_port())])
    }

    pub(crate) fn serve_with(&self, extra: &[&str]) -> WorkerProcess {
        self.serve_via(&redis_url(), extra)
    }

    /// Starts `scheduler serve` on this namespace and store, on the Redis at `url`.
    pub(crate) fn serve_via(&self, url: &str, extra: &[&str]) -> WorkerProcess {
        let log = self.path(&format!("serve-{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(bin("scheduler"))
            .args([
                "serve",
                "--reap-interval",
                "300ms",
                "--promote-interval",
                "100ms",
                "--drain-interval",
                "50ms",
            ])
            .args(extra)
            .env("REDIS_URL", url)
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("scheduler binary runs");
        WorkerProcess {
            child: Some(child),
            log,
        }
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
            .envs(self.pricing.iter().map(|p| ("GPUQ_PRICING", p.as_os_str())))
            .env("DATABASE_URL", &self.database_url)
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

    /// Runs `scheduler ARGS` against this namespace on the Redis at `url`, with more
    /// variables in its environment.
    pub(crate) fn scheduler_via(&self, url: &str, envs: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new(bin("scheduler"))
            .args(args)
            .env("REDIS_URL", url)
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("scheduler binary runs")
    }

    /// Starts a worker process on this namespace with fast heartbeats.
    pub(crate) fn worker(&self, extra: &[&str]) -> WorkerProcess {
        self.worker_via(&redis_url(), extra)
    }

    /// The same, reaching Redis at `url` (through a [`FaultyLink`], say).
    pub(crate) fn worker_via(&self, url: &str, extra: &[&str]) -> WorkerProcess {
        self.worker_with(url, extra, &[])
    }

    /// The same, with more variables in the worker's environment.
    pub(crate) fn worker_with(&self, url: &str, extra: &[&str], envs: &[(&str, &str)]) -> WorkerProcess {
        let log = self.path(&format!("worker-{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(bin("worker"))
            .args([
                "--heartbeat-interval",
                "300ms",
                // Fences at 2.2 s without a heartbeat (lease - 1.5 s to stop - one interval):
                // tests that load both cores with hundreds of processes starve heartbeats for
                // longer than a tighter lease allows, and the worker rightly stops its jobs.
                "--heartbeat-ttl",
                "4s",
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
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .args(extra)
            .env("REDIS_URL", url)
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("worker binary runs");
        WorkerProcess {
            child: Some(child),
            log,
        }
    }

    /// Enqueues a job whose first attempt marks itself and hangs (a second attempt finds
    /// the mark and succeeds), starts a worker, waits for that first attempt to run, and
    /// SIGKILLs the worker. Returns the job and the process id of a grandchild of the first
    /// attempt that started a session of its own, under a wrapper that does not `exec`
    /// (as `torchrun` or a shell script would): the one that must not outlive its worker.
    pub(crate) async fn kill_a_worker_mid_job(&self) -> (JobId, i32) {
        let marker = self.path("first-attempt");
        let pid_file = self.path("first-attempt-pid");
        let script = format!(
            "if [ -e {m} ]; then exit 0; fi; touch {m}; \
             setsid sh -c 'echo $$ > {p}; exec sleep 120' & sleep 120; echo never",
            m = marker.display(),
            p = pid_file.display()
        );
        let id = self
            .queue
            .enqueue_batch(vec![sh("victim", &script)])
            .await
            .unwrap()
            .ids
            .remove(0);
        let mut doomed = self.worker(&[]);
        self.wait_state(&id, JobState::Running, Duration::from_secs(60))
            .await;
        let pid = wait_for("the first attempt to start", Duration::from_secs(60), || {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse().ok());
            async move { pid }
        })
        .await;
        doomed.kill();
        (id, pid)
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

    /// A plain connection to the test Redis, for what the library does not expose.
    pub(crate) async fn raw_redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
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

    /// The exit code once the process has exited (`Some(None)` for a signal).
    pub(crate) fn try_wait(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().map(|s| s.code())
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

/// A PostgreSQL database of its own for one test, dropped afterwards.
/// The server comes from TEST_DATABASE_URL (default: the local `test` database).
pub(crate) struct TestDatabase {
    pub(crate) url: String,
    admin: String,
    name: String,
}

pub(crate) fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into())
}

impl TestDatabase {
    pub(crate) async fn postgres() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let name = format!("gpuq_t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must be running for these tests");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
        TestDatabase {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee; use a thread with its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            })
        })
        .join();
    }
}

/// A TCP forwarder to a real server that a test can cut and restore, to play a network
/// outage of that server without touching the server itself.
pub(crate) struct FaultyLink {
    pub(crate) port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While set, what the server sends is dropped: requests arrive, replies never do.
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyLink {
    pub(crate) async fn to(target: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mute = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let (up2, target) = (up.clone(), target.to_string());
        let mute2 = mute.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused in effect
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                let mute = mute2.clone();
                // Only cuts after this connection was accepted concern it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut from_server, mut to_server) = server.into_split();
                    let (mut from_client, mut to_client) = client.split();
                    let up = async {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from_server.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if mute.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to_client.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        FaultyLink {
            port,
            up,
            mute,
            cut,
            task,
        }
    }

    /// From now on, the server's replies are dropped (the requests still arrive): a lost
    /// reply, or a half-open connection as the client sees it.
    pub(crate) fn mute(&self) {
        self.mute.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Replies flow again.
    pub(crate) fn unmute(&self) {
        self.mute.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// A Redis URL through this link.
    pub(crate) fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts every open connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub(crate) fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free TCP port on 127.0.0.1 (for a server the test starts next).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed when the test ends, pass or fail.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over plain HTTP/1.1 (5 s at most); returns the status code and the body.
pub(crate) async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(5), http_get_inner(port, path))
        .await
        .ok()
        .flatten()
}

async fn http_get_inner(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Runs `loadtests replay --json` of `trace` under `quotas` at `speedup` (writing the
/// schedule to `schedule` when given), asserts it succeeded, and returns its rows.
pub(crate) fn replay_rows(
    trace: &Path,
    quotas: &Path,
    speedup: &str,
    schedule: Option<&Path>,
) -> serde_json::Value {
    let mut cmd = Command::new(bin("loadtests"));
    cmd.args(["replay", "--speedup", speedup, "--json"])
        .arg("--trace")
        .arg(trace)
        .arg("--quotas")
        .arg(quotas);
    if let Some(s) = schedule {
        cmd.arg("--schedule").arg(s);
    }
    let out = cmd.env("REDIS_URL", redis_url()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the bench row `case` among `rows` (a `--json` report).
pub(crate) fn row_value(rows: &serde_json::Value, case: &str) -> f64 {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["case"] == case)
        .unwrap_or_else(|| panic!("no row {case}: {rows}"))["value"]
        .as_f64()
        .unwrap()
}
