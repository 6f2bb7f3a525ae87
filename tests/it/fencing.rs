//! Fencing: a worker that stays alive while its view of Redis goes wrong (a partition, a
//! lost reply) never runs a job beside another copy, and leaves nothing stuck.

use crate::support::{redis_url, sh, wait_for, FaultyLink, TestEnv};
use common::{JobId, JobState};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A job that appends `<its pid> <n>` to `log` every 100 ms, 60 times, then succeeds: two
/// copies running at once interleave their lines.
fn ticking(log: &std::path::Path) -> common::JobSpec {
    let script = format!(
        "for i in $(seq 1 60); do echo \"$$ $i\" >> {log}; sleep 0.1; done",
        log = log.display()
    );
    sh("ticking", &script)
}

/// The pids in `log`, one per run of consecutive lines: a pid seen in two runs means two
/// copies ran at the same time.
fn runs(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs: Vec<String> = Vec::new();
    for line in text.lines() {
        let pid = line.split_whitespace().next().unwrap_or_default().to_string();
        if runs.last() != Some(&pid) {
            runs.push(pid);
        }
    }
    runs
}

async fn lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_worker_cut_off_from_redis_stops_its_job_before_another_copy_starts() {
    let env = TestEnv::new().await;
    let log = env.path("ticks");
    let id: JobId = env
        .queue
        .enqueue_batch(vec![ticking(&log)])
        .await
        .unwrap()
        .ids
        .remove(0);
    cut_off_the_first_copy(&env, &id, &log).await;
}

/// The same for a job of a big batch, which waits as a pending record until its claim
/// gives it a hash (lua/lib.lua).
#[tokio::test(flavor = "multi_thread")]
async fn a_live_worker_cut_off_from_redis_stops_a_job_of_a_big_batch_before_another_copy_starts() {
    use redis::AsyncCommands;
    let env = TestEnv::new().await;
    let log = env.path("ticks");
    let mut specs = vec![ticking(&log)];
    specs.extend((0..39).map(|i| sh(&format!("quick-{i}"), "true")));
    let id: JobId = env.queue.enqueue_batch(specs).await.unwrap().ids.remove(0);
    let mut con = env.raw_redis().await;
    let record: bool = con
        .hexists(env.queue.keys().pending(), id.as_str())
        .await
        .unwrap();
    assert!(record, "the batch's jobs wait as records");
    cut_off_the_first_copy(&env, &id, &log).await;
}

