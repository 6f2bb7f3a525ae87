//! The job store, over both backends: every test runs once on SQLite and once on
//! PostgreSQL (a fresh database each).

use crate::servers::PrivateRedis;
use crate::support::{sh, stderr, stdout, wait_for, TestEnv};
use common::queue::{Outcome, RedisQueue};
use common::store::JobStore;
use common::{JobId, JobSpec, JobState, ListFilter, Priority, WorkerId, WorkerInfo};
use scheduler::store_sync::{drain::drain_all, reconcile::reconcile};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Generates `NAME::sqlite` and `NAME::postgres` tests calling `NAME(url)`.
macro_rules! over_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                let path = std::env::temp_dir().join(format!("gpuq-store-{}.db", uuid::Uuid::new_v4().simple()));
                super::$name(&common::store::sqlite_url(&path)).await;
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                let db = crate::support::TestDatabase::postgres().await;
                super::$name(&db.url).await;
            }
        }
    )*};
}

over_both_stores!(
    migrations_run_on_an_empty_database,
    success_is_recorded_in_order,
    failure_retry_and_dead_letter_are_recorded,
    cancellations_are_recorded,
    replayed_outbox_entries_change_nothing,
    an_enqueue_entry_is_applied_once_across_drainers_killed_part_way,
    a_redis_wipe_is_repaired_by_reconcile,
    a_sigkilled_worker_leaves_a_consistent_history,
    concurrent_workers_and_drainers_keep_one_row_per_job,
    finished_jobs_leave_redis_but_not_the_store,
    budgets_warn_and_refuse_at_enqueue,
    cost_reports_total_recorded_attempts,
    preempted_attempts_are_billed_and_their_losses_reported_apart,
    restored_jobs_keep_their_deferred_and_retrying_state,
    dead_jobs_leave_redis_after_their_own_retention,
);

fn spec(name: &str, p: Priority) -> JobSpec {
    let mut s = JobSpec::new(name, "research", vec!["true".into()]);
    s.priority = p;
    s
}

async fn live_worker(queue: &RedisQueue) -> WorkerId {
    let w = WorkerId::generate("store-test");
    let info = WorkerInfo::starting(&w, "t", "t", 1);
    queue.heartbeat(&info, Duration::from_secs(60)).await.unwrap();
    w
}

fn states(events: &[common::JobEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.state.as_str()).collect()
}

async fn migrations_run_on_an_empty_database(url: &str) {
    let store = JobStore::open(url).await.unwrap();
    assert_eq!(store.counts().await.unwrap(), (0, 0));
    store.close().await;
    let again = JobStore::open(url).await.unwrap();
    assert_eq!(
        again.counts().await.unwrap(),
        (0, 0),
        "migrating twice is a no-op"
    );
}

async fn success_is_recorded_in_order(url: &str) {
    let env = TestEnv::new().await;
    let store = JobStore::open(url).await.unwrap();
    let id = env
        .queue
        .enqueue_batch(vec![spec("ok", Priority::Urgent)])
        .await
        .unwrap()
        .ids
        .remove(0);
    let w = live_worker(&env.queue).await;
    env.queue.claim(&w).await.unwrap().unwrap();
    env.queue.finish(&w, &id, &Outcome::Succeeded).await.unwrap();
    assert_eq!(drain_all(&env.queue, &store, None, None).await.unwrap(), 3);
    assert_eq!(
        env.queue.outbox_len().await.unwrap(),
        0,
        "drained entries leave the outbox"
    );

    let rec = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempt, rec.priority),
        (JobState::Succeeded, 1, Priority::Urgent)
    );
    assert_eq!(rec.spec.name, "ok");
    assert_eq!(rec.worker.as_deref(), Some(w.as_str()));
    assert!(rec.started_at.is_some() && rec.finished_at >= rec.started_at);
    assert_eq!(states(&rec.events), ["queued", "running", "succeeded"]);
    // The store's history is the same as Redis's, transition for transition.
    assert_eq!(rec.events, env.record(&id).await.events);
    // The dashboard's per-minute count of ended jobs, for all teams and for one.
    let minute = rec.finished_at.unwrap() / 60_000 * 60_000;
    let ended = vec![(minute, JobState::Succeeded, 1)];
    assert_eq!(store.ended_per_minute(0, None).await.unwrap(), ended);
    assert_eq!(
        store.ended_per_minute(0, Some(&rec.spec.team)).await.unwrap(),
        ended
    );
    assert!(store
        .ended_per_minute(0, Some("nobody"))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .ended_per_minute(minute + 60_000, None)
        .await
        .unwrap()
        .is_empty());
}

