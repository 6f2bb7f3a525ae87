//! The `scheduler` binary: bad input is refused with exit code 2 and changes nothing;
//! infrastructure faults exit 1.

use crate::support::{bin, stderr, stdout, TestEnv};
use common::{JobId, JobState};

const GOOD: &str = r#"{"name":"ok","team":"vision","command":["true"]}"#;

fn assert_refused(env: &TestEnv, out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(out));
    let err = stderr(out);
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(env.keys().is_empty(), "nothing may be enqueued: {:?}", env.keys());
}

#[tokio::test]
async fn every_kind_of_usage_error_names_what_is_wrong_on_one_line() {
    let env = TestEnv::new().await;
    let cases: &[(&[&str], &str)] = &[
        // A missing required flag: clap lists it on a line of its own.
        (
            &["enqueue", "--priority", "p1", "--", "true"],
            "not provided: --name <NAME>",
        ),
        (
            &["enqueue", "--name", "x", "--bogus", "--", "true"],
            "unexpected argument '--bogus'",
        ),
        (&["enqueue", "--name"], "a value is required for '--name <NAME>'"),
        (
            &["enqueue", "--name", "x", "--gpus", "many", "--", "true"],
            "'--gpus <GPUS>'",
        ),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["cancel"], "not provided: <ID>"),
        (&["cancel", "a", "b"], "unexpected argument 'b'"),
        (&["status", "--json", "--json=no"], "--json"),
    ];
    for (args, needle) in cases {
        let out = env.scheduler(args);
        assert_refused(&env, &out, needle);
    }
    let out = std::process::Command::new(bin("worker"))
        .args(["--concurrency", "zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("'--concurrency <CONCURRENCY>'") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[tokio::test]
async fn bad_specs_are_refused_naming_the_field() {
    let env = TestEnv::new().await;
    let cases: &[(&[&str], &str)] = &[
        (
            &["enqueue", "--name", "x", "--priority", "p7", "--", "true"],
            "unknown priority",
        ),
        (
            &["enqueue", "--name", "x", "--epochs", "0", "--", "true"],
            "field `epochs`",
        ),
        (
            &["enqueue", "--name", "x", "--epochs", "-3", "--", "true"],
            "--epochs",
        ),
        (&["enqueue", "--name", "x"], "field `command`"),
        (
            &["enqueue", "--name", "x", "--memory", "lots", "--", "true"],
            "--memory",
        ),
        (
            &["enqueue", "--name", "x", "--id", "bad id", "--", "true"],
            "--id",
        ),
    ];
    for (args, needle) in cases {
        let out = env.scheduler(args);
        assert_refused(&env, &out, needle);
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_spec_enqueues_nothing() {
    let env = TestEnv::new().await;
    let bad_lines = [
        (
            r#"{"name":"x","command":["true"],"priority":"soon"}"#,
            "line 3: invalid job spec: field `priority`",
        ),
        (
            r#"{"name":"x","command":["true"],"gpu":4}"#,
            "line 3: invalid job spec: field `gpu`: unknown field",
        ),
        (
            r#"{"name":"x","command":[]}"#,
            "line 3: invalid job spec: field `command`",
        ),
        (
            r#"{"name":"x","command":["true"],"epochs":0}"#,
            "line 3: invalid job spec: field `epochs`",
        ),
        (r#"{"name":"x", "command": ["true"]"#, "line 3: invalid job spec"),
        (
            r#"{"name":"x","command":["true","a\u0000b"]}"#,
            "line 3: invalid job spec: field `command[1]`: must not contain a NUL byte",
        ),
        (
            r#"{"name":"x\u0007","command":["true"]}"#,
            "line 3: invalid job spec: field `name`: must not contain control characters",
        ),
        (
            r#"{"id":"..","name":"x","command":["true"]}"#,
            "line 3: invalid job spec: field `id`",
        ),
    ];
    for (bad, needle) in bad_lines {
        let input = format!("{GOOD}\n{GOOD}\n{bad}\n{GOOD}\n");
        let path = env.path("batch.jsonl");
        std::fs::write(&path, &input).unwrap();
        let out = env.scheduler(&["batch", path.to_str().unwrap()]);
        assert_refused(&env, &out, needle);
        let out = env.scheduler_with_stdin(&["batch", "-"], Some(&input));
        assert_refused(&env, &out, needle);
    }
    let array = format!("[\n{GOOD},\n{GOOD},\n{{\"name\":\"x\",\"command\":[\"true\"],\"epochs\":0}}\n]");
    let out = env.scheduler_with_stdin(&["batch", "-"], Some(&array));
    assert_refused(&env, &out, "line 4: invalid job spec: field `epochs`");
    let out = env.scheduler_with_stdin(&["batch", "-"], Some("this is not json"));
    assert_refused(&env, &out, "line 1: invalid job spec");
}

#[tokio::test]
async fn a_good_batch_lands_whole() {
    let env = TestEnv::new().await;
    let input: String = (0..300)
        .map(|i| format!("{{\"name\":\"j{i}\",\"command\":[\"true\"]}}\n"))
        .collect();
    let out = env.scheduler_with_stdin(&["batch", "-", "--json"], Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["created"], 300);
    assert_eq!(env.queue.status().await.unwrap().queued(), 300);
}

#[tokio::test]
async fn enqueue_twice_with_one_id_changes_nothing_and_says_so() {
    let env = TestEnv::new().await;
    let args = [
        "enqueue", "--id", "train-42", "--name", "first", "--team", "nlp", "--", "python", "train.py",
    ];
    let out = env.scheduler(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "train-42");
    let out = env.scheduler(&[
        "enqueue", "--id", "train-42", "--name", "second", "-p", "urgent", "--", "true",
    ]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("already exists; nothing changed"),
        "{}",
        stderr(&out)
    );
    let rec = env.record(&"train-42".parse::<JobId>().unwrap()).await;
    assert_eq!((rec.spec.name.as_str(), rec.spec.team.as_str()), ("first", "nlp"));
    assert_eq!(rec.spec.command, ["python", "train.py"]);
    assert_eq!(env.queue.status().await.unwrap().queued(), 1);
}

#[tokio::test]
async fn read_commands_speak_json() {
    let env = TestEnv::new().await;
    let out = env.scheduler(&[
        "enqueue",
        "--id",
        "j1",
        "--name",
        "r50",
        "--gpus",
        "2",
        "--gpu-type",
        "a100",
        "--memory",
        "32Gi",
        "--epochs",
        "7",
        "--label",
        "exp=sweep3",
        "--env",
        "LR=0.1",
        "--timeout",
        "90m",
        "--json",
        "--",
        "python",
        "train.py",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["created"], true);
    assert_eq!(v["job"]["spec"]["resources"]["memory"], "32Gi");
    assert_eq!(v["job"]["spec"]["timeout_secs"], 5400);
    assert_eq!(v["job"]["position"], 0);

    let show: serde_json::Value =
        serde_json::from_slice(&env.scheduler(&["show", "j1", "--json"]).stdout).unwrap();
    assert_eq!(show["state"], "queued");
    assert_eq!(show["events"][0]["state"], "queued");
    let list: serde_json::Value =
        serde_json::from_slice(&env.scheduler(&["list", "--state", "queued", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let status: serde_json::Value =
        serde_json::from_slice(&env.scheduler(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["queues"][1]["depth"], 1);
    let text = stdout(&env.scheduler(&["status"]));
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("p1 normal") && l.split_whitespace().nth(2) == Some("1")),
        "{text}"
    );

    let out = env.scheduler(&["show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("job nope not found"));
    let out = env.scheduler(&["cancel", "j1"]);
    assert!(out.status.success());
    assert_eq!(
        env.record(&"j1".parse().unwrap()).await.state,
        JobState::Cancelled
    );
    let out = env.scheduler(&["cancel", "j1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "cancelling twice is refused: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn unreachable_redis_is_an_infrastructure_error() {
    let out = std::process::Command::new(bin("scheduler"))
        .args(["status"])
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot reach Redis at redis://127.0.0.1:1"), "{err}");
    let out = std::process::Command::new(bin("scheduler"))
        .args(["status", "--namespace", "bad{ns"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_real_jobs_to_completion() {
    let out = std::process::Command::new(bin("scheduler"))
        .args(["demo", "--timeout", "2m"])
        .env("REDIS_URL", crate::support::redis_url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("10/10 succeeded"), "{text}");
    assert!(
        text.contains(
            "start order (strict priority, FIFO within one): p0:incident-eval → p0:hotfix-retrain → p1:"
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"picked up its checkpoint: {"event":"resumed","from_epoch":3}"#),
        "{text}"
    );
}

#[tokio::test]
async fn cost_estimates_price_a_spec_before_it_runs() {
    let env = TestEnv::new().await;
    let spec = r#"{"name":"r50","team":"vision","model_type":"resnet50","command":["python","train.py"],
                   "epochs":10,"resources":{"gpus":2,"gpu_type":"a100"}}"#
        .replace('\n', " ");
    let at = |start: &str| -> serde_json::Value {
        let out = env.scheduler_with_stdin(
            &["cost", "estimate", "-", "--json", "--start", start],
            Some(&spec),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    };
    // Default table: 1200 s/epoch at batch 32 on one GPU, scaled by 2^-0.9 for two GPUs.
    let day = at("2026-11-23T09:00:00Z");
    let secs = day["duration_secs"].as_u64().unwrap();
    assert!((6400..=6460).contains(&secs), "{day}");
    assert!(day["basis"].as_str().unwrap().contains("default"), "{day}");
    // 2 x a100 $3.67 + 1 core $0.04 + 4 GiB x $0.005 = $7.40/h, all at peak.
    let expected = 7.40 * secs as f64 / 3600.0;
    let cost = day["cost_micros"].as_i64().unwrap() as f64 / 1e6;
    assert!((cost - expected).abs() < 0.01, "{cost} vs {expected}");
    assert_eq!(day["off_peak_hours"], 0.0);
    // Starting at 21:30 the run crosses 22:00: the second part is half price.
    let night = at("2026-11-23T21:30:00Z");
    assert!(night["off_peak_hours"].as_f64().unwrap() > 1.0, "{night}");
    assert!(night["cost_micros"].as_i64().unwrap() < day["cost_micros"].as_i64().unwrap());

    let out = env.scheduler(&[
        "enqueue", "--name", "priced", "--gpus", "1", "--epochs", "2", "--", "true",
    ]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("estimate for priced: ~"),
        "{}",
        stderr(&out)
    );
    let out = env.scheduler_with_stdin(&["cost", "estimate", "-"], Some("{\"name\":\"x\"}"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad specs are refused: {}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_has_a_cost_forecast_from_its_pace() {
    let env = TestEnv::new().await;
    let mut trainer = common::JobSpec::new(
        "forecast-me",
        "vision",
        vec![
            bin("trainer").display().to_string(),
            "--epoch-delay-ms".into(),
            "300".into(),
        ],
    );
    trainer.epochs = 40;
    trainer.resources.gpus = 1;
    let id = env
        .queue
        .enqueue_batch(vec![trainer])
        .await
        .unwrap()
        .ids
        .remove(0);
    let out = env.scheduler(&["cost", "forecast", id.as_str()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a queued job has no forecast: {}",
        stderr(&out)
    );
    let _w = env.worker(&["--gpus", "0"]);
    crate::support::wait_for("two epochs", std::time::Duration::from_secs(60), || async {
        let p = env.record(&id).await.progress?;
        let done: u32 = p.strip_prefix("epoch ")?.split('/').next()?.parse().ok()?;
        (done >= 2).then_some(())
    })
    .await;
    let out = env.scheduler(&["cost", "forecast", id.as_str(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let so_far: f64 = f["so_far"].as_str().unwrap().parse().unwrap();
    let total: f64 = f["projected_total"].as_str().unwrap().parse().unwrap();
    assert!(so_far > 0.0 && total > so_far, "{f}");
    env.queue.cancel(&id, "done").await.unwrap();
}

#[tokio::test]
async fn cost_compare_prices_alternatives_side_by_side() {
    let env = TestEnv::new().await;
    let spec = r#"{"name":"r50","team":"vision","model_type":"resnet50","command":["python"],"epochs":10,"resources":{"gpus":2,"gpu_type":"a100"}}"#;
    let out = env.scheduler_with_stdin(
        &[
            "cost",
            "compare",
            "-",
            "--batch-size",
            "128",
            "--gpus",
            "4",
            "--all-options",
            "--json",
        ],
        Some(spec),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6, "baseline, batch, gpus, spot, off-peak, both");
    let secs = |i: usize| rows[i]["estimate"]["secs"].as_u64().unwrap();
    let cost = |i: usize| {
        rows[i]["quote"]["total"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!(secs(1) < secs(0), "a larger batch is estimated faster");
    assert!(secs(2) < secs(0), "more GPUs are estimated faster");
    assert!(cost(3) < cost(0), "spot is cheaper even with re-runs");
    // Off-peak waits for the window unless it is already open (then it is the baseline).
    if rows[4]["start"] == rows[0]["start"] {
        assert_eq!(cost(4), cost(0), "already off-peak");
    } else {
        assert!(cost(4) < cost(0), "off-peak is cheaper");
        assert!(cost(5) < cost(3));
    }
    assert!(cost(5) < cost(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_run_gets_concrete_recommendations() {
    let env = TestEnv::new().await;
    let mut run = common::JobSpec::new(
        "plateau",
        "vision",
        vec![
            bin("trainer").display().to_string(),
            "--epoch-delay-ms".into(),
            "20".into(),
        ],
    );
    run.epochs = 30;
    run.resources.gpus = 1;
    run.labels.insert("checkpoints".into(), "true".into());
    let id = env.queue.enqueue_batch(vec![run]).await.unwrap().ids.remove(0);
    let out = env.scheduler(&["cost", "recommend", id.as_str()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "not before the run ends: {}",
        stderr(&out)
    );
    let _w = env.worker(&["--gpus", "0"]);
    env.wait_state(
        &id,
        common::JobState::Succeeded,
        std::time::Duration::from_secs(60),
    )
    .await;
    let out = env.scheduler(&["cost", "recommend", id.as_str(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kind = |k: &str| {
        recs.as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"]["kind"] == k)
            .cloned()
    };
    // The trainer's loss flattens long before epoch 30.
    let early = kind("early_stopping").unwrap_or_else(|| panic!("{recs}"));
    assert!(early["kind"]["after_epoch"].as_u64().unwrap() < 30, "{early}");
    assert!(
        early["saves"].as_str().unwrap().parse::<f64>().unwrap() > 0.0,
        "{early}"
    );
    assert!(early["basis"].as_str().unwrap().contains("Loss was"), "{early}");
    assert!(
        kind("spot").is_some(),
        "the run checkpoints, so spot applies: {recs}"
    );
    assert!(
        kind("fewer_gpus").is_none(),
        "utilisation is not measured, so no guess: {recs}"
    );
}

#[tokio::test]
async fn enqueue_off_peak_defers_to_the_next_window() {
    let mut env = TestEnv::new().await;
    // A window that opens two hours from now, whatever the time of the run.
    let hour = (chrono_hour_utc() + 2) % 24;
    let default = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cost/pricing.default.toml"
    ))
    .unwrap();
    let pricing = default
        .replace("start = \"22:00\"", &format!("start = \"{hour:02}:00\""))
        .replace("end = \"06:00\"", &format!("end = \"{:02}:00\"", (hour + 1) % 24));
    let path = env.path("pricing.toml");
    std::fs::write(&path, pricing).unwrap();
    env.pricing = Some(path);
    let out = env.scheduler(&[
        "enqueue",
        "--name",
        "cheap",
        "--off-peak",
        "--id",
        "cheap-1",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("deferred to the off-peak window at"),
        "{}",
        stderr(&out)
    );
    let rec = env.record(&"cheap-1".parse::<JobId>().unwrap()).await;
    assert_eq!(rec.state, JobState::Deferred);
    let wait = rec.spec.not_before.unwrap() - common::now_ms();
    assert!((3_600_000..=7_200_000).contains(&wait), "{wait} ms");
    let listed = stdout(&env.scheduler(&["list", "--state", "deferred"]));
    assert!(listed.contains("cheap-1"), "{listed}");
}

/// `scheduler batch - --chunked --json` of `input`, started, with `envs` besides the test's
/// Redis, namespace and store.
fn chunked_batch(env: &TestEnv, input: &str, envs: &[(&str, &str)]) -> std::process::Child {
    use std::io::Write;
    let mut child = std::process::Command::new(bin("scheduler"))
        .args(["batch", "-", "--chunked", "--json"])
        .env("REDIS_URL", crate::support::redis_url())
        .env("GPUQ_NAMESPACE", &env.ns)
        .env("DATABASE_URL", &env.database_url)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    // Written from a thread: a run killed early stops reading.
    std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    child
}

#[tokio::test]
async fn a_chunked_batch_killed_part_way_then_run_again_has_each_job_exactly_once() {
    let env = TestEnv::new().await;
    let chunk = common::queue::MAX_ATOMIC_BATCH as u64;
    let n = 3 * chunk + 1_000;
    let input: String = (0..n)
        .map(|i| format!("{{\"name\":\"k{i}\",\"command\":[\"true\"]}}\n"))
        .collect();
    // SIGKILL once a chunk has landed, then once another has: each time, only whole
    // chunks are in.
    let mut seen = 0;
    for _ in 0..2 {
        let mut child = chunked_batch(&env, &input, &[]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let queued = loop {
            let q = env.queue.status().await.unwrap().queued();
            if q > seen || child.try_wait().unwrap().is_some() {
                break q;
            }
            assert!(std::time::Instant::now() < deadline, "no chunk landed");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let after = env.queue.status().await.unwrap().queued();
        assert!(
            after >= queued && (after % chunk == 0 || after == n),
            "{after} queued"
        );
        seen = after;
    }
    // Run again: what landed is reported, the rest added, no job twice.
    let out = chunked_batch(&env, &input, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: std::collections::HashSet<&str> = report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, n);
    assert_eq!(report["existing"].as_array().unwrap().len() as u64, seen);
    assert_eq!(report["created"].as_u64().unwrap(), n - seen);
    assert_eq!(env.queue.status().await.unwrap().queued(), n);
}

fn chrono_hour_utc() -> u64 {
    (common::now_ms() / 3_600_000) % 24
}

#[tokio::test]
async fn a_batch_over_the_atomic_limit_needs_chunked_and_a_rerun_adds_only_what_is_missing() {
    let env = TestEnv::new().await;
    let n = common::queue::MAX_ATOMIC_BATCH + 2_000;
    let input: String = (0..n)
        .map(|i| format!("{{\"name\":\"j{i}\",\"command\":[\"true\"]}}\n"))
        .collect();
    let out = env.scheduler_with_stdin(&["batch", "-"], Some(&input));
    assert_refused(&env, &out, "pass --chunked");

    // The outbox bound stops the second chunk: the first is in, and says so.
    let scheduler = |limit: &str| {
        chunked_batch(&env, &input, &[("GPUQ_OUTBOX_LIMIT", limit)])
            .wait_with_output()
            .unwrap()
    };
    let out = scheduler("100");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("chunks 1 to 1 of 2 (5000 jobs) are enqueued"),
        "{err}"
    );
    assert_eq!(env.queue.status().await.unwrap().queued(), 5_000);

    // The same input again, once the outbox has room: only the rest is added.
    let out = scheduler("1000000");
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["created"], 2_000);
    assert_eq!(report["existing"].as_array().unwrap().len(), 5_000);
    assert_eq!(env.queue.status().await.unwrap().queued(), n as u64);
}
