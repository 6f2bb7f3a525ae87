//! The queue contract, exercised through the library against a real Redis.

use crate::support::{sh, wait_for, TestEnv};
use common::queue::{EndedAttempt, FinishState, Outcome};
use common::{Error, JobId, JobSpec, JobState, Priority, WorkerId, WorkerInfo};
use std::time::Duration;

fn spec(name: &str, p: Priority) -> JobSpec {
    let mut s = JobSpec::new(name, "test", vec!["true".into()]);
    s.priority = p;
    s
}

fn ended(id: &JobId, attempt: Option<u32>, outcome: Outcome) -> EndedAttempt {
    EndedAttempt {
        id: id.clone(),
        attempt,
        claim_token: None,
        outcome,
    }
}

fn info(w: &WorkerId) -> WorkerInfo {
    WorkerInfo::starting(w, "test", "test", 1)
}

/// A worker identity whose heartbeat is alive for the whole test.
async fn live_worker(env: &TestEnv) -> WorkerId {
    let w = WorkerId::generate("live");
    env.queue
        .heartbeat(&info(&w), Duration::from_secs(60))
        .await
        .unwrap();
    w
}

#[tokio::test]
async fn strict_priority_then_fifo() {
    let env = TestEnv::new().await;
    let order = [
        ("b1", Priority::Background),
        ("n1", Priority::Normal),
        ("u1", Priority::Urgent),
        ("n2", Priority::Normal),
        ("b2", Priority::Background),
        ("u2", Priority::Urgent),
    ];
    for (name, p) in order {
        env.queue.enqueue_batch(vec![spec(name, p)]).await.unwrap();
    }
    let w = live_worker(&env).await;
    let mut claimed = Vec::new();
    while let Some(job) = env.queue.claim(&w).await.unwrap() {
        claimed.push(job.spec.name.clone());
        // A P0 that arrives while P1s wait is next, ahead of them.
        if job.spec.name == "u2" {
            env.queue
                .enqueue_batch(vec![spec("u3", Priority::Urgent)])
                .await
                .unwrap();
        }
    }
    assert_eq!(claimed, ["u1", "u2", "u3", "n1", "n2", "b1", "b2"]);
}

#[tokio::test]
async fn enqueue_is_idempotent_by_id() {
    let env = TestEnv::new().await;
    let mut a = spec("first", Priority::Normal);
    a.id = Some("fixed-id".parse().unwrap());
    let mut b = spec("second", Priority::Urgent);
    b.id = a.id.clone();
    let r1 = env.queue.enqueue_batch(vec![a]).await.unwrap();
    let r2 = env.queue.enqueue_batch(vec![b]).await.unwrap();
    assert_eq!((r1.created, r2.created), (1, 0));
    assert_eq!(
        r2.existing,
        vec![JobId::try_from("fixed-id".to_string()).unwrap()]
    );
    let rec = env.record(&r1.ids[0]).await;
    assert_eq!(rec.spec.name, "first", "the second enqueue must change nothing");
    assert_eq!(rec.priority, Priority::Normal);
    let status = env.queue.status().await.unwrap();
    assert_eq!(status.queued(), 1);
}

/// A Redis that lost its scripts (restarted, or a new primary) gets enqueue.lua loaded
/// again by the next enqueue, which lands once.
#[tokio::test]
async fn an_enqueue_loads_its_script_again_when_redis_lost_it() {
    let env = TestEnv::new().await;
    let mut con = env.raw_redis().await;
    let batch = |tag: &str| {
        (0..40)
            .map(|i| spec(&format!("{tag}-{i}"), Priority::Normal))
            .collect::<Vec<_>>()
    };
    env.queue.enqueue_batch(batch("before")).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    let after = env.queue.enqueue_batch(batch("after")).await.unwrap();
    assert_eq!(after.created, 40);
    assert_eq!(env.queue.status().await.unwrap().queued(), 80);
    let job = env.record(&after.ids[39]).await;
    assert_eq!(job.spec.name, "after-39");
}

#[tokio::test]
async fn batch_is_all_or_nothing_and_handles_thousands() {
    let env = TestEnv::new().await;
    let mut specs: Vec<JobSpec> = (0..5000)
        .map(|i| spec(&format!("j{i}"), Priority::Background))
        .collect();
    specs[3000].epochs = 0;
    let err = env.queue.enqueue_batch(specs.clone()).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec(ref e) if e.field == "epochs"),
        "{err}"
    );
    assert!(
        env.keys().is_empty(),
        "nothing may be written for a bad batch: {:?}",
        env.keys()
    );

    specs[3000].epochs = 1;
    let report = env.queue.enqueue_batch(specs).await.unwrap();
    assert_eq!(report.created, 5000);
    assert_eq!(env.queue.status().await.unwrap().priorities[2].depth, 5000);
}

