//! Servers of its own that a test starts, stops and crashes: redis-server (plain, TLS,
//! durable), PostgreSQL with TLS, and the certificates they serve.

use crate::support::{free_port, wait_for};
use common::queue::RedisQueue;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private redis-server on a free port, for tests that must wipe, stop or crash their
/// Redis. Without persistence ([`start`](Self::start)), or with an append-only file fsynced
/// on every write in a directory of the test's ([`durable`](Self::durable)), which survives
/// a [`crash`](Self::crash) and [`boot`](Self::boot) on the same port.
pub(crate) struct PrivateRedis {
    child: Option<Child>,
    pub(crate) port: u16,
    aof_dir: Option<PathBuf>,
    /// Arguments that replace `--port PORT` (TLS), and more (ACL users).
    listen: Option<Vec<String>>,
    extra: Vec<String>,
    pub(crate) url: String,
}

impl PrivateRedis {
    pub(crate) async fn start() -> Self {
        Self::launch(None).await
    }

    pub(crate) async fn durable(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        Self::launch(Some(dir)).await
    }

    async fn launch(aof_dir: Option<PathBuf>) -> Self {
        let port = free_port();
        let mut r = PrivateRedis {
            child: None,
            port,
            aof_dir,
            listen: None,
            extra: Vec::new(),
            url: format!("redis://127.0.0.1:{port}"),
        };
        r.boot().await;
        r
    }