async fn failure_retry_and_dead_letter_are_recorded(url: &str) {
    let env = TestEnv::new().await;
    let store = JobStore::open(url).await.unwrap();
    let mut s = spec("flaky", Priority::Normal);
    s.max_attempts = 2;
    let id = env.queue.enqueue_batch(vec![s]).await.unwrap().ids.remove(0);
    let w = live_worker(&env.queue).await;
    let fail = Outcome::Failed {
        exit_code: Some(7),
        reason: "exited with code 7".into(),
        retry_after: Duration::ZERO,
    };
    env.queue.claim(&w).await.unwrap().unwrap();
    env.queue.finish(&w, &id, &fail).await.unwrap();
    drain_all(&env.queue, &store, None, None).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().state, JobState::Retrying);

    env.queue.claim(&w).await.unwrap().unwrap();
    env.queue.finish(&w, &id, &fail).await.unwrap();
    drain_all(&env.queue, &store, None, None).await.unwrap();
    let rec = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempt, rec.exit_code),
        (JobState::Dead, 2, Some(7))
    );
    assert_eq!(rec.reason.as_deref(), Some("exited with code 7"));
    assert_eq!(
        states(&rec.events),
        ["queued", "running", "failed", "retrying", "queued", "running", "failed", "dead"]
    );

    env.queue.retry(&id).await.unwrap();
    drain_all(&env.queue, &store, None, None).await.unwrap();
    let rec = store.get(&id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempt_limit), (JobState::Queued, 4));
}

async fn cancellations_are_recorded(url: &str) {
    let env = TestEnv::new().await;
    let store = JobStore::open(url).await.unwrap();
    let ids = env
        .queue
        .enqueue_batch(vec![
            spec("running", Priority::Normal),
            spec("queued", Priority::Normal),
        ])
        .await
        .unwrap()
        .ids;
    let w = live_worker(&env.queue).await;
    env.queue.claim(&w).await.unwrap().unwrap();
    env.queue.cancel(&ids[1], "operator").await.unwrap();
    env.queue.cancel(&ids[0], "operator").await.unwrap();
    env.queue.finish(&w, &ids[0], &Outcome::Cancelled).await.unwrap();
    drain_all(&env.queue, &store, None, None).await.unwrap();
    let running = store.get(&ids[0]).await.unwrap().unwrap();
    let queued = store.get(&ids[1]).await.unwrap().unwrap();
    assert_eq!(states(&running.events), ["queued", "running", "cancelled"]);
    assert_eq!(states(&queued.events), ["queued", "cancelled"]);
    assert_eq!(queued.reason.as_deref(), Some("operator"));
    assert!(running.finished_at.is_some() && queued.finished_at.is_some());
}

