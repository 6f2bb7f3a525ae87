//! Real worker processes running real local jobs.

use crate::support::{sh, stderr, wait_for, TestEnv};
use common::{JobSpec, JobState, Priority};
use nix::sys::signal::Signal;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn with_priority(mut s: JobSpec, p: Priority) -> JobSpec {
    s.priority = p;
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_mixed_jobs_on_one_slot_run_in_priority_then_fifo_order() {
    let env = TestEnv::new().await;
    let order_file = env.path("order");
    let script = format!("echo \"$GPUQ_JOB_ID\" >> {}", order_file.display());
    let mut expected = [Vec::new(), Vec::new(), Vec::new()];
    let mut specs = Vec::new();
    for i in 0..60 {
        let p = Priority::ALL[(i * 7) % 3];
        let mut s = with_priority(sh(&format!("job{i}"), &script), p);
        s.id = Some(format!("job-{i:02}").parse().unwrap());
        expected[(i * 7) % 3].push(format!("job-{i:02}"));
        specs.push(s);
    }
    env.queue.enqueue_batch(specs).await.unwrap();
    let _w = env.worker(&["--concurrency", "1"]);
    let expected: Vec<String> = expected.concat();
    let ran = wait_for("60 jobs to run", LONG, || async {
        let lines: Vec<String> = std::fs::read_to_string(&order_file)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        (lines.len() == 60).then_some(lines)
    })
    .await;
    assert_eq!(ran, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hundred_fifty_jobs_run_at_once_across_processes_each_exactly_once() {
    let env = TestEnv::new().await;
    let started = env.path("started");
    std::fs::create_dir_all(&started).unwrap();
    let done = env.path("done");
    // Each job waits (bounded) until all 150 have started: it can only succeed if all run at once.
    let script = format!(
        "touch {s}/$GPUQ_JOB_ID; n=0; while set -- {s}/*; [ $# -lt 150 ]; do n=$((n+1)); \
         [ $n -gt 600 ] && exit 9; sleep 0.2; done; echo $GPUQ_JOB_ID >> {d}",
        s = started.display(),
        d = done.display()
    );
    let specs: Vec<JobSpec> = (0..150).map(|i| sh(&format!("barrier{i}"), &script)).collect();
    let ids = env.queue.enqueue_batch(specs).await.unwrap().ids;
    let _workers: Vec<_> = (0..3).map(|_| env.worker(&["--concurrency", "50"])).collect();
    for id in &ids {
        let rec = env
            .wait_state(id, JobState::Succeeded, Duration::from_secs(120))
            .await;
        assert_eq!(rec.attempt, 1, "job {id} ran more than once");
    }
    let mut lines: Vec<String> = std::fs::read_to_string(&done)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    let mut want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(lines, want, "every job completed exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_worker_loses_no_job_another_worker_finishes_it() {
    let env = TestEnv::new().await;
    let (id, first_pid) = env.kill_a_worker_mid_job().await;

    let rescuer = env.worker(&[]);
    let rec = env.wait_state(&id, JobState::Succeeded, LONG).await;
    assert_eq!(rec.attempt, 2, "the lost attempt counts");
    assert!(rec.events.iter().any(|e| e
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("heartbeat expired"))));
    let workers: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.state == JobState::Running)
        .filter_map(|e| e.worker.clone())
        .collect();
    assert_eq!(workers.len(), 2);
    assert_ne!(workers[0], workers[1], "another worker finished it");
    // The orphaned first attempt died with its worker instead of running on.
    let pid = first_pid;
    wait_for(
        "the first attempt's process to die",
        Duration::from_secs(10),
        || async {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                .is_err()
                .then_some(())
        },
    )
    .await;
    drop(rescuer);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_queued_and_running_jobs() {
    let env = TestEnv::new().await;
    let pid_file = env.path("pid");
    let never = env.path("never");
    let running = sh(
        "long",
        &format!("echo $$ > {}; exec sleep 120", pid_file.display()),
    );
    let queued = sh("queued", &format!("touch {}", never.display()));
    let ids = env.queue.enqueue_batch(vec![running, queued]).await.unwrap().ids;
    let _w = env.worker(&["--concurrency", "1"]);
    env.wait_state(&ids[0], JobState::Running, LONG).await;

    let out = env.scheduler(&["cancel", ids[1].as_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.scheduler(&["cancel", ids[0].as_str()]);
    assert!(crate::support::stdout(&out).contains("its worker is stopping it"));
    let rec = env
        .wait_state(&ids[0], JobState::Cancelled, Duration::from_secs(10))
        .await;
    // The history says who stopped it, as for a queued job, not only that it stopped.
    let reason = rec.reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("cancelled by "), "{reason}");
    assert_eq!(rec.events.last().unwrap().detail.as_deref(), Some(reason));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "process stopped"
    );

    // The slot is free again; a job enqueued now runs, and the cancelled one never did.
    let after = env
        .queue
        .enqueue_batch(vec![sh("after", "true")])
        .await
        .unwrap()
        .ids
        .remove(0);
    env.wait_state(&after, JobState::Succeeded, LONG).await;
    assert_eq!(env.record(&ids[1]).await.state, JobState::Cancelled);
    assert!(!never.exists(), "a cancelled queued job never starts");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_retry_with_backoff_then_dead_letter_and_retry_brings_back() {
    let env = TestEnv::new().await;
    let fixed = env.path("fixed");
    let mut s = sh("flaky", &format!("test -e {}", fixed.display()));
    s.max_attempts = 3;
    let id = env.queue.enqueue_batch(vec![s]).await.unwrap().ids.remove(0);
    let _w = env.worker(&[]);
    let rec = env.wait_state(&id, JobState::Dead, LONG).await;
    assert_eq!((rec.attempt, rec.exit_code), (3, Some(1)));
    let states: Vec<&str> = rec.events.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(
        states,
        [
            "queued", "running", "failed", "retrying", "queued", "running", "failed", "retrying", "queued",
            "running", "failed", "dead"
        ]
    );
    assert_eq!(env.queue.dead_letters().await.unwrap(), [id.to_string()]);

    std::fs::write(&fixed, "").unwrap();
    let out = env.scheduler(&["retry", id.as_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rec = env.wait_state(&id, JobState::Succeeded, LONG).await;
    assert_eq!(rec.attempt, 4);
    assert!(env.queue.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_timeout_is_killed_and_counts_as_failed() {
    let env = TestEnv::new().await;
    let mut s = sh("hang", "exec sleep 120");
    s.timeout_secs = 1;
    s.max_attempts = 1;
    let id = env.queue.enqueue_batch(vec![s]).await.unwrap().ids.remove(0);
    let _w = env.worker(&[]);
    let rec = env.wait_state(&id, JobState::Dead, LONG).await;
    let reason = rec.reason.unwrap();
    assert!(reason.starts_with("timed out after 1s"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_list_live_workers_and_expire_for_dead_ones() {
    let env = TestEnv::new().await;
    let mut w = env.worker(&["--concurrency", "3"]);
    let pid = w.pid() as u32;
    let listed = wait_for("the worker to appear", LONG, || async {
        let out = env.scheduler(&["workers", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    assert_eq!(listed[0]["pid"], pid);
    assert_eq!(listed[0]["concurrency"], 3);
    assert_eq!(listed[0]["launcher"], "local");
    assert!(
        listed[0]["host"].is_string() && listed[0]["version"].is_string() && listed[0]["started_at"].is_u64()
    );
    w.kill();
    // Nobody deletes the heartbeat of a SIGKILLed worker: its TTL (1.5 s here) does.
    wait_for("the dead worker to vanish", Duration::from_secs(10), || async {
        let out = env.scheduler(&["workers", "--json"]);
        (out.stdout.starts_with(b"[]")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_worker_is_woken_by_an_enqueue_not_by_polling() {
    let env = TestEnv::new().await;
    // With a one-minute idle timeout, only the wake-up from the enqueue can start the job in time.
    let w = env.worker(&["--idle-timeout", "60s"]);
    wait_for("the worker to be idle", LONG, || async {
        (!env.queue.workers().await.unwrap().is_empty()).then_some(())
    })
    .await;
    // Let it reach its blocking wait (the log says so only at debug level, so poll the client list).
    wait_for("the worker to block on Redis", LONG, || async {
        let client = redis::Client::open(crate::support::redis_url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
        clients.lines().any(|l| l.contains("cmd=blpop")).then_some(())
    })
    .await;
    let id = env
        .queue
        .enqueue_batch(vec![sh("quick", "true")])
        .await
        .unwrap()
        .ids
        .remove(0);
    let rec = env
        .wait_state(&id, JobState::Succeeded, Duration::from_secs(10))
        .await;
    assert!(rec.started_at.unwrap() - rec.enqueued_at < 5_000, "{}", w.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_unfinished_jobs_back_to_the_queue() {
    let env = TestEnv::new().await;
    let ids = env
        .queue
        .enqueue_batch(vec![
            sh("slow", "exec sleep 120"),
            sh("quick-finisher", "sleep 0.3"),
        ])
        .await
        .unwrap()
        .ids;
    let mut w = env.worker(&["--concurrency", "2", "--grace-period", "2s"]);
    env.wait_state(&ids[0], JobState::Running, LONG).await;
    env.wait_state(&ids[1], JobState::Running, LONG).await;
    w.signal(Signal::SIGTERM);
    let status = w.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{}", w.log());
    // The quick job finished within the grace period; the slow one went back, uncounted.
    assert_eq!(env.record(&ids[1]).await.state, JobState::Succeeded);
    let slow = env.record(&ids[0]).await;
    assert_eq!(
        (slow.state, slow.attempt, slow.position),
        (JobState::Queued, 0, Some(0))
    );
    assert!(
        env.queue.workers().await.unwrap().is_empty(),
        "a clean exit removes the heartbeat"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_sees_only_its_own_environment_and_a_private_directory() {
    let env = TestEnv::new().await;
    let dump = env.path("job-env");
    let script = format!(
        "env > {d}; stat -c %a \"$(dirname \"$GPUQ_CHECKPOINT_DIR\")\" > {d}.mode",
        d = dump.display()
    );
    let mut spec = sh("nosy", &script);
    spec.env.insert("OWN".into(), "mine".into());
    let id = env.queue.enqueue_batch(vec![spec]).await.unwrap().ids.remove(0);
    let _w = env.worker_with(
        &crate::support::redis_url(),
        &["--pass-env", "PASSED"],
        &[
            ("DATABASE_URL", "postgres://gpuq:s3cret@db/jobs"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("PASSED", "yes"),
            ("LC_ALL", "C"),
        ],
    );
    env.wait_state(&id, JobState::Succeeded, Duration::from_secs(60))
        .await;
    let seen = std::fs::read_to_string(&dump).unwrap();
    let names: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for hidden in [
        "REDIS_URL",
        "DATABASE_URL",
        "AWS_SECRET_ACCESS_KEY",
        "GPUQ_NAMESPACE",
        "RUST_LOG",
    ] {
        assert!(!names.contains(&hidden), "the job saw {hidden}: {seen}");
    }
    for shown in [
        "PATH",
        "HOME",
        "LC_ALL",
        "PASSED",
        "OWN",
        "GPUQ_JOB_ID",
        "GPUQ_CHECKPOINT_DIR",
    ] {
        assert!(names.contains(&shown), "the job lacks {shown}: {seen}");
    }
    let mode = std::fs::read_to_string(env.path("job-env.mode")).unwrap();
    assert_eq!(mode.trim(), "700", "the job's directory is private");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_that_is_not_utf8_does_not_kill_the_job() {
    let env = TestEnv::new().await;
    // Output goes on after the byte that is not UTF-8: the job must not get SIGPIPE.
    let script = "printf 'a\\377b\\n'; i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo \"line $i\"; done; \
                  printf 'c\\377d\\n'; printf 'p 10%%\\rp 50%%\\rp 100%%\\n'";
    let id = env
        .queue
        .enqueue_batch(vec![sh("binary", script)])
        .await
        .unwrap()
        .ids
        .remove(0);
    let _w = env.worker(&[]);
    let done = env
        .wait_state(&id, JobState::Succeeded, Duration::from_secs(60))
        .await;
    assert_eq!(done.exit_code, None, "{done:?}");
    let log = env.queue.logs(&id, 5000).await.unwrap();
    assert!(
        log.iter().any(|l| l == "c\u{fffd}d"),
        "{:?}",
        &log[log.len().saturating_sub(3)..]
    );
    assert!(log.iter().any(|l| l == "line 2000"));
    assert_eq!(
        log.last().map(String::as_str),
        Some("p 100%"),
        "a redrawn line keeps its last drawing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_on_one_host_need_no_port_flags() {
    use std::process::{Command, Stdio};
    let env = TestEnv::new().await;
    let spawn = |id: &str| {
        crate::support::Reaped(
            Command::new(crate::support::bin("worker"))
                .args([
                    "--id",
                    id,
                    "--heartbeat-interval",
                    "300ms",
                    "--heartbeat-ttl",
                    "10s",
                ])
                .arg("--work-dir")
                .arg(env.path("work"))
                .env("REDIS_URL", crate::support::redis_url())
                .env("GPUQ_NAMESPACE", &env.ns)
                .env_remove("GPUQ_METRICS_ADDR")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _a = spawn("box-a");
    let _b = spawn("box-b");
    let workers = wait_for("both workers to heartbeat", Duration::from_secs(30), || async {
        let w = env.queue.workers().await.unwrap();
        (w.len() == 2).then_some(w)
    })
    .await;
    let addrs: Vec<String> = workers.iter().filter_map(|w| w.metrics_addr.clone()).collect();
    assert_eq!(addrs.len(), 2, "{workers:?}");
    assert_ne!(addrs[0], addrs[1], "each serves its metrics on its own port");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_job_gets_its_teams_secrets_by_reference_masked_in_its_output_and_no_other_teams() {
    let env = TestEnv::new().await;
    let secrets = env.path("secrets");
    for (team, value) in [
        ("research", "rs-topsecret-123"),
        ("payments", "pay-topsecret-456"),
    ] {
        let dir = secrets.join(team).join("wandb");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("api-key"), value).unwrap();
    }
    let secrets_arg = secrets.display().to_string();
    let _w = env.worker(&["--secrets-dir", &secrets_arg]);
    let mut own = sh("own", "echo \"key=$WANDB_KEY\"; test \"${#WANDB_KEY}\" = 16");
    own.team = "research".into();
    own.secret_env.insert(
        "WANDB_KEY".into(),
        "wandb/api-key".to_string().try_into().unwrap(),
    );
    let own = env.queue.enqueue_batch(vec![own]).await.unwrap().ids.remove(0);
    let done = env
        .wait_state(&own, JobState::Succeeded, Duration::from_secs(30))
        .await;
    // The spec holds the reference, not the value; the output has it masked.
    let shown = serde_json::to_string(&done.spec).unwrap();
    assert!(
        shown.contains("wandb/api-key") && !shown.contains("topsecret"),
        "{shown}"
    );
    let log = env.queue.logs(&own, 100).await.unwrap().join("\n");
    assert!(log.contains("key=") && !log.contains("rs-topsecret-123"), "{log}");
    // A team without that secret cannot reach another team's: the attempt is refused.
    let mut other = sh("other", "echo \"key=$WANDB_KEY\"");
    other.team = "vision".into();
    other.max_attempts = 1;
    other.secret_env.insert(
        "WANDB_KEY".into(),
        "wandb/api-key".to_string().try_into().unwrap(),
    );
    let other = env.queue.enqueue_batch(vec![other]).await.unwrap().ids.remove(0);
    let dead = env
        .wait_state(&other, JobState::Dead, Duration::from_secs(30))
        .await;
    let why = dead.reason.unwrap_or_default();
    assert!(why.contains("secret wandb/api-key of team vision"), "{why}");
    // A malformed reference is bad input at enqueue.
    let out = env.scheduler(&[
        "enqueue",
        "--name",
        "bad",
        "--secret-env",
        "K=Wandb/key",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("lowercase letters"), "{}", stderr(&out));
}