    /// A server with these extra arguments, reached at the URL `url(port)` gives; `tls`
    /// serves TLS only, on that port, with the certificate and key of `certs`.
    pub(crate) async fn with(extra: &[&str], tls: Option<&TestCerts>, url: impl Fn(u16) -> String) -> Self {
        let port = free_port();
        let listen = tls.map(|c| {
            vec![
                "--port".to_string(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                c.cert.display().to_string(),
                "--tls-key-file".into(),
                c.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                c.ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        });
        let mut r = PrivateRedis {
            child: None,
            port,
            aof_dir: None,
            listen,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            url: url(port),
        };
        r.boot().await;
        r
    }

    /// Starts the server (again), and waits until it answers (after loading its AOF).
    pub(crate) async fn boot(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.listen {
            Some(args) => cmd.args(args),
            None => cmd.args(["--port", &self.port.to_string()]),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", ""]).args(&self.extra);
        match &self.aof_dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        self.child = Some(cmd.stdout(Stdio::null()).spawn().expect("redis-server on PATH"));
        let u = self.url.clone();
        let tls = self.listen.is_some();
        let port = self.port;
        wait_for("the private redis-server", Duration::from_secs(20), || {
            let u = u.clone();
            async move {
                if tls {
                    // This process does not trust the test CA: the port answering will do.
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .ok()
                        .map(|_| ())
                } else {
                    RedisQueue::connect(&u, "probe").await.ok().map(|_| ())
                }
            }
        })
        .await;
    }

    /// SIGKILL: no shutdown, no final fsync beyond what the AOF policy already did.
    pub(crate) fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A certificate authority and a server certificate it signed, for `localhost` and
/// 127.0.0.1, made with openssl in `dir`.
pub(crate) struct TestCerts {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl TestCerts {
    pub(crate) fn make(dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl on PATH");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gpuq test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(p("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        TestCerts {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.crash();
        if let Some(dir) = &self.aof_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A private PostgreSQL server on a free port that accepts only TLS connections (every
/// `host` line of its pg_hba.conf is `hostssl`), with the certificate and key of `certs`.
/// It runs as the `postgres` user when the test runs as root.
pub(crate) struct PrivatePostgres {
    child: Option<Child>,
    dir: PathBuf,
    pub(crate) port: u16,
}

impl PrivatePostgres {
    pub(crate) async fn tls(dir: PathBuf, certs: &TestCerts) -> Self {
        let bin = postgres_bin_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        // initdb refuses to run as root: then the server is the postgres user's.
        let owner = nix::unistd::Uid::effective().is_root().then(|| {
            nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a postgres user")
        });
        let own = |path: &std::path::Path| {
            if let Some(u) = &owner {
                std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
            }
        };
        own(&dir);
        // The server reads its key only if no one else may (0600, its own).
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::copy(&certs.cert, &cert).unwrap();
        std::fs::copy(&certs.key, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        own(&cert);
        own(&key);
        let run_as = |program: PathBuf| {
            use std::os::unix::process::CommandExt;
            let mut c = Command::new(program);
            if let Some(u) = &owner {
                c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
            c.stdout(Stdio::null());
            c
        };
        let out = run_as(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stderr(Stdio::piped())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .unwrap();
        let port = free_port();
        let child = run_as(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(&dir)
            .args(["-c", "ssl=on", "-c"])
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .stderr(std::fs::File::create(dir.join("postgres.log")).unwrap())
            .spawn()
            .expect("postgres runs");
        wait_for("the private PostgreSQL", Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        PrivatePostgres {
            child: Some(child),
            dir,
            port,
        }
    }

    /// A URL to its `postgres` database, by the name its certificate carries.
    pub(crate) fn url(&self, params: &str) -> String {
        format!("postgres://postgres@localhost:{}/postgres?{params}", self.port)
    }
}

/// Where this machine's PostgreSQL server programs are (the newest version's).
fn postgres_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect("initdb under /usr/lib/postgresql/VERSION/bin")
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT: PostgreSQL's fast shutdown, which ends the postmaster and its children.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One primary, one replica and three Sentinels monitoring them as service `gpuq`, all on
/// loopback, for failover tests. `url` reaches them the way the binaries are configured.
pub(crate) struct SentinelSet {
    /// Kept running for the set's lifetime (it becomes the replica after a failover).
    _primary: PrivateRedis,
    pub(crate) replica: PrivateRedis,
    sentinels: Vec<Child>,
    ports: Vec<u16>,
    pub(crate) url: String,
}

pub(crate) const SENTINEL_SERVICE: &str = "gpuq";

impl SentinelSet {
    pub(crate) async fn start(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        // Each server in a directory of its own: a replica writes the primary's data to
        // dump.rdb in its directory when it syncs, whatever --save says.
        let (primary_dir, replica_dir) = (dir.join("primary"), dir.join("replica"));
        std::fs::create_dir_all(&primary_dir).unwrap();
        std::fs::create_dir_all(&replica_dir).unwrap();
        let url = |port: u16| format!("redis://127.0.0.1:{port}");
        let primary = PrivateRedis::with(&["--dir", &primary_dir.display().to_string()], None, url).await;
        let replica = PrivateRedis::with(
            &[
                "--dir",
                &replica_dir.display().to_string(),
                "--replicaof",
                "127.0.0.1",
                &primary.port.to_string(),
            ],
            None,
            url,
        )
        .await;
        // Sentinels learn of replicas from the primary's INFO: start them once it has one.
        let info_of = |url: String| async move {
            let client = redis::Client::open(url).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut c)
                .await
                .ok()
        };
        let replica_url = replica.url.clone();
        wait_for("the replica to sync", Duration::from_secs(30), || {
            let info = info_of(replica_url.clone());
            async move {
                info.await
                    .filter(|i| i.contains("master_link_status:up"))
                    .map(|_| ())
            }
        })
        .await;
        let mut sentinels = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 10000\n",
                    dir = dir.display(),
                    primary = primary.port,
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(std::fs::File::create(dir.join(format!("sentinel-{i}.log"))).unwrap())
                .spawn()
                .expect("redis-server on PATH");
            sentinels.push(child);
            ports.push(port);
        }
        let set = SentinelSet {
            url: format!(
                "redis+sentinel://{}/{SENTINEL_SERVICE}",
                ports
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _primary: primary,
            replica,
            sentinels,
            ports,
        };
        // Each Sentinel knows the replica (it can fail over to it) and the other two.
        for &port in &set.ports {
            wait_for(
                "the Sentinels to know the replica and each other",
                Duration::from_secs(60),
                || async move {
                    let mut c = sentinel_conn(port).await?;
                    let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg(SENTINEL_SERVICE)
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    let others: Vec<Vec<String>> = redis::cmd("SENTINEL")
                        .arg("sentinels")
                        .arg(SENTINEL_SERVICE)
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    let up = replicas
                        .iter()
                        .any(|r| r.windows(2).any(|w| w[0] == "flags" && w[1] == "slave"));
                    (up && others.len() == 2).then_some(())
                },
            )
            .await;
        }
        set
    }

    /// The port of the server the Sentinels name as primary now.
    pub(crate) async fn primary_port(&self) -> Option<u16> {
        let mut c = sentinel_conn(self.ports[0]).await?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(SENTINEL_SERVICE)
            .query_async(&mut c)
            .await
            .ok()?;
        Some(port)
    }

    /// `SENTINEL FAILOVER`, and waits until the Sentinels name the replica as primary.
    pub(crate) async fn fail_over(&self) {
        let mut c = sentinel_conn(self.ports[0]).await.expect("a Sentinel answers");
        let _: String = redis::cmd("SENTINEL")
            .arg("failover")
            .arg(SENTINEL_SERVICE)
            .query_async(&mut c)
            .await
            .unwrap();
        let want = self.replica.port;
        wait_for(
            "the replica to become the primary",
            Duration::from_secs(30),
            || async move { (self.primary_port().await == Some(want)).then_some(()) },
        )
        .await;
    }
}

async fn sentinel_conn(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    client.get_multiplexed_async_connection().await.ok()
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for c in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
