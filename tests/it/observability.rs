//! Metrics, health endpoints and logs of the running binaries.

use crate::servers::PrivateRedis;
use crate::support::{bin, free_port, http_get, sh, wait_for, TestEnv};
use common::{JobSpec, JobState, Priority};
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Scrapes until the exposition contains every `needle`; returns the last body.
pub(crate) async fn scrape_until(port: u16, needles: &[&str]) -> String {
    wait_for(
        &format!("metrics on :{port} to show {needles:?}"),
        LONG,
        || async move {
            let (status, body) = http_get(port, "/metrics").await?;
            (status == 200 && needles.iter().all(|n| body.contains(n))).then_some(body)
        },
    )
    .await
}

/// `promtool check metrics` accepts the exposition (naming, units, help text).
pub(crate) fn promtool_accepts(exposition: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exports_queue_depth_and_job_counters() {
    let env = TestEnv::new().await;
    let port = free_port();
    let _serve = env.serve_with(&["--listen", &format!("127.0.0.1:{port}")]);
    let specs: Vec<JobSpec> = (0..7).map(|i| sh(&format!("m{i}"), "true")).collect();
    let ids = env.queue.enqueue_batch(specs).await.unwrap().ids;
    let mut urgent = sh("u", "exit 4");
    urgent.priority = Priority::Urgent;
    urgent.max_attempts = 1;
    let failing = env.queue.enqueue_batch(vec![urgent]).await.unwrap().ids.remove(0);

    let body = scrape_until(
        port,
        &[
            "gpuq_jobs_queued{priority=\"p1\"} 7",
            "gpuq_jobs_queued{priority=\"p0\"} 1",
        ],
    )
    .await;
    assert!(body.contains("gpuq_jobs_queued{priority=\"p2\"} 0"), "{body}");
    assert!(body.contains("gpuq_workers_live 0"), "{body}");
    promtool_accepts(&body);

    let _w = env.worker(&["--concurrency", "2"]);
    for id in &ids {
        env.wait_state(id, JobState::Succeeded, LONG).await;
    }
    env.wait_state(&failing, JobState::Dead, LONG).await;
    let body = scrape_until(
        port,
        &[
            "gpuq_jobs_queued{priority=\"p1\"} 0",
            "gpuq_jobs_enqueued_total{priority=\"p1\",model_type=\"generic\"} 7",
            "gpuq_jobs_finished_total{priority=\"p1\",model_type=\"generic\",outcome=\"succeeded\"} 7",
            "gpuq_jobs_finished_total{priority=\"p0\",model_type=\"generic\",outcome=\"dead\"} 1",
            "gpuq_attempts_failed_total{priority=\"p0\",model_type=\"generic\"} 1",
            "gpuq_job_run_seconds_count{outcome=\"succeeded\"} 7",
            "gpuq_job_wait_seconds_count{priority=\"p1\"} 7",
            "gpuq_workers_live 1",
            "gpuq_worker_slots{state=\"free\"} 2",
        ],
    )
    .await;
    promtool_accepts(&body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_exports_its_own_slots_and_outcomes() {
    let env = TestEnv::new().await;
    let port = free_port();
    let _w = env.worker(&[
        "--concurrency",
        "3",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut bad = sh("bad", "exit 2");
    bad.max_attempts = 1;
    let ids = env
        .queue
        .enqueue_batch(vec![sh("a", "true"), sh("b", "true"), bad])
        .await
        .unwrap()
        .ids;
    env.wait_state(&ids[2], JobState::Dead, LONG).await;
    let body = scrape_until(
        port,
        &[
            "gpuq_worker_slots 3",
            "gpuq_worker_jobs_total{outcome=\"succeeded\"} 2",
            "gpuq_worker_jobs_total{outcome=\"failed\"} 1",
            "gpuq_worker_redis_latency_seconds_count{op=\"claim\"}",
            "gpuq_worker_heartbeat_failures_total 0",
        ],
    )
    .await;
    promtool_accepts(&body);
    assert!(!body.contains(ids[0].as_str()), "job ids never become labels");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_redis_and_liveness_does_not() {
    let redis = PrivateRedis::start().await;
    let dir = std::env::temp_dir().join(format!("gpuq-ready-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (serve_port, worker_port) = (free_port(), free_port());
    let _serve = crate::support::Reaped(
        Command::new(bin("scheduler"))
            .args(["serve", "--listen", &format!("127.0.0.1:{serve_port}")])
            .env("REDIS_URL", &redis.url)
            .env("DATABASE_URL", common::store::sqlite_url(&dir.join("jobs.db")))
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _worker = crate::support::Reaped(
        Command::new(bin("worker"))
            .args(["--metrics-addr", &format!("127.0.0.1:{worker_port}")])
            .env("REDIS_URL", &redis.url)
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for port in [serve_port, worker_port] {
        wait_for("ready", LONG, || async move {
            http_get(port, "/readyz").await.filter(|(s, _)| *s == 200)
        })
        .await;
    }
    drop(redis);
    for port in [serve_port, worker_port] {
        let (_, body) = wait_for("not ready once Redis is gone", LONG, || async move {
            http_get(port, "/readyz").await.filter(|(s, _)| *s == 503)
        })
        .await;
        assert!(body.contains("not ready: Redis"), "{body}");
        assert_eq!(
            http_get(port, "/healthz").await.map(|(s, _)| s),
            Some(200),
            "still alive"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_job_and_never_secrets() {
    let env = TestEnv::new().await;
    // Debug level, so that the job's output lines reach the worker's log too.
    let w = env.worker_with(
        &crate::support::redis_url(),
        &["--log-format", "json"],
        &[("RUST_LOG", "info,job_output=debug")],
    );
    // The job prints its secrets; what is stored and shown must not hold them.
    let mut s = sh(
        "secretive",
        "echo using $API_TOKEN; echo pass $SMTP_PASS; echo db $DB_LINK; echo lr $LEARNING_RATE",
    );
    s.env.insert("API_TOKEN".into(), "tok-sup3rsecret".into());
    s.env.insert("SMTP_PASS".into(), "p4ss-w0rd".into());
    s.env
        .insert("DB_LINK".into(), "postgres://gpuq:hunter22@db:5432/x".into());
    s.env.insert("LEARNING_RATE".into(), "0.1".into());
    let id = env.queue.enqueue_batch(vec![s]).await.unwrap().ids.remove(0);
    env.wait_state(&id, JobState::Succeeded, LONG).await;
    let log = wait_for("the attempt's log line", LONG, || {
        let log = w.log();
        async move { log.contains("attempt reported").then_some(log) }
    })
    .await;
    let line = log.lines().find(|l| l.contains("attempt reported")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["span"]["job_id"], id.as_str(), "{line}");
    assert_eq!(v["span"]["attempt"], 1, "{line}");
    assert!(
        log.contains("lr 0.1"),
        "the job's output reached the worker's debug log: {log}"
    );
    let secrets = ["sup3rsecret", "p4ss-w0rd", "hunter22"];
    for secret in secrets {
        assert!(!log.contains(secret), "worker log holds {secret}: {log}");
    }
    let stored = env.queue.logs(&id, 100).await.unwrap();
    assert_eq!(
        stored,
        [
            "using ***",
            "pass ***",
            "db postgres://gpuq:***@db:5432/x",
            "lr 0.1"
        ],
        "what Redis keeps of the output"
    );
    let printed = crate::support::stdout(&env.scheduler(&["logs", id.as_str()]));
    let shown = crate::support::stdout(&env.scheduler(&["show", id.as_str(), "--json"]));
    for secret in secrets {
        assert!(!printed.contains(secret), "`logs` prints {secret}: {printed}");
        assert!(!shown.contains(secret), "`show` prints {secret}: {shown}");
    }
    assert!(printed.contains("lr 0.1"), "{printed}");
    assert!(shown.contains("postgres://gpuq:***@db:5432/x"), "{shown}");
    assert!(
        shown.contains("\"LEARNING_RATE\": \"0.1\""),
        "ordinary values are shown: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_health_queues_running_jobs_and_failures() {
    let env = TestEnv::new().await;
    let mut broken = sh("broken", "echo boom >&2; exit 5");
    broken.max_attempts = 1;
    let mut trainer = JobSpec::new(
        "trainer-run",
        "vision",
        vec![
            bin("trainer").display().to_string(),
            "--epoch-delay-ms".into(),
            "400".into(),
        ],
    );
    trainer.epochs = 50;
    let ids = env.queue.enqueue_batch(vec![broken, trainer]).await.unwrap().ids;
    let _w = env.worker(&["--concurrency", "2"]);
    env.wait_state(&ids[0], JobState::Dead, LONG).await;
    // The trainer reports progress; wait until an epoch has been seen.
    wait_for("trainer progress", LONG, || async {
        env.record(&ids[1])
            .await
            .progress
            .filter(|p| p.starts_with("epoch "))
    })
    .await;
    let queued = env
        .queue
        .enqueue_batch((0..3).map(|i| sh(&format!("q{i}"), "true")).collect())
        .await
        .unwrap();
    assert_eq!(queued.created, 3);

    let out = env.scheduler(&["status", "--json"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["health"]["redis_ok"], true);
    assert_eq!(d["health"]["store_ok"], true);
    assert_eq!(d["capacity"]["total"], 2);
    // The three quick jobs run on the free slot meanwhile; one may still be listed.
    let running = d["running"].as_array().unwrap();
    let trainer = running
        .iter()
        .find(|j| j["spec"]["name"] == "trainer-run")
        .unwrap_or_else(|| panic!("the trainer is listed as running: {running:?}"));
    assert!(trainer["progress"].as_str().unwrap().ends_with("/50"));
    assert_eq!(d["recent_failures"][0]["spec"]["name"], "broken");
    assert_eq!(d["recent_failures"][0]["reason"], "exited with code 5");
    assert!(
        d["throughput_per_min"].as_f64().unwrap() > 0.0,
        "the dead job counts as finished"
    );

    let text = crate::support::stdout(&env.scheduler(&["status"]));
    for needle in [
        "health     redis ok",
        "store ok",
        "slots busy",
        "p1 normal",
        "trainer-run",
        "epoch ",
        "broken",
        "exited with code 5",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    env.queue.cancel(&ids[1], "done with the test").await.unwrap();
}
