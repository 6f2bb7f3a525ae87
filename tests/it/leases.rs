//! The lease protocol's defences, through the library against a real Redis: fenced
//! workers, tolerant claims, hardened reaps, the hold after a Redis restart, the outbox
//! bound.

use crate::support::{wait_for, TestEnv};
use common::queue::{Outcome, RedisQueue};
use common::{Error, JobId, JobSpec, JobState, WorkerId, WorkerInfo};
use redis::AsyncCommands;
use std::time::Duration;

fn spec(name: &str) -> JobSpec {
    JobSpec::new(name, "test", vec!["true".into()])
}

fn info(w: &WorkerId) -> WorkerInfo {
    WorkerInfo::starting(w, "test", "test", 1)
}

async fn beat(q: &RedisQueue, w: &WorkerId, ttl: Duration) -> common::queue::Heartbeat {
    q.heartbeat_leases(&info(w), ttl, Duration::from_secs(2))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_worker_without_a_heartbeat_can_neither_claim_nor_report() {
    let env = TestEnv::new().await;
    env.queue.enqueue_batch(vec![spec("a")]).await.unwrap();
    let w = WorkerId::generate("never-beat");
    assert!(matches!(env.queue.claim(&w).await, Err(Error::Fenced(_))));
    assert_eq!(
        env.queue.status().await.unwrap().queued(),
        1,
        "nothing was claimed"
    );

    let hb = beat(&env.queue, &w, Duration::from_secs(60)).await;
    assert!(!hb.existed && hb.leases.is_empty());
    let job = env.queue.claim(&w).await.unwrap().unwrap();
    let hb = beat(&env.queue, &w, Duration::from_secs(60)).await;
    assert!(hb.existed);
    assert_eq!(
        hb.leases.iter().map(|l| (&l.id, l.attempt)).collect::<Vec<_>>(),
        [(&job.id, Some(1))],
        "the heartbeat hands back the leases, each naming its attempt"
    );
    env.queue.remove_heartbeat(&w).await.unwrap();
    let release = env.queue.release(&w, &job.id, "test").await.unwrap();
    assert_eq!(release, common::queue::FinishState::Fenced);
    assert_eq!(
        env.record(&job.id).await.state,
        JobState::Running,
        "nothing changed"
    );
}

#[tokio::test]
async fn one_unreadable_spec_fails_alone_and_a_newer_writers_field_is_ignored() {
    let env = TestEnv::new().await;
    let ids = env
        .queue
        .enqueue_batch(vec![
            spec("a"),
            spec("newer"),
            spec("broken"),
            spec("d"),
            spec("specless"),
        ])
        .await
        .unwrap()
        .ids;
    let mut con = env.raw_redis().await;
    // A newer version wrote a field this one does not know; something else wrote garbage.
    let newer = r#"{"name":"newer","team":"test","command":["true"],"gpu_topology":"nvlink"}"#;
    let _: () = con
        .hset(env.queue.keys().job(&ids[1]), "spec", newer)
        .await
        .unwrap();
    let _: () = con
        .hset(env.queue.keys().job(&ids[2]), "spec", "{not json")
        .await
        .unwrap();
    let _: () = con.hdel(env.queue.keys().job(&ids[4]), "spec").await.unwrap();

    let w = WorkerId::generate("tolerant");
    beat(&env.queue, &w, Duration::from_secs(60)).await;
    let claim = env.queue.claim_tagged(&w, 10, "1").await.unwrap();
    let ran: Vec<&JobId> = claim.jobs.iter().map(|j| &j.id).collect();
    assert_eq!(ran, [&ids[0], &ids[1], &ids[3]], "the others of the claim run");
    assert_eq!(claim.unreadable.len(), 2, "{:?}", claim.unreadable);
    let broken = env.record(&ids[2]).await;
    assert_eq!(broken.state, JobState::Dead);
    assert!(
        broken
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("spec cannot be read"),
        "{broken:?}"
    );
    let hb = beat(&env.queue, &w, Duration::from_secs(60)).await;
    assert_eq!(hb.leases.len(), 3, "the broken job's lease was released with it");
    // New specs are still checked strictly.
    let e = JobSpec::from_json(newer).unwrap_err();
    assert_eq!(e.field, "gpu_topology", "{e}");
}

#[tokio::test]
async fn a_reap_that_meets_a_broken_job_recovers_the_others_once() {
    let env = TestEnv::new().await;
    let ids = env
        .queue
        .enqueue_batch(vec![spec("a"), spec("b"), spec("c")])
        .await
        .unwrap()
        .ids;
    let w = WorkerId::generate("doomed");
    beat(&env.queue, &w, Duration::from_millis(300)).await;
    assert_eq!(env.queue.claim_many(&w, 3).await.unwrap().len(), 3);
    let mut con = env.raw_redis().await;
    let _: () = con
        .set(env.queue.keys().job(&ids[1]), "overwritten")
        .await
        .unwrap();
    let _: () = con.hdel(env.queue.keys().job(&ids[2]), "priority").await.unwrap();
    wait_for("the heartbeat to expire", Duration::from_secs(5), || async {
        env.queue.workers().await.unwrap().is_empty().then_some(())
    })
    .await;
    assert_eq!(env.queue.reap().await.unwrap(), 3);
    assert_eq!(env.queue.reap().await.unwrap(), 0, "nothing is pushed twice");
    let queued: Vec<String> = con
        .lrange(env.queue.keys().queue(common::Priority::Normal), 0, -1)
        .await
        .unwrap();
    assert_eq!(queued, [ids[0].to_string()]);
    let mut dead = env.queue.dead_letters().await.unwrap();
    dead.sort();
    let mut expected = vec![ids[1].to_string(), ids[2].to_string()];
    expected.sort();
    assert_eq!(
        dead, expected,
        "a job without a priority cannot be requeued: it is set aside"
    );
}

#[tokio::test]
async fn the_outbox_at_its_bound_refuses_enqueue_but_keeps_every_transition() {
    let env = TestEnv::new().await;
    let queue = env.queue.clone().with_outbox_limit(3);
    queue
        .enqueue_batch(vec![spec("a"), spec("b"), spec("c"), spec("d")])
        .await
        .unwrap();
    assert_eq!(queue.outbox_len().await.unwrap(), 4);
    let refused = queue.enqueue_batch(vec![spec("e")]).await.unwrap_err();
    assert!(
        matches!(refused, Error::OutboxFull { backlog: 4, limit: 3 }),
        "{refused}"
    );
    assert_eq!(queue.status().await.unwrap().queued(), 4, "nothing was enqueued");
    // The jobs already queued still move, and each move is still written.
    let w = WorkerId::generate("past-the-bound");
    beat(&queue, &w, Duration::from_secs(60)).await;
    let job = queue.claim(&w).await.unwrap().unwrap();
    queue.finish(&w, &job.id, &Outcome::Succeeded).await.unwrap();
    assert_eq!(queue.outbox_len().await.unwrap(), 6, "no transition is dropped");

    // The CLI says so, exits 1 and changes nothing.
    let out = std::process::Command::new(crate::support::bin("scheduler"))
        .args(["enqueue", "--name", "late", "--", "true"])
        .env("REDIS_URL", crate::support::redis_url())
        .env("GPUQ_NAMESPACE", &env.ns)
        .env("GPUQ_OUTBOX_LIMIT", "3")
        .env("DATABASE_URL", &env.database_url)
        .output()
        .unwrap();
    let err = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("enqueue refused: the outbox holds 6 transitions"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(queue.outbox_len().await.unwrap(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_redis_restart_the_reaper_waits_for_workers_to_come_back() {
    let env = TestEnv::new().await;
    let mut redis = crate::servers::PrivateRedis::durable(env.path("aof")).await;
    let queue = RedisQueue::connect(&redis.url, "restart").await.unwrap();
    let ids = queue.enqueue_batch(vec![spec("long")]).await.unwrap().ids;
    let w = WorkerId::generate("survivor");
    // The worker says it needs 2 s to come back and check its leases.
    beat(&queue, &w, Duration::from_millis(500)).await;
    let job = queue.claim(&w).await.unwrap().unwrap();
    assert_eq!(job.id, ids[0]);
    // Redis dies and stays down for longer than the lease: the heartbeat key it reloads
    // has expired.
    redis.crash();
    // The outage itself: longer than the lease, so the heartbeat expires during it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.boot().await;
    wait_for("the client to reconnect", Duration::from_secs(10), || async {
        queue.ping().await.ok()
    })
    .await;
    assert!(
        queue.workers().await.unwrap().is_empty(),
        "the heartbeat expired in the outage"
    );
    assert_eq!(
        queue.reap().await.unwrap(),
        0,
        "nothing is requeued during the hold"
    );
    let eager = WorkerId::generate("eager");
    beat(&queue, &eager, Duration::from_secs(60)).await;
    assert!(matches!(queue.claim(&eager).await, Err(Error::RestartHold(_))));
    // The worker comes back within its interval and finds its lease.
    let hb = beat(&queue, &w, Duration::from_secs(60)).await;
    assert!(!hb.existed);
    assert!(hb.restart_hold > Duration::ZERO);
    assert_eq!(hb.leases.len(), 1, "the lease survived the restart");
    assert_eq!(queue.reap().await.unwrap(), 0);
    assert_eq!(
        queue.finish(&w, &job.id, &Outcome::Succeeded).await.unwrap(),
        common::queue::FinishState::Moved(JobState::Succeeded)
    );
    let rec = queue.get(&job.id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempt), (JobState::Succeeded, 1), "it ran once");
}

#[tokio::test]
async fn a_job_handed_back_and_claimed_again_by_the_same_worker_is_told_from_its_old_attempt() {
    use common::queue::{EndedAttempt, FinishState, Lease};
    let env = TestEnv::new().await;
    env.queue.enqueue_batch(vec![spec("again")]).await.unwrap();
    let w = WorkerId::generate("same");
    beat(&env.queue, &w, Duration::from_secs(60)).await;
    let old = env.queue.claim_tagged(&w, 1, "1").await.unwrap().jobs.remove(0);
    // Handed back uncounted (the worker fenced itself), then claimed again: same number.
    let lease = |job: &common::queue::ClaimedJob| Lease {
        id: job.id.clone(),
        attempt: Some(job.attempt),
        token: job.claim_token.clone(),
    };
    let released = env
        .queue
        .release_many(&w, &[lease(&old)], "fenced")
        .await
        .unwrap();
    assert_eq!(released, [FinishState::Moved(JobState::Queued)]);
    let new = env.queue.claim_tagged(&w, 1, "2").await.unwrap().jobs.remove(0);
    assert_eq!((new.id.clone(), new.attempt), (old.id.clone(), old.attempt));
    // The old attempt's late reports name its claim: they touch nothing.
    let late = EndedAttempt {
        id: old.id.clone(),
        attempt: Some(old.attempt),
        claim_token: Some(old.claim_token.clone()),
        outcome: Outcome::Succeeded,
    };
    let states = env.queue.finish_many(&w, &[late]).await.unwrap();
    assert_eq!(states.into_iter().next().unwrap().unwrap(), FinishState::Stale);
    assert_eq!(
        env.queue.release_many(&w, &[lease(&old)], "late").await.unwrap(),
        [FinishState::Stale]
    );
    assert_eq!(
        env.record(&new.id).await.state,
        JobState::Running,
        "the new attempt still runs"
    );
    let hb = beat(&env.queue, &w, Duration::from_secs(60)).await;
    assert_eq!(hb.leases[0].token, "2");
}