/// A worker takes the job (which ticks into `log`), loses Redis for longer than its lease
/// while the job runs, and another worker recovers it: the two copies run one after the
/// other, and the job succeeds once.
async fn cut_off_the_first_copy(env: &TestEnv, id: &JobId, log: &std::path::Path) {
    let target = redis_url().trim_start_matches("redis://").to_string();
    let link = FaultyLink::to(&target).await;
    // The cut-off worker takes the job first.
    let _cut_off = env.worker_via(&link.redis_url(), &["--id", "cut-off"]);
    wait_for("the first copy to tick", LONG, || {
        let log = log.to_path_buf();
        async move { (lines(&log).await >= 2).then_some(()) }
    })
    .await;
    // A partition longer than the lease (2.5 s): the worker can neither heartbeat nor report.
    link.cut();
    let _other = env.worker(&["--id", "other"]);
    let rec = wait_for(
        "the job to be recovered and run by the other worker",
        LONG,
        || {
            let q = env.queue.clone();
            let id = id.clone();
            async move {
                q.get(&id)
                    .await
                    .unwrap()
                    .filter(|r| r.state == JobState::Running && r.worker.as_deref() == Some("other"))
            }
        },
    )
    .await;
    assert_eq!(rec.attempt, 2, "the lost attempt counts");
    // The partition heals while the second copy runs.
    link.restore();
    let done = env.wait_state(id, JobState::Succeeded, LONG).await;
    let runs = runs(log);
    assert_eq!(
        runs.len(),
        2,
        "two copies, one after the other, never interleaved: {runs:?}"
    );
    assert_ne!(runs[0], runs[1]);
    let successes = done
        .events
        .iter()
        .filter(|e| e.state == JobState::Succeeded)
        .count();
    assert_eq!(successes, 1, "{:?}", done.events);
    assert_eq!(done.worker.as_deref(), Some("other"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_claim_reply_does_not_leave_the_job_running_forever() {
    // A Redis of its own, so that the worker's blocked wait is the only one it lists.
    let redis = crate::servers::PrivateRedis::start().await;
    let mut env = TestEnv::new().await;
    env.queue = common::queue::RedisQueue::connect(&redis.url, &env.ns)
        .await
        .unwrap();
    let link = FaultyLink::to(&format!("127.0.0.1:{}", redis.port)).await;
    // A lease long enough that the worker does not fence itself while replies are lost
    // (it would then claim nothing): its claim goes out and is never answered. A long
    // idle wait, so that replies are muted while the worker is blocked in it: then the
    // enqueue's wake-up is what sends the claim. (Muted while an idle claim of its own is
    // on its way, the worker would wait for that reply instead, and claim nothing.)
    let worker = env.worker_via(
        &link.redis_url(),
        &["--id", "deaf", "--heartbeat-ttl", "20s", "--idle-timeout", "10s"],
    );
    let raw = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    wait_for("the worker to block in its wait for work", LONG, || {
        let mut raw = raw.clone();
        async move {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut raw)
                .await
                .ok()?;
            // Blocked for at most 3 s of its 10: the wait has 7 s to go.
            clients
                .lines()
                .any(|l| {
                    l.contains("cmd=blpop")
                        && l.split_whitespace()
                            .find_map(|f| f.strip_prefix("idle="))
                            .and_then(|v| v.parse::<u64>().ok())
                            .is_some_and(|idle| idle <= 3)
                })
                .then_some(())
        }
    })
    .await;
    // Replies are dropped from now on: the claim runs in Redis, its answer never arrives.
    link.mute();
    let id: JobId = env
        .queue
        .enqueue_batch(vec![sh("lost-reply", "true")])
        .await
        .unwrap()
        .ids
        .remove(0);
    env.wait_state(&id, JobState::Running, LONG).await;
    // The connection dies with the claim call unanswered (a reset), then works again.
    link.cut();
    link.unmute();
    link.restore();
    let done = env
        .wait_state(&id, JobState::Succeeded, Duration::from_secs(30))
        .await;
    assert!(
        done.events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("not running there"))),
        "the lease nothing ran was handed back: {:?}\n{}",
        done.events,
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_redis_keeps_refusing_does_not_hold_up_the_others() {
    use redis::AsyncCommands;
    let env = TestEnv::new().await;
    let gate = |name: &str| env.path(name);
    let wait_for_gate = |name: &str| format!("while [ ! -e {} ]; do sleep 0.05; done", gate(name).display());
    let ids = env
        .queue
        .enqueue_batch(vec![
            sh("poisoned", &wait_for_gate("a")),
            sh("fine", &wait_for_gate("b")),
        ])
        .await
        .unwrap()
        .ids;
    let mut worker = env.worker(&["--concurrency", "2"]);
    for id in &ids {
        env.wait_state(id, JobState::Running, LONG).await;
    }
    // Something else overwrites the first job's hash: its end can never be recorded.
    let mut con = env.raw_redis().await;
    let _: () = con
        .set(env.queue.keys().job(&ids[0]), "not a hash")
        .await
        .unwrap();
    std::fs::write(gate("a"), "").unwrap();
    wait_for("the refused report to be logged", LONG, || {
        let log = worker.log();
        async move { log.contains("cannot record the attempt's end").then_some(()) }
    })
    .await;
    // The second job ends while the first one's report is refused: it is settled at once.
    std::fs::write(gate("b"), "").unwrap();
    env.wait_state(&ids[1], JobState::Succeeded, Duration::from_secs(10))
        .await;
    // The poisoned one is set aside (dead-lettered) rather than leased forever.
    wait_for("the poisoned lease to be set aside", LONG, || {
        let q = env.queue.clone();
        let poisoned = ids[0].to_string();
        async move {
            let dead = q.dead_letters().await.unwrap();
            dead.contains(&poisoned).then_some(())
        }
    })
    .await;
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preemption_victim_cut_off_in_its_grace_stops_before_another_copy_starts() {
    let env = TestEnv::new().await;
    let mut config = crate::preemption::one_gpu();
    // A grace far longer than the lease.
    config.preemption.grace_secs = Some(120);
    env.queue.set_admission(&config).await.unwrap();
    let target = redis_url().trim_start_matches("redis://").to_string();
    let link = FaultyLink::to(&target).await;
    let log = env.path("ticks");
    let term = env.path("term");
    let ran = env.path("ran");
    // The first attempt ignores SIGTERM and keeps ticking (it is in its grace); the next
    // ticks five times and succeeds.
    let script = format!(
        "n=5; if [ ! -e {ran} ]; then touch {ran}; n=600; trap 'touch {term}' TERM; fi; \
         for i in $(seq 1 $n); do echo \"$$ $i\" >> {log}; sleep 0.1; done",
        ran = ran.display(),
        term = term.display(),
        log = log.display()
    );
    let mut victim = sh("victim", &script);
    victim.resources.gpus = 1;
    victim.priority = common::Priority::Background;
    let id: JobId = env.queue.enqueue_batch(vec![victim]).await.unwrap().ids.remove(0);
    let _cut_off = env.worker_via(&link.redis_url(), &["--id", "cut-off", "--gpus", "0"]);
    wait_for("the first copy to tick", LONG, || {
        let log = log.clone();
        async move { (lines(&log).await >= 2).then_some(()) }
    })
    .await;
    let mut urgent = sh("urgent", "echo fixed");
    urgent.resources.gpus = 1;
    urgent.priority = common::Priority::Urgent;
    let preemptor = env.queue.enqueue_batch(vec![urgent]).await.unwrap().ids.remove(0);
    wait_for("the victim to get SIGTERM", LONG, || {
        let term = term.clone();
        async move { term.exists().then_some(()) }
    })
    .await;
    // Cut off in its grace: the worker fences itself and must stop the victim now, not
    // after the grace, because the reaper is about to hand the job to another worker.
    link.cut();
    let _other = env.worker(&["--id", "other", "--gpus", "1"]);
    env.wait_state(&preemptor, JobState::Succeeded, LONG).await;
    let done = env.wait_state(&id, JobState::Succeeded, LONG).await;
    assert_eq!(done.worker.as_deref(), Some("other"));
    let runs = runs(&log);
    assert_eq!(
        runs.len(),
        2,
        "two copies, one after the other, never interleaved: {runs:?}"
    );
    link.restore();
}