async fn replayed_outbox_entries_change_nothing(url: &str) {
    // `serve` killed after committing a batch but before deleting it from the outbox.
    let env = TestEnv::new().await;
    let store = JobStore::open(url).await.unwrap();
    let specs: Vec<JobSpec> = (0..20)
        .map(|i| spec(&format!("j{i}"), Priority::Background))
        .collect();
    env.queue.enqueue_batch(specs).await.unwrap();
    let w = live_worker(&env.queue).await;
    let first = env.queue.claim(&w).await.unwrap().unwrap();
    env.queue
        .finish(&w, &first.id, &Outcome::Succeeded)
        .await
        .unwrap();
    let batch = env.queue.read_outbox(1000).await.unwrap();
    // As the drainer does: enqueue entries carry no spec; it comes from the job hashes.
    let ids: Vec<String> = batch.iter().map(|e| e.job.to_string()).collect();
    let specs: std::collections::HashMap<String, String> = ids
        .iter()
        .cloned()
        .zip(env.queue.specs(&ids).await.unwrap())
        .filter_map(|(id, spec)| Some((id, spec?)))
        .collect();
    assert_eq!(store.apply(&batch, &specs, None).await.unwrap().len(), 22);
    let before = store.counts().await.unwrap();
    // Replaying the whole batch, then an older part of it after newer state: no change.
    drain_all(&env.queue, &store, None, None).await.unwrap();
    store.apply(&batch[..5], &Default::default(), None).await.unwrap();
    assert_eq!(store.counts().await.unwrap(), before);
    assert_eq!(before, (20, 22));
    assert_eq!(
        store.get(&first.id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
}

/// An enqueue of many jobs is one outbox entry per 1,000 (see lua/enqueue.lua). A drainer
/// that stops part-way through one (its one-by-one fallback applies an entry's jobs
/// separately), and a `serve` SIGKILLed while it drains, leave every job in the store
/// once, with one history row, and the outbox and its count empty.
async fn an_enqueue_entry_is_applied_once_across_drainers_killed_part_way(url: &str) {
    use redis::AsyncCommands;
    let env = TestEnv::with_store(url).await;
    let store = JobStore::open(url).await.unwrap();
    let specs: Vec<JobSpec> = (0..2_500)
        .map(|i| spec(&format!("b{i}"), Priority::Normal))
        .collect();
    let ids = env.queue.enqueue_batch(specs).await.unwrap().ids;
    let mut con = env.raw_redis().await;
    let entries: u64 = redis::cmd("XLEN")
        .arg(env.queue.keys().outbox())
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(entries, 3, "1,000 jobs an entry");
    assert_eq!(
        env.queue.outbox_len().await.unwrap(),
        2_500,
        "counted in transitions"
    );

    // A read takes whole entries: here the first, with its 1,000 jobs in enqueue order.
    let first = env.queue.read_outbox(1000).await.unwrap();
    assert_eq!(first.len(), 1000);
    assert!(first
        .iter()
        .all(|e| e.entry == first[0].entry && e.entry_jobs == 1000));
    let named: Vec<&JobId> = first.iter().map(|e| &e.job).collect();
    assert_eq!(named, ids[..1000].iter().collect::<Vec<_>>());
    // Part of the entry reaches the store, then the drainer dies before its ack.
    let part = &first[..400];
    let specs: std::collections::HashMap<String, String> = part
        .iter()
        .map(|e| e.job.to_string())
        .zip(
            env.queue
                .specs(&part.iter().map(|e| e.job.to_string()).collect::<Vec<_>>())
                .await
                .unwrap(),
        )
        .filter_map(|(id, spec)| Some((id, spec?)))
        .collect();
    assert_eq!(store.apply(part, &specs, None).await.unwrap().len(), 400);
    assert_eq!(
        env.queue.outbox_len().await.unwrap(),
        2_500,
        "nothing acknowledged"
    );

    // A `serve` killed while it drains, at whatever point it has reached, then another.
    let mut serve = env.serve();
    wait_for("the drain to start", LONG, || async {
        (store.counts().await.unwrap().0 > 400).then_some(())
    })
    .await;
    serve.kill();
    let _serve = env.serve();
    wait_for("the outbox to drain", LONG, || async {
        (env.queue.outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;
    assert_eq!(store.counts().await.unwrap(), (2_500, 2_500), "each job once");
    let left: Option<u64> = con.get(env.queue.keys().outbox_batched()).await.unwrap();
    assert_eq!(left, None, "the count went with the entries");
    for id in [&ids[0], &ids[999], &ids[1000], &ids[2499]] {
        let stored = store.get(id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Queued);
        assert_eq!(stored.events, env.record(id).await.events, "{id}");
    }
}

async fn a_redis_wipe_is_repaired_by_reconcile(url: &str) {
    let redis = PrivateRedis::start().await;
    let queue = RedisQueue::connect(&redis.url, "wipe").await.unwrap();
    let store = JobStore::open(url).await.unwrap();
    let mut expected: [Vec<String>; 3] = Default::default();
    let mut specs = Vec::new();
    for i in 0..30 {
        let p = Priority::ALL[(i * 5) % 3];
        let mut s = spec(&format!("w{i}"), p);
        s.id = Some(format!("wipe-{i:02}").parse().unwrap());
        specs.push(s);
        expected[(i * 5) % 3].push(format!("wipe-{i:02}"));
    }
    // Half in one batch, half one by one, so FIFO spans batches.
    let rest = specs.split_off(15);
    queue.enqueue_batch(specs).await.unwrap();
    for s in rest {
        queue.enqueue_batch(vec![s]).await.unwrap();
    }
    // One job is running when Redis is wiped: its lease goes with the wipe, so it must
    // come back too (at the head: it was the oldest urgent job).
    let w = live_worker(&queue).await;
    let running = queue.claim(&w).await.unwrap().unwrap();
    assert_eq!(running.id.as_str(), expected[0][0]);
    // The store meets this Redis and records its identity.
    let report = reconcile(&queue, &store, false, None, None).await.unwrap();
    assert_eq!(report.restored, 0);

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    assert_eq!(queue.status().await.unwrap().queued(), 0);

    // The wiped Redis lost its identity too: the store cannot tell it from another
    // Redis, so it restores nothing on its own and says what it would restore.
    let report = reconcile(&queue, &store, false, None, None).await.unwrap();
    assert_eq!((report.restored, report.would_restore), (0, 30));
    assert_eq!(queue.status().await.unwrap().queued(), 0);
    let report = reconcile(&queue, &store, true, None, None).await.unwrap();
    assert_eq!(report.restored, 30);
    assert_eq!(
        reconcile(&queue, &store, false, None, None)
            .await
            .unwrap()
            .restored,
        0,
        "reconcile is idempotent, and the adopted Redis is known now"
    );
    let w = live_worker(&queue).await;
    let mut order = Vec::new();
    while let Some(job) = queue.claim(&w).await.unwrap() {
        order.push(job.id.to_string());
    }
    assert_eq!(
        order,
        expected.concat(),
        "every job is back, in priority then FIFO order"
    );
    let rec = queue.get(&running.id).await.unwrap().unwrap();
    assert_eq!(rec.attempt, 2, "the attempt lost with the wipe counts");
}

async fn a_sigkilled_worker_leaves_a_consistent_history(url: &str) {
    let env = TestEnv::with_store(url).await;
    let _serve = env.serve();
    let (id, _) = env.kill_a_worker_mid_job().await;
    let _rescuer = env.worker(&[]);
    env.wait_state(&id, JobState::Succeeded, LONG).await;

    let store = JobStore::open(url).await.unwrap();
    let rec = wait_for("the store to catch up", LONG, || async {
        store
            .get(&id)
            .await
            .unwrap()
            .filter(|r| r.state == JobState::Succeeded)
    })
    .await;
    assert_eq!(
        states(&rec.events),
        ["queued", "running", "queued", "running", "succeeded"]
    );
    assert!(rec.events[2]
        .detail
        .as_deref()
        .unwrap()
        .contains("heartbeat expired"));
    assert_eq!(rec.attempt, 2);
    assert_eq!(rec.events, env.record(&id).await.events);
}

async fn concurrent_workers_and_drainers_keep_one_row_per_job(url: &str) {
    let env = TestEnv::with_store(url).await;
    let _drainers = [env.serve(), env.serve()];
    let _workers: Vec<_> = (0..3).map(|_| env.worker(&["--concurrency", "8"])).collect();
    let specs: Vec<JobSpec> = (0..60)
        .map(|i| {
            let mut s = sh(&format!("c{i}"), if i % 4 == 0 { "exit 3" } else { "true" });
            s.max_attempts = 2;
            s
        })
        .collect();
    let ids = env.queue.enqueue_batch(specs).await.unwrap().ids;
    for (i, id) in ids.iter().enumerate() {
        let want = if i % 4 == 0 {
            JobState::Dead
        } else {
            JobState::Succeeded
        };
        env.wait_state(id, want, LONG).await;
    }
    let store = JobStore::open(url).await.unwrap();
    wait_for("the outbox to drain", LONG, || async {
        (env.queue.outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;
    let mut redis_events = 0;
    for id in &ids {
        let live = env.record(id).await;
        let stored = store.get(id).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.attempt), (live.state, live.attempt));
        assert_eq!(stored.events, live.events, "complete history for {id}");
        redis_events += live.events.len() as u64;
    }
    assert_eq!(store.counts().await.unwrap(), (60, redis_events));
}

async fn finished_jobs_leave_redis_but_not_the_store(url: &str) {
    let env = TestEnv::with_store(url).await;
    let store = JobStore::open(url).await.unwrap();
    let mut a = spec("a", Priority::Normal);
    a.team = "vision".into();
    a.id = Some("keep-a".parse().unwrap());
    let mut b = spec("b", Priority::Urgent);
    b.id = Some("keep-b".parse().unwrap());
    env.queue.enqueue_batch(vec![a, b]).await.unwrap();
    let w = live_worker(&env.queue).await;
    for _ in 0..2 {
        let job = env.queue.claim(&w).await.unwrap().unwrap();
        env.queue.finish(&w, &job.id, &Outcome::Succeeded).await.unwrap();
    }
    // Retention as `serve` runs it: candidates from Redis, confirmed by the store.
    let expire = || async {
        let ended = env
            .queue
            .finished_before(common::now_ms() + 1, 0, 100)
            .await
            .unwrap();
        let ids: Vec<String> = ended.iter().map(|(id, _)| id.clone()).collect();
        let recorded: Vec<(String, u64)> = store
            .recorded_ends(&ids)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _, at)| (id, at))
            .collect();
        env.queue.expire_recorded(&recorded).await.unwrap()
    };
    // Not yet in the store: retention must not remove what only Redis holds.
    assert_eq!(expire().await, 0);
    drain_all(&env.queue, &store, None, None).await.unwrap();
    assert_eq!(expire().await, 2);
    let id: JobId = "keep-a".parse().unwrap();
    assert!(env.queue.get(&id).await.unwrap().is_none(), "gone from Redis");
    // The ids were the client's: enqueueing them again is still refused while the store
    // has the jobs (idempotency outlives Redis retention).
    let mut again = spec("a", Priority::Normal);
    again.id = Some("keep-a".parse().unwrap());
    let report = env.queue.enqueue_batch(vec![again]).await.unwrap();
    assert_eq!((report.created, report.existing.clone()), (0, vec![id.clone()]));
    assert!(env.queue.get(&id).await.unwrap().is_none(), "nothing was written");

    let out = env.scheduler(&["show", "keep-a", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (shown["state"].as_str(), shown["events"].as_array().unwrap().len()),
        (Some("succeeded"), 3)
    );

    let list = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["list", "--json"];
        full.extend_from_slice(args);
        let out = env.scheduler(&full);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(&["--team", "vision"]), ["keep-a"]);
    assert_eq!(list(&["--priority", "p0", "--state", "succeeded"]), ["keep-b"]);
    assert_eq!(list(&["--since", "1h"]).len(), 2);
    assert!(list(&["--until", "1h"]).is_empty());
    assert_eq!(
        list(&["--limit", "1"]).len() + list(&["--limit", "1", "--offset", "1"]).len(),
        2
    );
    let filter = ListFilter {
        model_type: Some("generic".into()),
        limit: 10,
        ..ListFilter::default()
    };
    assert_eq!(store.list(&filter).await.unwrap().len(), 2);

    // Store retention is its own setting.
    assert_eq!(
        store.purge_finished_before(common::now_ms() + 1).await.unwrap(),
        2
    );
    assert_eq!(store.counts().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn an_unreachable_store_is_named_with_its_password_masked() {
    let env = TestEnv::with_store("postgres://gpuq:s3cret@127.0.0.1:1/jobs").await;
    let out = env.scheduler(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot open job store at postgres://gpuq:***@127.0.0.1:1/jobs"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let out = TestEnv::with_store("mysql://x@h/db")
        .await
        .scheduler(&["reconcile"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queue_keeps_working_while_the_store_is_down_and_nothing_is_lost() {
    let db = crate::support::TestDatabase::postgres().await;
    let server = db
        .url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let link = crate::support::FaultyLink::to(&server).await;
    let via_link = db.url.replace(&server, &format!("127.0.0.1:{}", link.port));
    let env = TestEnv::with_store(&via_link).await;
    let serve = env.serve();
    let _worker = env.worker(&["--concurrency", "4"]);
    let store = JobStore::open(&db.url).await.unwrap();

    let before = env
        .queue
        .enqueue_batch((0..5).map(|i| sh(&format!("b{i}"), "true")).collect())
        .await
        .unwrap()
        .ids;
    wait_for("the store to record the first jobs", LONG, || async {
        (store.counts().await.unwrap().0 == 5).then_some(())
    })
    .await;

    link.cut();
    let during = env
        .queue
        .enqueue_batch((0..10).map(|i| sh(&format!("d{i}"), "true")).collect())
        .await
        .unwrap()
        .ids;
    for id in during.iter().chain(&before) {
        env.wait_state(id, JobState::Succeeded, LONG).await;
    }
    assert!(
        env.queue.outbox_len().await.unwrap() >= 30,
        "transitions wait in the outbox"
    );
    wait_for("the outage to be reported", LONG, || async {
        serve
            .log()
            .contains("cannot write transitions to the job store")
            .then_some(())
    })
    .await;

    link.restore();
    wait_for("the outbox to drain after the outage", LONG, || async {
        (env.queue.outbox_len().await.unwrap() == 0).then_some(())
    })
    .await;
    // The drainer says so once the write that emptied the outbox has returned: just
    // after the outbox is seen empty, not necessarily before.
    wait_for("the resumption to be reported", LONG, || async {
        serve.log().contains("job store writes resumed").then_some(())
    })
    .await;
    for id in during.iter().chain(&before) {
        let rec = store.get(id).await.unwrap().unwrap();
        assert_eq!(states(&rec.events), ["queued", "running", "succeeded"], "{id}");
    }
    assert_eq!(store.counts().await.unwrap(), (15, 45));
}

/// Prices without an off-peak window, so the figures do not depend on when the test runs.
fn flat_pricing(env: &TestEnv) -> std::path::PathBuf {
    let default = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cost/pricing.default.toml"
    ))
    .unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in default.lines() {
        if line.starts_with('[') {
            skipping = line.trim() == "[off_peak]";
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    let path = env.path("pricing.toml");
    std::fs::write(&path, out).unwrap();
    path
}

async fn budgets_warn_and_refuse_at_enqueue(url: &str) {
    let mut env = TestEnv::with_store(url).await;
    env.pricing = Some(flat_pricing(&env));
    // 10 epochs of resnet50 on 2 x a100: ~6,430 s at $7.40/h, about $13.22.
    let resnet = |name: &str| -> Vec<String> {
        let args = [
            "enqueue",
            "--name",
            name,
            "--team",
            "vision",
            "--model-type",
            "resnet50",
            "--gpus",
            "2",
        ];
        let tail = ["--gpu-type", "a100", "--epochs", "10", "--", "true"];
        args.iter().chain(tail.iter()).map(|s| s.to_string()).collect()
    };
    let run = |a: Vec<String>| env.scheduler(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = env.scheduler(&["budget", "set", "20", "--team", "vision"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let _serve = env.serve();

    let out = run(resnet("first"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("warning"),
        "66% of the budget is fine: {}",
        stderr(&out)
    );
    let store = JobStore::open(url).await.unwrap();
    wait_for("the store to see the first job", LONG, || async {
        (store.counts().await.unwrap().0 == 1).then_some(())
    })
    .await;

    // $13.22 committed + $13.22 new = 132% of $20: refused, nothing enqueued.
    let out = run(resnet("second"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("$20.00") && err.contains("vision"), "{err}");
    assert_eq!(env.queue.status().await.unwrap().queued(), 1);

    // With $35 the same job fits, at 76%: a warning.
    assert!(env
        .scheduler(&["budget", "set", "35", "--team", "vision"])
        .status
        .success());
    let out = run(resnet("second"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    wait_for("the store to see both jobs", LONG, || async {
        (store.counts().await.unwrap().0 == 2).then_some(())
    })
    .await;

    // A batch that would cross the budget is refused whole.
    let spec = r#"{"name":"b","team":"vision","model_type":"resnet50","epochs":10,"command":["true"],"resources":{"gpus":2,"gpu_type":"a100"}}"#;
    let out = env.scheduler_with_stdin(&["batch", "-"], Some(&format!("{spec}\n{spec}\n")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(env.queue.status().await.unwrap().queued(), 2);
    // Other teams are not affected.
    let out = env.scheduler(&["enqueue", "--name", "other", "--team", "nlp", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Actual cost is recorded when an attempt ends and counts as spent.
    for job in env
        .queue
        .list(&ListFilter {
            limit: 10,
            ..ListFilter::default()
        })
        .await
        .unwrap()
    {
        env.queue.cancel(&job.id, "test").await.unwrap();
    }
    let mut timed = sh("costly", "sleep 1");
    timed.team = "vision".into();
    let id = env.queue.enqueue_batch(vec![timed]).await.unwrap().ids.remove(0);
    let _w = env.worker(&[]);
    env.wait_state(&id, JobState::Succeeded, LONG).await;
    let shown = wait_for("the attempt's cost to be recorded", LONG, || async {
        let out = env.scheduler(&["budget", "show", "--team", "vision", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v[0]["spent_micros"].as_i64()? > 0).then_some(v)
    })
    .await;
    assert_eq!(shown[0]["committed_micros"], 0, "{shown}");
}

async fn cost_reports_total_recorded_attempts(url: &str) {
    let env = TestEnv::with_store(url).await;
    let store = JobStore::open(url).await.unwrap();
    // A fixed price per attempt by team, so the totals can be computed by hand.
    let pricer: &common::store::Pricer = &|spec: &str, _start: u64, _end: u64| {
        let spec: JobSpec = serde_json::from_str(spec).ok()?;
        Some(if spec.team == "vision" {
            1_500_000
        } else {
            2_250_000
        })
    };
    // The urgent job is claimed first and fails once.
    let mut flaky = spec("flaky", Priority::Urgent);
    flaky.team = "vision".into();
    let mut once = spec("once", Priority::Normal);
    once.team = "nlp".into();
    env.queue.enqueue_batch(vec![flaky, once]).await.unwrap();
    let w = live_worker(&env.queue).await;
    let fail = Outcome::Failed {
        exit_code: Some(1),
        reason: "x".into(),
        retry_after: Duration::ZERO,
    };
    let first = env.queue.claim(&w).await.unwrap().unwrap();
    env.queue.finish(&w, &first.id, &fail).await.unwrap();
    while let Some(job) = env.queue.claim(&w).await.unwrap() {
        env.queue.finish(&w, &job.id, &Outcome::Succeeded).await.unwrap();
    }
    drain_all(&env.queue, &store, None, Some(pricer)).await.unwrap();
    // Replaying the outbox must not record a cost twice.
    assert_eq!(store.attempt_costs(0, u64::MAX / 2).await.unwrap().len(), 3);
    // Per job: the flaky one's two attempt runs, $1.50 each.
    assert_eq!(store.job_spent(first.id.as_str()).await.unwrap(), (3_000_000, 2));
    assert_eq!(store.job_spent("no-such-job").await.unwrap(), (0, 0));

    let out = env.scheduler(&["cost", "report", "--from", "1h", "--by", "team", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let money = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let line = |team: &str| {
        r["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["group"] == team)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (money(&line("vision")["cost"]), line("vision")["runs"].as_u64()),
        (3.0, Some(2))
    );
    assert_eq!(
        (money(&line("nlp")["cost"]), line("nlp")["runs"].as_u64()),
        (2.25, Some(1))
    );
    assert_eq!(money(&r["total"]["cost"]), 5.25);
    let csv = stdout(&env.scheduler(&["cost", "report", "--from", "1h", "--csv"]));
    assert!(csv.lines().count() >= 4, "{csv}");
}

async fn preempted_attempts_are_billed_and_their_losses_reported_apart(url: &str) {
    let env = TestEnv::with_store(url).await;
    let store = JobStore::open(url).await.unwrap();
    // One unit per second of an attempt.
    let pricer: &common::store::Pricer =
        &|_spec: &str, start: u64, end: u64| Some((end.saturating_sub(start) * 1000) as i64);
    env.queue
        .set_admission(&crate::preemption::one_gpu())
        .await
        .unwrap();
    let w = live_worker(&env.queue).await;
    let mut sweep = spec("sweep", Priority::Background);
    sweep.resources.gpus = 1;
    let victim = env.queue.enqueue_batch(vec![sweep]).await.unwrap().ids.remove(0);
    // Preempted twice without a checkpoint: both attempts carry the same number, both
    // are billed, and each lost all of its run.
    for round in 0..2 {
        let job = env.queue.claim(&w).await.unwrap().unwrap();
        assert_eq!((job.id.clone(), job.attempt), (victim.clone(), 1));
        let mut urgent = spec(&format!("urgent-{round}"), Priority::Urgent);
        urgent.resources.gpus = 1;
        let j = env.queue.enqueue_batch(vec![urgent]).await.unwrap().ids.remove(0);
        assert!(env.queue.claim(&w).await.unwrap().is_none());
        let started = env.queue.preempt().await.unwrap();
        assert_eq!(started[0].victims, vec![victim.clone()]);
        env.queue
            .release(&w, &victim, common::queue::PREEMPTED)
            .await
            .unwrap();
        let next = env.queue.claim(&w).await.unwrap().unwrap();
        assert_eq!(next.id, j);
        env.queue.finish(&w, &j, &Outcome::Succeeded).await.unwrap();
    }
    let last = env.queue.claim(&w).await.unwrap().unwrap();
    env.queue.finish(&w, &last.id, &Outcome::Succeeded).await.unwrap();
    drain_all(&env.queue, &store, None, Some(pricer)).await.unwrap();
    let costs = store.attempt_costs(0, u64::MAX / 2).await.unwrap();
    let victims: Vec<_> = costs.iter().filter(|c| c.job_id == victim.as_str()).collect();
    assert_eq!(
        victims.len(),
        3,
        "two preempted attempts and the last: {victims:?}"
    );
    assert_eq!(victims.iter().filter(|c| c.preempted).count(), 2);
    let mut lost_ms = 0;
    for v in victims.iter().filter(|c| c.preempted) {
        // One GPU, no checkpoint: everything since the start (Redis's clock for both).
        assert_eq!(v.lost_gpu_ms, v.run_ms, "{v:?}");
        assert_eq!(v.lost_micros, v.cost_micros, "{v:?}");
        lost_ms += v.lost_gpu_ms;
    }
    let out = env.scheduler(&["cost", "report", "--from", "1d", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["preemption"]["attempts"], 2, "{r}");
    let hours = r["preemption"]["lost_gpu_hours"].as_f64().unwrap();
    assert_eq!(
        hours,
        (lost_ms as f64 / 3_600_000.0 * 1000.0).round() / 1000.0,
        "{r}"
    );
    let text = stdout(&env.scheduler(&["cost", "report", "--from", "1d"]));
    assert!(text.contains("preemption losses"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_the_store_refuses_is_set_aside_and_the_drain_goes_on() {
    use sqlx::Connection;
    let db = crate::support::TestDatabase::postgres().await;
    let env = TestEnv::with_store(&db.url).await;
    let store = JobStore::open(&db.url).await.unwrap();
    // The store refuses one job for a reason an operator can fix (a trigger standing in
    // for a constraint), and another for one nobody can: PostgreSQL text holds no NUL.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for sql in [
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
           IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ] {
        sqlx::query(sql).execute(&mut admin).await.unwrap();
    }
    let ids = env
        .queue
        .enqueue_batch(vec![
            spec("before", Priority::Normal),
            spec("poison", Priority::Normal),
            spec("nul", Priority::Normal),
            spec("after", Priority::Normal),
        ])
        .await
        .unwrap()
        .ids;
    // Enqueue refuses a NUL in a name now; an older writer's job could still hold one.
    {
        use redis::AsyncCommands;
        let mut con = env.raw_redis().await;
        let key = env.queue.keys().job(&ids[2]);
        let spec: String = con.hget(&key, "spec").await.unwrap();
        let spec = spec.replace(r#""name":"nul""#, r#""name":"nul\u0000byte""#);
        assert!(spec.contains("u0000"), "{spec}");
        let _: () = con.hset(&key, "spec", spec).await.unwrap();
    }
    drain_all(&env.queue, &store, None, None).await.unwrap();
    assert_eq!(
        env.queue.outbox_len().await.unwrap(),
        0,
        "the drain went past them"
    );
    assert_eq!(env.queue.refused_len().await.unwrap(), 2);
    for (id, held) in ids.iter().zip([true, false, false, true]) {
        assert_eq!(store.get(id).await.unwrap().is_some(), held, "{id}");
    }
    // Later transitions keep flowing.
    let w = live_worker(&env.queue).await;
    let job = env.queue.claim(&w).await.unwrap().unwrap();
    assert_eq!(job.id, ids[0]);
    env.queue.finish(&w, &job.id, &Outcome::Succeeded).await.unwrap();
    drain_all(&env.queue, &store, None, None).await.unwrap();
    assert_eq!(
        store.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Succeeded
    );

    let out = env.scheduler(&["store", "errors"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(listed.contains("2 transitions the job store refused"), "{listed}");
    assert!(
        listed.contains(ids[1].as_str()) && listed.contains("poison refused"),
        "{listed}"
    );

    // Fixed, then replayed: the poison job is taken, the NUL one stays refused (exit 1).
    sqlx::query("DROP TRIGGER refuse ON jobs")
        .execute(&mut admin)
        .await
        .unwrap();
    let out = env.scheduler(&["store", "retry"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 transitions written to the job store, 1 still refused"));
    assert_eq!(store.get(&ids[1]).await.unwrap().unwrap().state, JobState::Queued);
    assert_eq!(env.queue.refused_len().await.unwrap(), 1);
    // Retention keeps a job whose end the store never got.
    assert!(store.get(&ids[2]).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_does_not_restore_into_a_redis_it_has_never_seen() {
    let first = TestEnv::new().await;
    for name in ["a", "b", "c"] {
        let out = first.scheduler(&["enqueue", "--name", name, "--", "true"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = first.scheduler(&["reconcile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Another Redis (here another namespace: its own identity) with the same default store.
    let mut second = TestEnv::new().await;
    second.database_url = first.database_url.clone();
    let out = second.scheduler(&["reconcile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("0 jobs restored"), "{said}");
    assert!(
        said.contains("not restored: the store holds 3 unfinished jobs"),
        "{said}"
    );
    assert_eq!(second.queue.status().await.unwrap().queued(), 0);
    // serve does not adopt it either.
    let mut serve = second.serve();
    wait_for("serve to reconcile", LONG, || {
        let log = serve.log();
        async move { log.contains("nothing restored").then_some(()) }
    })
    .await;
    serve.kill();
    assert_eq!(second.queue.status().await.unwrap().queued(), 0);
    let out = second.scheduler(&["reconcile", "--adopt"]);
    assert!(stdout(&out).contains("3 jobs restored"), "{}", stdout(&out));
    assert_eq!(second.queue.status().await.unwrap().queued(), 3);
}

async fn restored_jobs_keep_their_deferred_and_retrying_state(url: &str) {
    let redis = PrivateRedis::start().await;
    let queue = RedisQueue::connect(&redis.url, "states").await.unwrap();
    let store = JobStore::open(url).await.unwrap();
    let later = common::now_ms() + 3_600_000;
    let mut deferred = spec("deferred", Priority::Normal);
    deferred.not_before = Some(later);
    let ids = queue
        .enqueue_batch(vec![deferred, spec("flaky", Priority::Normal)])
        .await
        .unwrap()
        .ids;
    let w = live_worker(&queue).await;
    let job = queue.claim(&w).await.unwrap().unwrap();
    let failed = Outcome::Failed {
        exit_code: Some(1),
        reason: "exited with code 1".into(),
        retry_after: Duration::from_secs(1800),
    };
    queue.finish(&w, &job.id, &failed).await.unwrap();
    reconcile(&queue, &store, false, None, None).await.unwrap();
    let due_before = retry_due(&redis.url, &ids[1]).await;

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    let report = reconcile(&queue, &store, true, None, None).await.unwrap();
    assert_eq!(report.restored, 2);
    assert_eq!(
        queue.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Deferred
    );
    assert_eq!(
        queue.get(&ids[1]).await.unwrap().unwrap().state,
        JobState::Retrying
    );
    assert_eq!(retry_due(&redis.url, &ids[0]).await, Some(later));
    assert_eq!(
        retry_due(&redis.url, &ids[1]).await,
        due_before,
        "the backoff is kept"
    );
    assert_eq!(queue.status().await.unwrap().queued(), 0, "neither runs early");
}

async fn retry_due(url: &str, id: &JobId) -> Option<u64> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("{states}:delayed")
        .arg(id.as_str())
        .query_async(&mut con)
        .await
        .unwrap();
    score.map(|s| s as u64)
}

async fn dead_jobs_leave_redis_after_their_own_retention(url: &str) {
    use scheduler::store_sync::retention::{run_once, Retention};
    let env = TestEnv::with_store(url).await;
    let store = JobStore::open(url).await.unwrap();
    let mut s = spec("doomed", Priority::Normal);
    s.max_attempts = 1;
    let ids = env
        .queue
        .enqueue_batch(vec![s, spec("fine", Priority::Normal)])
        .await
        .unwrap()
        .ids;
    let w = live_worker(&env.queue).await;
    for outcome in [
        Outcome::Fatal {
            reason: "broken".into(),
        },
        Outcome::Succeeded,
    ] {
        let job = env.queue.claim(&w).await.unwrap().unwrap();
        env.queue.finish(&w, &job.id, &outcome).await.unwrap();
    }
    let ended = env.record(&ids[1]).await.finished_at.unwrap();
    wait_for("a millisecond to pass", LONG, || async {
        (common::now_ms() > ended + 1).then_some(())
    })
    .await;
    let keep = |redis_ms: u64, dead_ms: u64| Retention {
        redis: Duration::from_millis(redis_ms),
        dead: Duration::from_millis(dead_ms),
        store: Duration::ZERO,
    };
    // Not in the store yet: nothing goes.
    assert_eq!(run_once(&env.queue, &store, keep(1, 1)).await.unwrap(), (0, 0));
    drain_all(&env.queue, &store, None, None).await.unwrap();
    // Past the retention of finished jobs, not of dead ones: only the success goes.
    assert_eq!(
        run_once(&env.queue, &store, keep(1, 3_600_000)).await.unwrap(),
        (1, 0)
    );
    assert!(env.queue.get(&ids[1]).await.unwrap().is_none());
    assert_eq!(env.queue.dead_letters().await.unwrap(), [ids[0].to_string()]);
    // Past the dead jobs' own retention: it leaves Redis and the dead-letter list.
    assert_eq!(run_once(&env.queue, &store, keep(1, 1)).await.unwrap(), (1, 0));
    assert!(env.queue.get(&ids[0]).await.unwrap().is_none());
    assert!(env.queue.dead_letters().await.unwrap().is_empty());
    assert_eq!(
        store.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Dead,
        "the store keeps it"
    );
}