#[tokio::test]
async fn depth_age_and_position() {
    let env = TestEnv::new().await;
    let mut ids = Vec::new();
    for (name, p) in [
        ("u1", Priority::Urgent),
        ("u2", Priority::Urgent),
        ("n1", Priority::Normal),
    ] {
        ids.extend(env.queue.enqueue_batch(vec![spec(name, p)]).await.unwrap().ids);
    }
    ids.extend(
        env.queue
            .enqueue_batch(vec![spec("n2", Priority::Normal)])
            .await
            .unwrap()
            .ids,
    );
    ids.extend(
        env.queue
            .enqueue_batch(vec![spec("b1", Priority::Background)])
            .await
            .unwrap()
            .ids,
    );
    let status = env.queue.status().await.unwrap();
    let depths: Vec<u64> = status.priorities.iter().map(|p| p.depth).collect();
    assert_eq!(depths, [2, 2, 1]);
    assert!(status.priorities.iter().all(|p| p.oldest_enqueued_at.is_some()));
    let positions: Vec<Option<u64>> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(env.record(id).await.position);
        }
        v
    };
    assert_eq!(positions, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
}

#[tokio::test]
async fn a_worker_dying_at_any_step_loses_no_job() {
    // The only states a SIGKILL can leave are the ones between atomic scripts: claimed but
    // not started, running, finished but not acked. All three look the same in Redis: a
    // lease in the dead worker's in-flight hash. The reaper must hand each back.
    let env = TestEnv::new().await;
    let ids = env
        .queue
        .enqueue_batch(vec![
            spec("a", Priority::Normal),
            spec("b", Priority::Normal),
            spec("c", Priority::Normal),
        ])
        .await
        .unwrap()
        .ids;
    let ghost = WorkerId::generate("ghost");
    env.queue
        .heartbeat(&info(&ghost), Duration::from_millis(300))
        .await
        .unwrap();
    let first = env.queue.claim(&ghost).await.unwrap().unwrap();
    let second = env.queue.claim(&ghost).await.unwrap().unwrap();
    assert_eq!((first.attempt, &first.id, &second.id), (1, &ids[0], &ids[1]));

    assert_eq!(
        env.queue.reap().await.unwrap(),
        0,
        "a live worker's leases are left alone"
    );
    wait_for(
        "the ghost's heartbeat to expire",
        Duration::from_secs(5),
        || async { (env.queue.workers().await.unwrap().is_empty()).then_some(()) },
    )
    .await;
    assert_eq!(env.queue.reap().await.unwrap(), 2);

    // Back at the head of the queue, in their original order, with the lost attempt counted.
    let w = live_worker(&env).await;
    let again: Vec<_> = [
        env.queue.claim(&w).await.unwrap().unwrap(),
        env.queue.claim(&w).await.unwrap().unwrap(),
        env.queue.claim(&w).await.unwrap().unwrap(),
    ]
    .into_iter()
    .map(|j| (j.id, j.attempt))
    .collect();
    assert_eq!(
        again,
        [(ids[0].clone(), 2), (ids[1].clone(), 2), (ids[2].clone(), 1)]
    );
    let rec = env.record(&ids[0]).await;
    assert!(rec
        .events
        .iter()
        .any(|e| e.detail.as_deref().is_some_and(|d| d.contains("lost"))));

    // The dead worker's late ack is refused: its heartbeat is gone (fenced), and once it
    // heartbeats again, its lease is gone (stale): the new attempt owns the job.
    let late = env
        .queue
        .finish(&ghost, &ids[0], &Outcome::Succeeded)
        .await
        .unwrap();
    assert_eq!(late, FinishState::Fenced);
    let back = env
        .queue
        .heartbeat_leases(&info(&ghost), Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!back.existed && back.leases.is_empty(), "{back:?}");
    let late = env
        .queue
        .finish(&ghost, &ids[0], &Outcome::Succeeded)
        .await
        .unwrap();
    assert_eq!(late, FinishState::Stale);
    assert_eq!(env.record(&ids[0]).await.state, JobState::Running);
    // A report naming an older attempt is stale even from the lease's own worker.
    let old = EndedAttempt {
        id: ids[0].clone(),
        attempt: Some(1),
        claim_token: None,
        outcome: Outcome::Succeeded,
    };
    let states = env.queue.finish_many(&w, &[old]).await.unwrap();
    assert_eq!(states.into_iter().next().unwrap().unwrap(), FinishState::Stale);
    assert_eq!(
        env.record(&ids[0]).await.state,
        JobState::Running,
        "attempt 2 still runs"
    );
}

