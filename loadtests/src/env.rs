//! The bench's surroundings: a private namespace, the real binaries, Redis introspection.

use anyhow::{bail, Context, Result};
use common::queue::RedisQueue;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A namespace of its own on the Redis at `url`; its keys are removed on `cleanup`.
pub(crate) struct Bench {
    pub(crate) url: String,
    pub(crate) ns: String,
    pub(crate) queue: RedisQueue,
    pub(crate) dir: PathBuf,
    children: Vec<Child>,
    /// Set once `cleanup` has removed the namespace; a bench dropped before that (it
    /// failed part-way) removes it in `drop`, so no failed run leaves a million keys
    /// behind to slow the next.
    cleaned: bool,
}

impl Bench {
    pub(crate) async fn new(url: &str, label: &str) -> Result<Self> {
        let ns = format!(
            "bench-{label}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let queue = RedisQueue::open(url, &ns)?;
        queue.ping().await.with_context(|| format!("Redis at {url}"))?;
        let dir = std::env::temp_dir().join(format!("gpuq-{ns}"));
        std::fs::create_dir_all(&dir)?;
        Ok(Bench {
            url: url.to_string(),
            ns,
            queue,
            dir,
            children: Vec::new(),
            cleaned: false,
        })
    }

    /// Starts a worker process; returns its index in `children`.
    pub(crate) fn worker(&mut self, launcher: &str, concurrency: u32, extra: &[&str]) -> Result<usize> {
        let log = std::fs::File::create(self.dir.join(format!("worker-{}.log", self.children.len())))?;
        let child = Command::new(bin("worker")?)
            .args(["--launcher", launcher, "--concurrency", &concurrency.to_string()])
            .args(["--metrics-addr", "127.0.0.1:0", "--retry-backoff", "100ms"])
            .arg("--work-dir")
            .arg(self.dir.join("work"))
            .args(extra)
            .env("REDIS_URL", &self.url)
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// Starts `scheduler serve` with the given job store.
    pub(crate) fn serve(&mut self, database_url: &str) -> Result<usize> {
        self.serve_with(database_url, &[])
    }

    /// The same, with more variables in its environment.
    pub(crate) fn serve_with(&mut self, database_url: &str, envs: &[(&str, &str)]) -> Result<usize> {
        self.serve_args(database_url, envs, &["--listen", "127.0.0.1:0"])
    }

    /// `scheduler serve` with more arguments.
    pub(crate) fn serve_args(
        &mut self,
        database_url: &str,
        envs: &[(&str, &str)],
        args: &[&str],
    ) -> Result<usize> {
        let log = std::fs::File::create(self.dir.join("serve.log"))?;
        let child = Command::new(bin("scheduler")?)
            .args(["serve", "--drain-interval", "20ms"])
            .args(args)
            .env("REDIS_URL", &self.url)
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// Creates an API token in this namespace with `scheduler token create ARGS`, on the
    /// store at `database_url`; returns its secret.
    pub(crate) fn token(&self, database_url: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(bin("scheduler")?)
            .args(["token", "create"])
            .args(args)
            .env("REDIS_URL", &self.url)
            .env("GPUQ_NAMESPACE", &self.ns)
            .env("DATABASE_URL", database_url)
            .output()?;
        if !out.status.success() {
            bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// `scheduler serve --api` on a free loopback port, once `probe` (a path) answers;
    /// returns its base URL and its index in `children`.
    pub(crate) async fn serve_api(&mut self, database_url: &str, probe: &str) -> Result<(String, usize)> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let i = self.serve_args(database_url, &[], &["--api", "--listen", &listen])?;
        let base = format!("http://{listen}");
        let probe = format!("{base}{probe}");
        wait_until("serve --api to answer", Duration::from_secs(30), || {
            let probe = probe.clone();
            async move { Ok(tokio::task::spawn_blocking(move || ureq::get(&probe).call().is_ok()).await?) }
        })
        .await?;
        Ok((base, i))
    }

    pub(crate) fn pid(&self, i: usize) -> u32 {
        self.children[i].id()
    }

    /// SIGKILLs child `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// Waits until `n` workers have a live heartbeat.
    pub(crate) async fn wait_workers(&self, n: usize) -> Result<()> {
        let q = &self.queue;
        wait_until("workers to register", Duration::from_secs(30), || async move {
            Ok(q.workers().await?.len() >= n)
        })
        .await
    }

    /// Stops every child and removes the namespace's keys and files.
    pub(crate) async fn cleanup(mut self) -> Result<()> {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.queue.purge().await?;
        self.cleaned = true;
        let _ = std::fs::remove_dir_all(&self.dir);
        // UNLINK frees in Redis's background thread; the next case must not share the
        // two cores with it, or it measures the previous case's cleanup.
        let client = redis::Client::open(self.url.as_str())?;
        let con = client.get_multiplexed_async_connection().await?;
        wait_until("Redis to free the bench's keys", Duration::from_secs(120), || {
            let mut con = con.clone();
            async move {
                let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await?;
                Ok(info
                    .lines()
                    .find_map(|l| l.strip_prefix("lazyfree_pending_objects:"))
                    .is_none_or(|n| n.trim() == "0"))
            }
        })
        .await
    }
}

/// A bench that fails part-way still stops the processes it started, and removes its
/// namespace (a blocking connection: there may be no runtime left to drive an async one).
impl Drop for Bench {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.cleaned {
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = purge_blocking(&self.url, &self.ns);
        }
    }
}

/// Removes every key of namespace `ns` with a synchronous connection.
fn purge_blocking(url: &str, ns: &str) -> redis::RedisResult<usize> {
    let mut con = redis::Client::open(url)?.get_connection()?;
    let pattern = format!("\\{{{ns}\\}}:*");
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query(&mut con)?;
        if !keys.is_empty() {
            removed += keys.len();
            let _: () = redis::cmd("UNLINK").arg(&keys).query(&mut con)?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Polls `check` every 20 ms until it is true; fails after `within`.
pub(crate) async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + within;
    while !check().await? {
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A workspace binary next to this one (build with `cargo build --release --workspace --bins`).
pub(crate) fn bin(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.parent().context("exe dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: cargo build --release --workspace --bins",
            path.display()
        );
    }
    Ok(path)
}

/// `INFO <section>` as key/value pairs.
pub(crate) async fn info(url: &str, section: &str) -> Result<HashMap<String, String>> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let text: String = redis::cmd("INFO").arg(section).query_async(&mut con).await?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Total calls per command from `INFO commandstats`.
pub(crate) async fn command_calls(url: &str) -> Result<HashMap<String, u64>> {
    Ok(info(url, "commandstats")
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            let cmd = k.strip_prefix("cmdstat_")?.to_string();
            let calls = v
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((cmd, calls))
        })
        .collect())
}

/// CPU seconds the Redis server has used (user and system), from `INFO cpu`.
pub(crate) async fn redis_cpu_secs(url: &str) -> Result<f64> {
    let cpu = info(url, "cpu").await?;
    let secs = |k: &str| cpu.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(secs("used_cpu_user") + secs("used_cpu_sys"))
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident memory of a process in bytes, from /proc.
/// Resident memory once it has settled after start-up: two reads 500 ms apart within 2%.
pub(crate) async fn settled_rss(pid: u32) -> Result<u64> {
    let mut last = 0u64;
    wait_until("resident memory to settle", Duration::from_secs(20), || {
        let prev = last;
        let now = rss_bytes(pid).unwrap_or(0);
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(prev > 0 && (now as f64 - prev as f64).abs() / (prev as f64) < 0.02)
        }
    })
    .await?;
    Ok(last)
}

pub(crate) fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// A private redis-server (optionally with AOF) on a free port, for benches that restart it.
pub(crate) struct PrivateRedis {
    pub(crate) url: String,
    port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) async fn start(aof: bool) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("gpuq-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let mut r = PrivateRedis {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            dir,
            aof,
            child: None,
        };
        r.launch().await?;
        Ok(r)
    }

    async fn launch(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                if self.aof { "yes" } else { "no" },
                "--appendfsync",
                "everysec",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server on PATH")?;
        self.child = Some(child);
        let url = self.url.clone();
        wait_until("redis-server to start", Duration::from_secs(20), || {
            let url = url.clone();
            async move { Ok(RedisQueue::connect(&url, "probe").await.is_ok()) }
        })
        .await
    }

    /// SIGKILLs Redis, as a crash would (no shutdown: with `appendfsync everysec` the
    /// last second of writes may be gone), and starts it again on the same port.
    pub(crate) async fn crash_and_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        self.launch().await
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