#[tokio::test]
async fn failed_attempts_back_off_then_dead_letter_and_retry_revives() {
    let env = TestEnv::new().await;
    let mut s = spec("flaky", Priority::Normal);
    s.max_attempts = 2;
    let id = env.queue.enqueue_batch(vec![s]).await.unwrap().ids.remove(0);
    let w = live_worker(&env).await;
    let fail = Outcome::Failed {
        exit_code: Some(3),
        reason: "exit 3".into(),
        retry_after: Duration::from_millis(300),
    };

    let job = env.queue.claim(&w).await.unwrap().unwrap();
    assert_eq!(
        env.queue.finish(&w, &job.id, &fail).await.unwrap(),
        FinishState::Moved(JobState::Retrying)
    );
    assert_eq!(
        env.queue.claim(&w).await.unwrap(),
        None,
        "a retry waits out its backoff"
    );
    let job = wait_for("the retry to become due", Duration::from_secs(5), || async {
        env.queue.claim(&w).await.unwrap()
    })
    .await;
    assert_eq!(job.attempt, 2);
    assert_eq!(
        env.queue.finish(&w, &job.id, &fail).await.unwrap(),
        FinishState::Moved(JobState::Dead)
    );
    assert_eq!(env.queue.dead_letters().await.unwrap(), vec![id.to_string()]);
    let rec = env.record(&id).await;
    let states: Vec<&str> = rec.events.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(
        states,
        ["queued", "running", "failed", "retrying", "queued", "running", "failed", "dead"]
    );
    assert_eq!(rec.exit_code, Some(3));

    env.queue.retry(&id).await.unwrap();
    assert!(env.queue.dead_letters().await.unwrap().is_empty());
    let job = env.queue.claim(&w).await.unwrap().unwrap();
    assert_eq!((job.attempt, job.attempt_limit), (3, 4));
    let err = env.queue.retry(&id).await.unwrap_err();
    assert!(
        matches!(err, Error::Conflict { .. }),
        "a running job cannot be retried: {err}"
    );
}

#[tokio::test]
async fn serve_promoter_moves_due_retries_back() {
    let env = TestEnv::new().await;
    let id = env
        .queue
        .enqueue_batch(vec![spec("x", Priority::Urgent)])
        .await
        .unwrap()
        .ids
        .remove(0);
    let w = live_worker(&env).await;
    env.queue.claim(&w).await.unwrap().unwrap();
    let fail = Outcome::Failed {
        exit_code: None,
        reason: "boom".into(),
        retry_after: Duration::ZERO,
    };
    env.queue.finish(&w, &id, &fail).await.unwrap();
    assert_eq!(env.queue.promote_due().await.unwrap(), 1);
    let rec = env.record(&id).await;
    assert_eq!((rec.state, rec.position), (JobState::Queued, Some(0)));
}

#[tokio::test]
async fn cancel_removes_queued_and_flags_running() {
    let env = TestEnv::new().await;
    let ids = env
        .queue
        .enqueue_batch(vec![
            spec("run", Priority::Normal),
            spec("queued", Priority::Normal),
        ])
        .await
        .unwrap()
        .ids;
    let w = live_worker(&env).await;
    let running = env.queue.claim(&w).await.unwrap().unwrap();
    assert_eq!(
        env.queue.cancel(&ids[1], "test").await.unwrap(),
        JobState::Cancelled
    );
    assert_eq!(
        env.queue.claim(&w).await.unwrap(),
        None,
        "a cancelled job never starts"
    );
    assert_eq!(
        env.queue.cancel(&running.id, "test").await.unwrap(),
        JobState::Running
    );
    assert_eq!(
        env.queue
            .cancel_requested(std::slice::from_ref(&running.id))
            .await
            .unwrap(),
        [true]
    );
    env.queue
        .finish(&w, &running.id, &Outcome::Cancelled)
        .await
        .unwrap();
    assert_eq!(env.record(&running.id).await.state, JobState::Cancelled);
    let missing: JobId = "no-such-job".parse().unwrap();
    assert!(matches!(
        env.queue.cancel(&missing, "x").await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn release_hands_back_without_counting_the_attempt() {
    let env = TestEnv::new().await;
    let ids = env
        .queue
        .enqueue_batch(vec![spec("a", Priority::Normal), spec("b", Priority::Normal)])
        .await
        .unwrap()
        .ids;
    let w = live_worker(&env).await;
    let job = env.queue.claim(&w).await.unwrap().unwrap();
    env.queue.release(&w, &job.id, "shutdown").await.unwrap();
    let again = env.queue.claim(&w).await.unwrap().unwrap();
    assert_eq!(
        (again.id.clone(), again.attempt),
        (ids[0].clone(), 1),
        "back at the head, attempt not counted"
    );
}

#[tokio::test]
async fn every_key_lives_under_the_namespace_hash_tag() {
    let env = TestEnv::new().await;
    let id = env
        .queue
        .enqueue_batch(vec![sh("k", "true")])
        .await
        .unwrap()
        .ids
        .remove(0);
    let w = live_worker(&env).await;
    env.queue.claim(&w).await.unwrap().unwrap();
    env.queue
        .append_log(&id, &["line".into()], None, 10)
        .await
        .unwrap();
    let keys = env.keys();
    assert!(keys.len() >= 6, "{keys:?}");
    let tag = format!("{{{}}}:", env.ns);
    assert!(keys.iter().all(|k| k.starts_with(&tag)), "{keys:?}");
}

#[tokio::test]
async fn a_job_with_a_start_time_waits_deferred_until_it_is_due() {
    let env = TestEnv::new().await;
    let mut later = spec("later", Priority::Urgent);
    later.not_before = Some(common::now_ms() + 400);
    let mut never = spec("never", Priority::Urgent);
    never.not_before = Some(common::now_ms() + 3_600_000);
    let ids = env.queue.enqueue_batch(vec![later, never]).await.unwrap().ids;
    assert_eq!(env.record(&ids[0]).await.state, JobState::Deferred);
    let w = live_worker(&env).await;
    assert_eq!(
        env.queue.claim(&w).await.unwrap(),
        None,
        "not before its start time"
    );
    assert_eq!(
        env.queue.cancel(&ids[1], "changed my mind").await.unwrap(),
        JobState::Cancelled
    );
    let job = wait_for(
        "the deferred job to come due",
        Duration::from_secs(10),
        || async { env.queue.claim(&w).await.unwrap() },
    )
    .await;
    assert_eq!((job.id.clone(), job.attempt), (ids[0].clone(), 1));
    let states: Vec<&str> = env
        .record(&ids[0])
        .await
        .events
        .iter()
        .map(|e| e.state.as_str())
        .collect();
    assert_eq!(states, ["deferred", "queued", "running"]);
}

#[tokio::test]
async fn a_batch_skips_ids_it_repeats_or_redis_has_across_chunks() {
    // The enqueue script checks existence once per chunk of 1000 keys; a repeat inside
    // the batch, or an existing id deep in a later chunk, must still be skipped.
    let env = TestEnv::new().await;
    let mut old = spec("old", Priority::Normal);
    old.id = Some("old-1".parse().unwrap());
    env.queue.enqueue_batch(vec![old]).await.unwrap();
    let mut batch: Vec<JobSpec> = (0..2500)
        .map(|i| {
            let mut s = spec(&format!("j{i}"), Priority::Normal);
            s.id = Some(format!("j-{i}").parse().unwrap());
            s
        })
        .collect();
    batch[1800].id = Some("old-1".parse().unwrap());
    batch[2100].id = Some("j-5".parse().unwrap());
    let r = env.queue.enqueue_batch(batch).await.unwrap();
    assert_eq!(r.created, 2498);
    assert_eq!(
        r.existing,
        vec![
            JobId::try_from("old-1".to_string()).unwrap(),
            JobId::try_from("j-5".to_string()).unwrap()
        ]
    );
    assert_eq!(env.record(&"old-1".parse().unwrap()).await.spec.name, "old");
    assert_eq!(env.record(&"j-5".parse().unwrap()).await.spec.name, "j5");
    // FIFO across chunks: the old job first, then the batch in order.
    let w = live_worker(&env).await;
    let first: Vec<String> = env
        .queue
        .claim_many(&w, 1002)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id.to_string())
        .collect();
    assert_eq!(first.len(), 1000, "a claim takes at most 1000 jobs");
    assert_eq!(first[..3], ["old-1", "j-0", "j-1"]);
    assert_eq!(first[999], "j-998");
    assert_eq!(env.queue.status().await.unwrap().queued(), 1499);
}

#[tokio::test]
async fn a_report_of_many_attempts_settles_each_on_its_own() {
    let env = TestEnv::new().await;
    let mut flaky = spec("flaky", Priority::Normal);
    flaky.max_attempts = 3;
    let ids = env
        .queue
        .enqueue_batch(vec![
            spec("ok", Priority::Normal),
            flaky,
            spec("broken", Priority::Normal),
        ])
        .await
        .unwrap()
        .ids;
    let w = live_worker(&env).await;
    let claimed = env.queue.claim_many(&w, 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let fail = |code| Outcome::Failed {
        exit_code: Some(code),
        reason: format!("exited with code {code}"),
        retry_after: Duration::from_secs(60),
    };
    // One of the reported jobs is no longer this worker's (as after its lease was reaped).
    let stranger: JobId = "not-held".parse().unwrap();
    let states = env
        .queue
        .finish_many(
            &w,
            &[
                ended(&ids[0], Some(1), Outcome::Succeeded),
                ended(&stranger, None, Outcome::Succeeded),
                ended(&ids[1], Some(1), fail(3)),
                ended(
                    &ids[2],
                    None,
                    Outcome::Fatal {
                        reason: "no such program".into(),
                    },
                ),
                // Named twice in one report: settled once.
                ended(&ids[0], Some(1), Outcome::Succeeded),
            ],
        )
        .await
        .unwrap();
    let states: Vec<FinishState> = states.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        states,
        [
            FinishState::Moved(JobState::Succeeded),
            FinishState::Stale,
            FinishState::Moved(JobState::Retrying),
            FinishState::Moved(JobState::Dead),
            FinishState::Stale,
        ]
    );
    let ok = env.record(&ids[0]).await;
    let history: Vec<_> = ok
        .events
        .iter()
        .map(|e| (e.state, e.attempt, e.worker.clone()))
        .collect();
    assert_eq!(
        history,
        [
            (JobState::Queued, 0, None),
            (JobState::Running, 1, Some(w.to_string())),
            (JobState::Succeeded, 1, Some(w.to_string())),
        ]
    );
    let flaky = env.record(&ids[1]).await;
    assert_eq!((flaky.state, flaky.exit_code), (JobState::Retrying, Some(3)));
    let last = flaky.events.last().unwrap();
    assert_eq!(last.detail.as_deref(), Some("next attempt in 60000 ms"));
    assert!(flaky
        .events
        .iter()
        .any(|e| e.state == JobState::Failed && e.detail.as_deref() == Some("exited with code 3")));
    assert_eq!(
        env.record(&ids[2]).await.reason.as_deref(),
        Some("no such program")
    );
    // Every lease is released, and a second report of the same attempts is refused.
    let again = env
        .queue
        .finish_many(&w, &[ended(&ids[0], Some(1), Outcome::Succeeded)])
        .await
        .unwrap();
    assert_eq!(
        again.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [FinishState::Stale]
    );
}

#[tokio::test]
async fn the_index_lists_newest_first_forgets_expired_jobs_and_upgrades_from_a_sorted_set() {
    use redis::AsyncCommands;
    let env = TestEnv::new().await;
    let first = env
        .queue
        .enqueue_batch(
            (0..3)
                .map(|i| spec(&format!("old{i}"), Priority::Normal))
                .collect(),
        )
        .await
        .unwrap()
        .ids;
    // Rewrite the index as the earlier layout had it: a sorted set by enqueue time.
    let mut con = env.raw_redis().await;
    let index = env.queue.keys().jobs();
    let _: () = con.del(&index).await.unwrap();
    for (score, id) in first.iter().enumerate() {
        let _: () = con.zadd(&index, id.as_str(), score).await.unwrap();
    }
    // The next enqueue converts it in place, keeping the order.
    let newest = env
        .queue
        .enqueue_batch(vec![spec("new", Priority::Normal)])
        .await
        .unwrap()
        .ids
        .remove(0);
    let listed: Vec<JobId> = env
        .queue
        .list(&common::ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        listed,
        [
            newest.clone(),
            first[2].clone(),
            first[1].clone(),
            first[0].clone()
        ]
    );

    // The two oldest end and are drained to the store; retention removes them from Redis
    // and from the head of the index.
    let w = live_worker(&env).await;
    for id in &first[..2] {
        let job = env.queue.claim(&w).await.unwrap().unwrap();
        assert_eq!(&job.id, id);
        env.queue.finish(&w, id, &Outcome::Succeeded).await.unwrap();
    }
    let outbox = env.queue.read_outbox(1000).await.unwrap();
    env.queue.ack_outbox(&outbox).await.unwrap();
    // The store holds them with the same end times (this test plays the store).
    let ended = env
        .queue
        .finished_before(common::now_ms() + 1000, 0, 100)
        .await
        .unwrap();
    let removed = env.queue.expire_recorded(&ended).await.unwrap();
    assert_eq!(removed, 2);
    assert_eq!(
        env.queue.job_ids().await.unwrap(),
        [first[2].to_string(), newest.to_string()]
    );
}

#[tokio::test]
async fn history_kept_by_earlier_versions_is_still_shown() {
    use redis::AsyncCommands;
    let env = TestEnv::new().await;
    let id = env
        .queue
        .enqueue_batch(vec![spec("old", Priority::Normal)])
        .await
        .unwrap()
        .ids
        .remove(0);
    // Earlier versions kept the history as JSON in a list of its own.
    let mut con = env.raw_redis().await;
    let _: () = con
        .rpush(
            env.queue.keys().events(&id),
            r#"{"state":"running","at":5,"attempt":1,"worker":"old-worker"}"#,
        )
        .await
        .unwrap();
    let rec = env.record(&id).await;
    let history: Vec<_> = rec.events.iter().map(|e| (e.state, e.worker.clone())).collect();
    assert_eq!(
        history,
        [
            (JobState::Queued, None),
            (JobState::Running, Some("old-worker".to_string()))
        ]
    );
}

#[tokio::test]
async fn an_unreadable_job_is_set_aside_without_losing_its_neighbours() {
    // A script's writes are not undone when it fails, so one job hash that something else
    // overwrote must not abort a claim or a report half-way through a batch.
    use redis::AsyncCommands;
    let env = TestEnv::new().await;
    let ids = env
        .queue
        .enqueue_batch((0..3).map(|i| spec(&format!("j{i}"), Priority::Normal)).collect())
        .await
        .unwrap()
        .ids;
    let mut con = env.raw_redis().await;
    let _: () = con
        .set(env.queue.keys().job(&ids[1]), "not a hash")
        .await
        .unwrap();
    let w = live_worker(&env).await;
    let claimed: Vec<JobId> = env
        .queue
        .claim_many(&w, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(claimed, [ids[0].clone(), ids[2].clone()]);
    let dead: Vec<String> = con.lrange(env.queue.keys().dead(), 0, -1).await.unwrap();
    assert_eq!(dead, [ids[1].to_string()]);

    // Now the first job's hash is overwritten while it runs: its end cannot be recorded,
    // so it keeps its lease, and the other job's end is recorded all the same.
    let _: () = con
        .set(env.queue.keys().job(&ids[0]), "not a hash")
        .await
        .unwrap();
    let results = env
        .queue
        .finish_many(
            &w,
            &[
                ended(&ids[0], Some(1), Outcome::Succeeded),
                ended(&ids[2], Some(1), Outcome::Succeeded),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(results[0], Err(Error::Corrupt(_))), "{:?}", results[0]);
    assert_eq!(
        results[1].as_ref().unwrap(),
        &FinishState::Moved(JobState::Succeeded)
    );
    assert_eq!(env.record(&ids[2]).await.state, JobState::Succeeded);
    let leases: Vec<String> = con.hkeys(env.queue.keys().inflight(&w)).await.unwrap();
    assert_eq!(leases, [ids[0].to_string()]);
}

#[tokio::test]
async fn index_trimming_goes_past_an_old_job_that_is_still_kept() {
    let env = TestEnv::new().await;
    // The oldest job stays for a day (deferred); five after it run and end.
    let mut kept = spec("kept", Priority::Normal);
    kept.not_before = Some(common::now_ms() + 86_400_000);
    let kept = env.queue.enqueue_batch(vec![kept]).await.unwrap().ids.remove(0);
    let done = env
        .queue
        .enqueue_batch((0..5).map(|i| spec(&format!("d{i}"), Priority::Normal)).collect())
        .await
        .unwrap()
        .ids;
    let w = live_worker(&env).await;
    let mut ended_at = Vec::new();
    for _ in 0..5 {
        let job = env.queue.claim(&w).await.unwrap().unwrap();
        env.queue.finish(&w, &job.id, &Outcome::Succeeded).await.unwrap();
        let rec = env.queue.get(&job.id).await.unwrap().unwrap();
        ended_at.push((job.id.to_string(), rec.finished_at.unwrap()));
    }
    let fresh = env
        .queue
        .enqueue_batch(vec![spec("fresh", Priority::Normal)])
        .await
        .unwrap()
        .ids
        .remove(0);
    assert_eq!(env.queue.expire_recorded(&ended_at).await.unwrap(), 5);
    for id in &done {
        assert!(env.queue.get(id).await.unwrap().is_none());
    }
    assert_eq!(
        env.queue.job_ids().await.unwrap(),
        vec![kept.to_string(), fresh.to_string()],
        "the index keeps the live jobs, in order, and nothing else"
    );
}

/// A job's record without what differs between two jobs enqueued apart (ids, names,
/// times, and the position in the queue, which the wait's reason counts too).
fn comparable(r: &common::JobRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in ["id", "enqueued_at", "updated_at", "position", "waiting"] {
        o.remove(k);
    }
    let spec = o["spec"].as_object_mut().unwrap();
    spec.remove("id");
    spec.remove("name");
    for e in o["events"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("at");
    }
    v
}

/// A big batch's jobs wait as pending records, with no hash each (lua/lib.lua), until a
/// script changes them: they read, list, explain their wait, park in their group's lane,
/// cancel, refuse a second enqueue of their id, and are claimed once each, exactly as
/// jobs with hashes do.
#[tokio::test]
async fn a_big_batch_waits_as_records_that_read_and_move_like_job_hashes() {
    use redis::AsyncCommands;
    let env = TestEnv::new().await;
    let job = |name: &str| {
        let mut s = spec(name, Priority::Urgent);
        s.group = Some("sweep".into());
        s.group_max_running = Some(5);
        s.max_attempts = 4;
        s
    };
    let ids = env
        .queue
        .enqueue_batch_as((0..40).map(|i| job(&format!("big-{i}"))).collect(), "alice")
        .await
        .unwrap()
        .ids;
    let single = env
        .queue
        .enqueue_batch_as(vec![job("single")], "alice")
        .await
        .unwrap()
        .ids;
    let keys = env.queue.keys().clone();
    let mut con = env.raw_redis().await;
    let waiting: usize = con.hlen(keys.pending()).await.unwrap();
    assert_eq!(waiting, 40, "the batch's jobs are records");
    let heads: usize = con.hlen(keys.pending_heads()).await.unwrap();
    assert_eq!(heads, 2, "sharing one head (and its count)");
    let hashes: usize = con
        .exists(ids.iter().map(|id| keys.job(id)).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(hashes, 0, "and have no hash");
    let one: usize = con.exists(keys.job(&single[0])).await.unwrap();
    assert_eq!(one, 1, "a batch of one gets its hash");

    // Read, listed and explained as the job with a hash is.
    let a = env.queue.get(&ids[7]).await.unwrap().unwrap();
    let b = env.queue.get(&single[0]).await.unwrap().unwrap();
    assert_eq!(comparable(&a), comparable(&b));
    assert_eq!((a.state, a.attempt, a.attempt_limit), (JobState::Queued, 0, 4));
    assert_eq!(a.position, Some(7));
    assert_eq!(b.position, Some(40));
    assert_eq!(a.spec.name, "big-7");
    assert_eq!(a.events.len(), 1, "{:?}", a.events);
    assert_eq!(a.events[0].detail.as_deref(), Some("enqueued by alice"));
    let all = common::ListFilter {
        limit: 100,
        ..Default::default()
    };
    let listed = env.queue.list(&all).await.unwrap();
    assert_eq!(listed.len(), 41);
    let l = listed.iter().find(|r| r.id == ids[7]).unwrap();
    assert_eq!((l.state, &l.spec.name), (JobState::Queued, &a.spec.name));

    // Idempotent: the id of a record counts as taken, alone or in a big batch of ids the
    // client chose (which waits as records too).
    let mut again = job("again");
    again.id = Some(ids[3].clone());
    let report = env.queue.enqueue_batch(vec![again]).await.unwrap();
    assert_eq!(
        (report.created, report.existing.clone()),
        (0, vec![ids[3].clone()])
    );
    let chosen: Vec<JobSpec> = (0..40)
        .map(|i| {
            let mut s = spec(&format!("chosen-{i}"), Priority::Background);
            s.id = Some(format!("chosen-{i}").parse().unwrap());
            s
        })
        .collect();
    let first = env.queue.enqueue_batch(chosen.clone()).await.unwrap();
    assert_eq!(first.created, 40);
    let waiting: usize = con.hlen(keys.pending()).await.unwrap();
    assert_eq!(waiting, 80);
    let mut mixed = chosen[30..].to_vec();
    mixed.extend(ids[..30].iter().map(|id| {
        let mut s = job("again");
        s.id = Some(id.clone());
        s
    }));
    let second = env.queue.enqueue_batch(mixed).await.unwrap();
    assert_eq!((second.created, second.existing.len()), (0, 40), "{second:?}");
    for i in 0..40 {
        let id: JobId = format!("chosen-{i}").parse().unwrap();
        assert!(env.queue.cancel(&id, "cleared").await.is_ok());
    }

    // Cancelled from its record.
    assert_eq!(
        env.queue.cancel(&ids[0], "not needed").await.unwrap(),
        JobState::Cancelled
    );
    let c = env.queue.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    let states: Vec<JobState> = c.events.iter().map(|e| e.state).collect();
    assert_eq!(states, [JobState::Queued, JobState::Cancelled]);
    let waiting: usize = con.hlen(keys.pending()).await.unwrap();
    assert_eq!(waiting, 39, "the cancels gave theirs hashes");

    // Claimed five at a time (the group's cap), the rest parked in its lane as records.
    let w1 = live_worker(&env).await;
    let w2 = live_worker(&env).await;
    let mut claimed = std::collections::BTreeSet::new();
    let first = env.queue.claim_many(&w1, 100).await.unwrap();
    assert_eq!(first.len(), 5);
    assert!(env.queue.claim_many(&w2, 100).await.unwrap().is_empty());
    let parked = env.queue.get(&ids[20]).await.unwrap().unwrap();
    assert_eq!(
        parked.waiting.map(|w| w.to_string()).as_deref(),
        Some("group sweep at max-running 5")
    );
    let (mut worker, mut batch) = (&w1, first);
    while !batch.is_empty() {
        for j in &batch {
            assert!(claimed.insert(j.id.clone()), "{} claimed twice", j.id);
            let r = env.queue.get(&j.id).await.unwrap().unwrap();
            assert_eq!(
                (r.state, r.attempt, &r.spec.name),
                (JobState::Running, 1, &j.spec.name)
            );
            env.queue
                .finish(worker, &j.id, &Outcome::Succeeded)
                .await
                .unwrap();
        }
        worker = &w2;
        batch = env.queue.claim_many(worker, 100).await.unwrap();
    }
    let expected: std::collections::BTreeSet<JobId> = ids[1..].iter().chain(&single).cloned().collect();
    assert_eq!(claimed, expected, "every job but the cancelled one ran, once");
    let waiting: usize = con.hlen(keys.pending()).await.unwrap();
    assert_eq!(waiting, 0, "no record is left");
    let heads: usize = con.hlen(keys.pending_heads()).await.unwrap();
    assert_eq!(
        heads, 0,
        "and no head: each went with the last record that used it"
    );
}

#[tokio::test]
async fn a_resumable_batch_picks_up_where_it_stopped_with_any_chunk_size() {
    let env = TestEnv::new().await;
    let key = common::queue::BatchKey::of("operator", "", b"twelve jobs");
    let specs: Vec<JobSpec> = (0..12)
        .map(|i| spec(&format!("r{i}"), Priority::Normal))
        .collect();
    // The outbox bound stops the second chunk: the first 5 are in.
    let tight = env.queue.clone().with_outbox_limit(3);
    let first = tight
        .enqueue_resumable_as(specs.clone(), "operator", 5, &key)
        .await;
    assert!(
        matches!(first.failure, Some(Error::OutboxFull { .. })),
        "{:?}",
        first.failure
    );
    assert_eq!((first.chunks_landed, first.report.created), (1, 5));
    assert_eq!(env.queue.status().await.unwrap().queued(), 5);

    // Again, in chunks of another size: the 5 are reported as they are, the 7 others added.
    let second = env
        .queue
        .enqueue_resumable_as(specs.clone(), "operator", 4, &key)
        .await;
    assert!(second.failure.is_none(), "{:?}", second.failure);
    assert_eq!(second.report.created, 7);
    assert_eq!(second.report.existing, first.report.ids);
    assert_eq!(second.report.ids[..5], first.report.ids[..]);
    let ids: std::collections::HashSet<_> = second.report.ids.iter().collect();
    assert_eq!(ids.len(), 12);
    assert_eq!(env.queue.status().await.unwrap().queued(), 12);

    // And once more: nothing to add, the same ids in the same order.
    let third = env
        .queue
        .enqueue_resumable_as(specs.clone(), "operator", 5, &key)
        .await;
    assert!(third.failure.is_none(), "{:?}", third.failure);
    assert_eq!((third.report.created, &third.report.ids), (0, &second.report.ids));
    assert_eq!(env.queue.status().await.unwrap().queued(), 12);

    // Another batch key (another input, say) is another batch.
    let other = common::queue::BatchKey::of("operator", "", b"other jobs");
    let fourth = env.queue.enqueue_resumable_as(specs, "operator", 5, &other).await;
    assert_eq!(fourth.report.created, 12);
    assert_eq!(env.queue.status().await.unwrap().queued(), 24);
}

#[tokio::test]
async fn two_runs_of_one_resumable_batch_at_once_add_each_job_once() {
    let env = TestEnv::new().await;
    let key = common::queue::BatchKey::of("operator", "", b"raced");
    let n = 3_200;
    let specs: Vec<JobSpec> = (0..n).map(|i| spec(&format!("r{i}"), Priority::Normal)).collect();
    // Chunks of 32, whose records go staged: a hundred chances for the runs to meet.
    let run = |q: common::queue::RedisQueue, specs: Vec<JobSpec>, key: common::queue::BatchKey| {
        tokio::spawn(async move { q.enqueue_resumable_as(specs, "operator", 32, &key).await })
    };
    let a = run(env.queue.clone(), specs.clone(), key.clone());
    let b = run(env.queue.clone(), specs.clone(), key.clone());
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    for r in [&a, &b] {
        assert!(
            matches!(r.failure, None | Some(Error::BatchRace { .. })),
            "{:?}",
            r.failure
        );
    }
    // A run behind the other stops; once both have, a last run finishes the batch.
    let last = env.queue.enqueue_resumable_as(specs, "operator", 32, &key).await;
    assert!(last.failure.is_none(), "{:?}", last.failure);
    let ids: std::collections::HashSet<_> = last.report.ids.iter().collect();
    assert_eq!((last.report.ids.len(), ids.len()), (n, n));
    assert_eq!(a.report.created + b.report.created + last.report.created, n);
    assert_eq!(env.queue.status().await.unwrap().queued(), n as u64);
    // A chunk refused for being out of place took its staged records with it.
    assert_eq!(pending_records(&env).await, n);
}

/// How many pending records the queue holds.
async fn pending_records(env: &TestEnv) -> usize {
    let mut con = env.raw_redis().await;
    redis::cmd("HLEN")
        .arg(env.queue.keys().pending())
        .query_async(&mut con)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refused_enqueue_leaves_no_staged_record_behind() {
    let env = TestEnv::new().await;
    let batch = || {
        (0..40)
            .map(|i| spec(&format!("s{i}"), Priority::Normal))
            .collect::<Vec<_>>()
    };
    // 40 fresh jobs that start now: their records go staged, ahead of the script.
    let tight = env.queue.clone().with_outbox_limit(3);
    let first = tight.enqueue_batch(batch()).await.unwrap();
    assert_eq!(first.created, 40);
    assert_eq!(pending_records(&env).await, 40);
    // The outbox is over its bound now: the script refuses the next, records and all.
    let refused = tight.enqueue_batch(batch()).await.unwrap_err();
    assert!(matches!(refused, Error::OutboxFull { .. }), "{refused}");
    assert_eq!(pending_records(&env).await, 40);
    assert_eq!(env.queue.status().await.unwrap().queued(), 40);
    // The jobs that landed are whole: each reads back with its spec.
    for id in &first.ids {
        let job = env.queue.get(id).await.unwrap().expect("the job exists");
        assert_eq!((job.state, job.spec.team.as_str()), (JobState::Queued, "test"));
    }
}
