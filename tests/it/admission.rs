//! GPU admission against a real Redis: pools, quotas with borrowing, caps, strict and
//! best-effort queueing, reservations, reasons, and the usage the leases hold.

use crate::support::{sh, stderr, wait_for, TestEnv};
use common::admission::{AdmissionConfig, PoolConfig, Quota, Strategy, TeamLimits, WaitReason};
use common::queue::{EndedAttempt, Outcome, Room};
use common::{JobId, JobSpec, JobState, WorkerId, WorkerInfo};
use std::collections::HashMap;
use std::time::Duration;

fn info(w: &WorkerId) -> WorkerInfo {
    WorkerInfo::starting(w, "test", "test", 1)
}

async fn live_worker(env: &TestEnv) -> WorkerId {
    let w = WorkerId::generate("adm");
    env.queue
        .heartbeat(&info(&w), Duration::from_secs(60))
        .await
        .unwrap();
    w
}

fn gpu_job(name: &str, team: &str, pool: &str, gpus: u32) -> JobSpec {
    let mut s = JobSpec::new(name, team, vec!["true".into()]);
    s.resources.gpus = gpus;
    s.resources.gpu_type = (pool != "default").then(|| pool.to_string());
    s
}

fn quota(nominal: u32, borrowing_limit: Option<u32>) -> Quota {
    Quota {
        nominal,
        borrowing_limit,
        ..Quota::default()
    }
}

fn pool(capacity: u32, quotas: &[(&str, Quota)]) -> PoolConfig {
    PoolConfig {
        capacity: Some(capacity),
        quotas: quotas.iter().map(|(t, q)| (t.to_string(), q.clone())).collect(),
        ..PoolConfig::default()
    }
}

fn config(pools: &[(&str, PoolConfig)]) -> AdmissionConfig {
    AdmissionConfig {
        pools: pools.iter().map(|(n, p)| (n.to_string(), p.clone())).collect(),
        ..AdmissionConfig::default()
    }
}

async fn enqueue(env: &TestEnv, specs: Vec<JobSpec>) -> Vec<JobId> {
    env.queue.enqueue_batch(specs).await.unwrap().ids
}

/// Claims as a worker holding no devices (Kubernetes-like) would, up to `max`.
async fn claim(env: &TestEnv, w: &WorkerId, max: usize) -> Vec<common::queue::ClaimedJob> {
    env.queue
        .claim_within(w, max, "t", &Room::default())
        .await
        .unwrap()
        .jobs
}

async fn succeed(env: &TestEnv, w: &WorkerId, id: &JobId) {
    let r = env
        .queue
        .finish_many(
            w,
            &[EndedAttempt {
                id: id.clone(),
                attempt: None,
                claim_token: None,
                outcome: Outcome::Succeeded,
            }],
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

async fn reason(env: &TestEnv, id: &JobId) -> WaitReason {
    env.queue
        .why_waiting(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("job {id} is not queued"))
        .reason
}

fn names(jobs: &[common::queue::ClaimedJob]) -> Vec<String> {
    jobs.iter().map(|j| j.spec.name.clone()).collect()
}

#[tokio::test]
async fn a_team_borrows_up_to_its_limit_and_not_beyond() {
    let env = TestEnv::new().await;
    env.queue
        .set_admission(&config(&[(
            "a100",
            pool(12, &[("vision", quota(4, Some(2))), ("nlp", quota(8, None))]),
        )]))
        .await
        .unwrap();
    let vision = enqueue(
        &env,
        (0..10)
            .map(|i| gpu_job(&format!("v{i}"), "vision", "a100", 1))
            .collect(),
    )
    .await;
    let w = live_worker(&env).await;
    let got = claim(&env, &w, 100).await;
    assert_eq!(got.len(), 6, "4 of its own and 2 borrowed: {:?}", names(&got));
    let usage = env.queue.usage().await.unwrap();
    assert_eq!(usage.team_gpus("a100", "vision"), 6);
    assert_eq!(
        reason(&env, &vision[6]).await,
        WaitReason::Quota {
            team: "vision".into(),
            pool: "a100".into(),
            used: 6,
            nominal: 4,
            borrowing_limit: Some(2),
            lendable: 0
        }
    );
    assert_eq!(
        reason(&env, &vision[6]).await.to_string(),
        "team vision at its a100 quota (6/6 GPUs)"
    );

    // nlp gets its own quota back as far as the pool has room: 12 - 6 = 6 now, the
    // rest as vision's borrowed jobs end.
    let nlp = enqueue(
        &env,
        (0..8)
            .map(|i| gpu_job(&format!("n{i}"), "nlp", "a100", 1))
            .collect(),
    )
    .await;
    let got_nlp = claim(&env, &w, 100).await;
    assert_eq!(got_nlp.len(), 6, "{:?}", names(&got_nlp));
    assert!(
        got_nlp.iter().all(|j| j.spec.team == "nlp"),
        "vision may borrow no more"
    );
    match reason(&env, &nlp[6]).await {
        WaitReason::PoolFull {
            pool,
            used,
            capacity,
            needs,
        } => assert_eq!((pool.as_str(), used, capacity, needs), ("a100", 12, 12, 1)),
        other => panic!("{other:?}"),
    }
    succeed(&env, &w, &got[0].id).await;
    let next = claim(&env, &w, 100).await;
    assert_eq!(
        names(&next),
        ["n6"],
        "the freed GPU goes to the team within its quota, in order"
    );
    assert_eq!(env.queue.usage().await.unwrap().team_gpus("a100", "vision"), 5);
}

#[tokio::test]
async fn a_team_at_its_quota_does_not_hold_up_other_teams() {
    let env = TestEnv::new().await;
    env.queue
        .set_admission(&config(&[(
            "a100",
            pool(8, &[("vision", quota(2, Some(0))), ("nlp", quota(6, Some(0)))]),
        )]))
        .await
        .unwrap();
    // vision's jobs come first in the queue, far more than its quota.
    let mut specs: Vec<JobSpec> = (0..50)
        .map(|i| gpu_job(&format!("v{i}"), "vision", "a100", 1))
        .collect();
    specs.extend((0..3).map(|i| gpu_job(&format!("n{i}"), "nlp", "a100", 1)));
    enqueue(&env, specs).await;
    let w = live_worker(&env).await;
    let got = claim(&env, &w, 5).await;
    assert_eq!(names(&got), ["v0", "v1", "n0", "n1", "n2"]);
    let status = env.queue.status().await.unwrap();
    assert_eq!(status.priorities[1].depth, 48);
    assert_eq!(
        status.priorities[1].parked, 48,
        "vision's jobs wait in their lane"
    );
    // FIFO within the team once its quota frees.
    succeed(&env, &w, &got[0].id).await;
    assert_eq!(names(&claim(&env, &w, 5).await), ["v2"]);
}

#[tokio::test]
async fn strict_queueing_holds_the_pool_behind_a_job_that_does_not_fit() {
    for (strategy, expect) in [
        // Best-effort: the 1-GPU jobs behind the 3-GPU one start, whatever their team.
        (Strategy::BestEffort, vec!["b1", "a2"]),
        // Strict: the 3-GPU head of the queue holds up the pool.
        (Strategy::Strict, vec![]),
    ] {
        let env = TestEnv::new().await;
        let mut p = pool(4, &[]);
        p.strategy = strategy;
        env.queue.set_admission(&config(&[("a100", p)])).await.unwrap();
        let w = live_worker(&env).await;
        // Two GPUs are busy.
        enqueue(&env, vec![gpu_job("running", "c", "a100", 2)]).await;
        assert_eq!(claim(&env, &w, 1).await.len(), 1);
        let ids = enqueue(
            &env,
            vec![
                gpu_job("a1", "a", "a100", 3),
                gpu_job("b1", "b", "a100", 1),
                gpu_job("a2", "a", "a100", 1),
            ],
        )
        .await;
        let got = claim(&env, &w, 10).await;
        assert_eq!(names(&got), expect, "{strategy}");
        assert_eq!(
            reason(&env, &ids[0]).await.to_string(),
            format!(
                "pool a100 full ({}/4 GPUs used, needs 3)",
                if strategy == Strategy::Strict { 2 } else { 4 }
            )
        );
        if strategy == Strategy::Strict {
            assert_eq!(reason(&env, &ids[1]).await, WaitReason::Behind { ahead: 1 });
        }
    }
}

#[tokio::test]
async fn a_reservation_ends_the_starvation_of_a_large_job() {
    // A stream of 1-GPU jobs keeps an 8-GPU pool busy; an 8-GPU job waits. Without a
    // reservation (reserve_after 10 min) it starves; with reserve_after 0 it reserves the
    // pool, the small jobs drain, and it starts.
    for (reserve_after, starts) in [(600, false), (0, true)] {
        let env = TestEnv::new().await;
        let mut p = pool(8, &[]);
        p.reserve_after_secs = Some(reserve_after);
        env.queue.set_admission(&config(&[("a100", p)])).await.unwrap();
        let w = live_worker(&env).await;
        enqueue(
            &env,
            (0..8)
                .map(|i| gpu_job(&format!("s{i}"), "small", "a100", 1))
                .collect(),
        )
        .await;
        let mut running: Vec<JobId> = claim(&env, &w, 8).await.into_iter().map(|j| j.id).collect();
        assert_eq!(running.len(), 8);
        let big = enqueue(&env, vec![gpu_job("big", "large", "a100", 8)])
            .await
            .remove(0);
        let mut big_started = false;
        for round in 0..40 {
            enqueue(&env, vec![gpu_job(&format!("t{round}"), "small", "a100", 1)]).await;
            if !running.is_empty() {
                let done = running.remove(0);
                succeed(&env, &w, &done).await;
            }
            for j in claim(&env, &w, 8).await {
                if j.id == big {
                    big_started = true;
                }
                running.push(j.id);
            }
            if big_started {
                break;
            }
            if reserve_after == 0 && !running.is_empty() {
                let r = env.queue.status().await.unwrap();
                let a100 = r.pools.iter().find(|p| p.pool == "a100").unwrap();
                assert_eq!(a100.reserved_by.as_deref(), Some(big.as_str()));
            }
        }
        assert_eq!(big_started, starts, "reserve_after {reserve_after}s");
        if !starts {
            assert_eq!(
                reason(&env, &big).await.to_string(),
                "pool a100 full (8/8 GPUs used, needs 8)"
            );
        }
    }
}

/// Enqueue checks a job against the configuration it read last, without reading it
/// again each time: a configuration changed since by another process (here another
/// connection) must still refuse what it cannot admit, and admit what it now can.
#[tokio::test]
async fn an_enqueue_is_checked_against_the_configuration_in_redis_not_a_stale_copy() {
    let env = TestEnv::new().await;
    let other = common::queue::RedisQueue::connect(&crate::support::redis_url(), &env.ns)
        .await
        .unwrap();
    let outbox = || async { env.queue.status().await.unwrap().outbox };
    // No configuration yet: nine GPUs anywhere are fine, and this queue has read that.
    enqueue(&env, vec![gpu_job("first", "vision", "a100", 9)]).await;
    assert_eq!(outbox().await, 1);

    other
        .set_admission(&config(&[("a100", pool(8, &[]))]))
        .await
        .unwrap();
    let refused = env
        .queue
        .enqueue_batch(vec![gpu_job("too-big", "vision", "a100", 9)])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("more than pool a100 holds (8)"),
        "{refused}"
    );
    assert_eq!(outbox().await, 1, "a refused enqueue writes nothing");
    enqueue(&env, vec![gpu_job("fits", "vision", "a100", 4)]).await;

    other
        .set_admission(&config(&[("a100", pool(2, &[]))]))
        .await
        .unwrap();
    let refused = env
        .queue
        .enqueue_batch(vec![gpu_job("fitted-before", "vision", "a100", 4)])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("more than pool a100 holds (2)"),
        "{refused}"
    );

    // The configuration removed: the big job goes in again.
    other.set_admission(&AdmissionConfig::default()).await.unwrap();
    enqueue(&env, vec![gpu_job("big-again", "vision", "a100", 9)]).await;
    assert_eq!(outbox().await, 3);
}

#[tokio::test]
async fn caps_hold_jobs_and_say_so() {
    let env = TestEnv::new().await;
    let mut c = config(&[]);
    c.max_running = Some(3);
    c.teams.insert(
        "vision".into(),
        TeamLimits {
            max_running: Some(1),
            ..TeamLimits::default()
        },
    );
    env.queue.set_admission(&c).await.unwrap();
    let mut specs = vec![
        gpu_job("v1", "vision", "default", 0),
        gpu_job("v2", "vision", "default", 0),
    ];
    let mut g1 = gpu_job("g1", "nlp", "default", 0);
    g1.group = Some("sweep-3".into());
    g1.group_max_running = Some(1);
    let mut g2 = g1.clone();
    g2.name = "g2".into();
    specs.extend([
        g1,
        g2,
        gpu_job("o1", "nlp", "default", 0),
        gpu_job("o2", "nlp", "default", 0),
    ]);
    let ids = enqueue(&env, specs).await;
    let w = live_worker(&env).await;
    let got = claim(&env, &w, 10).await;
    assert_eq!(names(&got), ["v1", "g1", "o1"]);
    assert_eq!(
        reason(&env, &ids[1]).await.to_string(),
        "team vision at its cap of 1 running jobs"
    );
    assert_eq!(
        reason(&env, &ids[3]).await.to_string(),
        "group sweep-3 at max-running 1"
    );
    assert_eq!(
        reason(&env, &ids[5]).await.to_string(),
        "the queue runs its cap of 3 jobs"
    );
    succeed(&env, &w, &got[2].id).await;
    assert_eq!(
        names(&claim(&env, &w, 10).await),
        ["o2"],
        "neither vision nor the group may run more"
    );
    let u = env.queue.usage().await.unwrap();
    assert_eq!(
        (u.running, u.groups["sweep-3"], u.team_running["vision"]),
        (3, 1, 1)
    );
}

#[tokio::test]
async fn a_worker_takes_only_jobs_that_fit_its_free_devices() {
    let env = TestEnv::new().await;
    let ids = enqueue(
        &env,
        vec![
            gpu_job("four", "a", "default", 4),
            gpu_job("one", "a", "default", 1),
            gpu_job("cpu", "a", "default", 0),
        ],
    )
    .await;
    let w = live_worker(&env).await;
    let room = |free| Room {
        pools: vec!["default".into()],
        free_gpus: Some(free),
    };
    let got = env.queue.claim_within(&w, 10, "t", &room(2)).await.unwrap().jobs;
    assert_eq!(
        names(&got),
        ["one", "cpu"],
        "the 4-GPU job waits for a worker with 4 free"
    );
    assert_eq!(
        reason(&env, &ids[0]).await.to_string(),
        "waiting for a worker with 4 free GPUs in pool default"
    );
    let got = env.queue.claim_within(&w, 10, "t", &room(0)).await.unwrap().jobs;
    assert!(got.is_empty());
    let got = env.queue.claim_within(&w, 10, "t", &room(4)).await.unwrap().jobs;
    assert_eq!(names(&got), ["four"]);
    // A worker serving another pool takes nothing of this one.
    enqueue(&env, vec![gpu_job("cpu2", "a", "default", 0)]).await;
    let other = Room {
        pools: vec!["h100".into()],
        free_gpus: Some(8),
    };
    assert!(env
        .queue
        .claim_within(&w, 10, "t", &other)
        .await
        .unwrap()
        .jobs
        .is_empty());
}

#[tokio::test]
async fn quota_is_never_exceeded_and_usage_returns_to_zero() {
    // Eight claimers race against small quotas while a sampler watches the usage.
    let env = TestEnv::new().await;
    env.queue
        .set_admission(&config(&[(
            "a100",
            pool(
                10,
                &[
                    ("t0", quota(3, Some(1))),
                    ("t1", quota(3, Some(0))),
                    ("t2", quota(2, Some(2))),
                ],
            ),
        )]))
        .await
        .unwrap();
    let specs: Vec<JobSpec> = (0..1000)
        .map(|i| {
            gpu_job(
                &format!("j{i}"),
                ["t0", "t1", "t2", "t3"][i % 4],
                "a100",
                1 + (i % 2) as u32,
            )
        })
        .collect();
    enqueue(&env, specs).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (q, stop) = (env.queue.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let u = q.usage().await.unwrap();
                let pool = u.pools.get("a100").map_or(0, |h| h.gpus);
                assert!(pool <= 10, "pool over capacity: {u:?}");
                for (team, limit) in [("t0", 4), ("t1", 3), ("t2", 4), ("t3", 2)] {
                    assert!(u.team_gpus("a100", team) <= limit, "{team} over its limit: {u:?}");
                }
                samples += 1;
                tokio::task::yield_now().await;
            }
            samples
        })
    };
    let mut claimers = Vec::new();
    for _ in 0..8 {
        let (q, done) = (env.queue.clone(), done.clone());
        let w = live_worker(&env).await;
        claimers.push(tokio::spawn(async move {
            let mut held: Vec<JobId> = Vec::new();
            loop {
                let got = q.claim_within(&w, 3, "t", &Room::default()).await.unwrap().jobs;
                held.extend(got.into_iter().map(|j| j.id));
                if held.is_empty() {
                    if done.load(std::sync::atomic::Ordering::SeqCst) >= 1000 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let id = held.remove(0);
                let ended = EndedAttempt {
                    id,
                    attempt: None,
                    claim_token: None,
                    outcome: Outcome::Succeeded,
                };
                let r = q.finish_many(&w, &[ended]).await.unwrap();
                assert!(r[0].is_ok());
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    for c in claimers {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .unwrap()
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    assert!(samples > 10, "the sampler saw {samples} states");
    let u = env.queue.usage().await.unwrap();
    assert_eq!(u, common::queue::Usage::default(), "every charge came back");
    assert!(env.queue.recount_usage(false).await.unwrap().is_empty());
    assert_eq!(env.queue.status().await.unwrap().queued(), 0);
}

#[tokio::test]
async fn quota_check_repairs_injected_drift() {
    let env = TestEnv::new().await;
    enqueue(&env, vec![gpu_job("a", "vision", "a100", 2)]).await;
    let w = live_worker(&env).await;
    assert_eq!(claim(&env, &w, 1).await.len(), 1);
    let mut conn = env.raw_redis().await;
    let usage = format!("{{{}}}:usage", env.ns);
    let _: () = redis::cmd("HINCRBY")
        .arg(&usage)
        .arg("g|a100|vision")
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&usage)
        .arg("g|a100|ghost")
        .arg(3)
        .query_async(&mut conn)
        .await
        .unwrap();
    let out = env.scheduler(&["quota", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("g|a100|vision: 7 -> 2"), "{text}");
    assert!(text.contains("g|a100|ghost: 3 -> 0"), "{text}");
    assert!(text.contains("2 counters repaired"), "{text}");
    let again = env.scheduler(&["quota", "check"]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "usage matches the leases"
    );
    assert_eq!(env.queue.usage().await.unwrap().team_gpus("a100", "vision"), 2);
}

#[tokio::test]
async fn quota_commands_refuse_bad_input_and_change_nothing() {
    let env = TestEnv::new().await;
    let ok = env.scheduler(&["quota", "set", "--pool", "a100", "--capacity", "8"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let before = env.queue.admission().await.unwrap();
    for (args, says) in [
        (
            vec!["quota", "set", "--pool", "a100", "--capacity", "-1"],
            "\"-1\" is not a whole number",
        ),
        (
            vec!["quota", "set", "--pool", "a100", "--capacity", "many"],
            "not a whole number",
        ),
        (
            vec!["quota", "set", "--pool", "a100", "--team", "v", "--nominal", "x"],
            "--nominal",
        ),
        (
            vec!["quota", "set", "--pool", "a100", "--team", "v", "--nominal", "-2"],
            "\"-2\" is not a whole number",
        ),
        (
            vec!["quota", "set", "--pool", "a100", "--team", "v"],
            "nothing to set",
        ),
        (
            vec![
                "quota",
                "set",
                "--pool",
                "a100",
                "--team",
                "v",
                "--borrowing-limit",
                "2",
            ],
            "give --nominal",
        ),
        (
            vec!["quota", "set", "--pool", "a/b", "--capacity", "2"],
            "pool \"a/b\"",
        ),
        (vec!["quota", "delete", "--pool", "h100"], "not defined"),
    ] {
        let out = env.scheduler(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(
            env.queue.admission().await.unwrap(),
            before,
            "{args:?} changed nothing"
        );
    }
    // With the allow-list on, an unknown team gets no quota and enqueues nothing.
    let ok = env.scheduler(&["quota", "set", "--allowed-teams", "vision,nlp"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let out = env.scheduler(&[
        "quota",
        "set",
        "--pool",
        "a100",
        "--team",
        "audio",
        "--nominal",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not in the team allow-list"),
        "{}",
        stderr(&out)
    );
    for (args, says) in [
        (
            vec!["enqueue", "--name", "x", "--team", "audio", "--", "true"],
            "not in the team allow-list",
        ),
        (
            vec![
                "enqueue",
                "--name",
                "x",
                "--team",
                "vision",
                "--gpus",
                "9",
                "--gpu-type",
                "a100",
                "--",
                "true",
            ],
            "more than pool a100 holds (8)",
        ),
        (
            vec![
                "enqueue",
                "--name",
                "x",
                "--team",
                "vision",
                "--gpus",
                "1",
                "--gpu-type",
                "h100",
                "--",
                "true",
            ],
            "pool \"h100\", which is not defined",
        ),
    ] {
        let out = env.scheduler(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        env.queue.status().await.unwrap().queued(),
        0,
        "nothing was enqueued"
    );
}

#[tokio::test]
async fn quota_apply_loads_a_file_and_show_reports_use_against_it() {
    let env = TestEnv::new().await;
    let file = env.path("quotas.toml");
    std::fs::write(
        &file,
        r#"
max_running = 100

[pools.a100]
capacity = 16
strategy = "best-effort"
reserve_after_secs = 300

[pools.a100.quotas.vision]
nominal = 8
borrowing_limit = 4

[pools.a100.quotas.nlp]
nominal = 8
lending_limit = 4
"#,
    )
    .unwrap();
    let out = env.scheduler(&["quota", "apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = env.queue.admission().await.unwrap().unwrap();
    assert_eq!(c.pools["a100"].quotas["nlp"].lending_limit, Some(4));
    enqueue(
        &env,
        (0..14)
            .map(|i| gpu_job(&format!("v{i}"), "vision", "a100", 1))
            .collect(),
    )
    .await;
    let w = live_worker(&env).await;
    assert_eq!(claim(&env, &w, 20).await.len(), 12, "8 own + 4 borrowed");
    let shown: serde_json::Value =
        serde_json::from_slice(&env.scheduler(&["quota", "show", "--json"]).stdout).unwrap();
    let team = shown["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team"] == "vision")
        .unwrap()
        .clone();
    assert_eq!(
        (team["used"].as_u64(), team["borrowed"].as_u64()),
        (Some(12), Some(4)),
        "{shown}"
    );
    let text = String::from_utf8_lossy(&env.scheduler(&["status"]).stdout).to_string();
    assert!(text.contains("a100"), "{text}");

    // A bad file changes nothing and says where it is wrong.
    std::fs::write(&file, "[pools.a100]\ncapacity = -3\n").unwrap();
    let out = env.scheduler(&["quota", "apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert_eq!(env.queue.admission().await.unwrap().unwrap(), c);
}

#[tokio::test]
async fn a_killed_workers_gpus_return_to_the_pool_when_its_leases_are_reaped() {
    let env = TestEnv::new().await;
    let mut job = sh("hold", "sleep 30");
    job.resources.gpus = 2;
    let id = enqueue(&env, vec![job]).await.remove(0);
    let mut w = env.worker(&["--gpus", "0,1"]);
    env.wait_state(&id, JobState::Running, Duration::from_secs(30))
        .await;
    assert_eq!(env.queue.usage().await.unwrap().pools["default"].gpus, 2);
    w.kill();
    let u = wait_for(
        "the reaper to return the GPUs",
        Duration::from_secs(30),
        || async {
            env.queue.reap().await.unwrap();
            let u = env.queue.usage().await.unwrap();
            (u.pools.get("default").map_or(0, |h| h.gpus) == 0).then_some(u)
        },
    )
    .await;
    assert_eq!(u, common::queue::Usage::default());
    assert_eq!(env.record(&id).await.state, JobState::Queued);
    let devices = env.queue.status().await.unwrap();
    assert!(
        devices.pools.iter().all(|p| p.capacity.unwrap_or(0) == 0),
        "its devices left the pool: {:?}",
        devices.pools
    );
}

#[tokio::test]
async fn concurrent_attempts_on_one_worker_never_share_a_device() {
    let env = TestEnv::new().await;
    let out = env.path("devices");
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        "echo \"$(date +%s%N) $CUDA_VISIBLE_DEVICES\" > {dir}/$GPUQ_JOB_ID.start; sleep 0.3; date +%s%N > {dir}/$GPUQ_JOB_ID.end",
        dir = out.display()
    );
    let specs: Vec<JobSpec> = (0..12)
        .map(|i| {
            let mut s = sh(&format!("d{i}"), &script);
            s.resources.gpus = 1 + (i % 2) as u32;
            s
        })
        .collect();
    let ids = enqueue(&env, specs.clone()).await;
    let _w = env.worker(&["--gpus", "0,1,2,3", "--concurrency", "4"]);
    for id in &ids {
        env.wait_state(id, JobState::Succeeded, Duration::from_secs(60))
            .await;
    }
    let mut runs = Vec::new();
    for (id, spec) in ids.iter().zip(&specs) {
        let start = std::fs::read_to_string(out.join(format!("{id}.start"))).unwrap();
        let (t0, devices) = start.trim().split_once(' ').unwrap();
        let t1: u128 = std::fs::read_to_string(out.join(format!("{id}.end")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let devices: Vec<String> = devices.split(',').map(str::to_string).collect();
        assert_eq!(
            devices.len() as u32,
            spec.resources.gpus,
            "job {id} got exactly its GPUs"
        );
        runs.push((t0.parse::<u128>().unwrap(), t1, devices));
    }
    let mut overlapping = 0;
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if a.0 < b.1 && b.0 < a.1 {
                overlapping += 1;
                assert!(
                    a.2.iter().all(|d| !b.2.contains(d)),
                    "{a:?} and {b:?} ran at once on one device"
                );
            }
        }
    }
    assert!(overlapping > 0, "some attempts ran at once");
}

#[tokio::test]
async fn a_group_with_max_running_1_runs_one_job_after_another() {
    let env = TestEnv::new().await;
    let out = env.path("seq");
    std::fs::create_dir_all(&out).unwrap();
    let lines: Vec<String> = (0..5)
        .map(|i| {
            serde_json::json!({
                "name": format!("step-{i}"),
                "command": ["sh", "-c", format!("date +%s%N > {d}/{i}.start; sleep 0.2; date +%s%N > {d}/{i}.end", d = out.display())],
            })
            .to_string()
        })
        .collect();
    let batch = env.scheduler_with_stdin(
        &["batch", "-", "--group", "sweep-1", "--max-running", "1"],
        Some(&lines.join("\n")),
    );
    assert!(batch.status.success(), "{}", stderr(&batch));
    let ids: Vec<JobId> = String::from_utf8_lossy(&batch.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let _w = env.worker(&["--concurrency", "4"]);
    let _w2 = env.worker(&["--concurrency", "4"]);
    for id in &ids {
        env.wait_state(id, JobState::Succeeded, Duration::from_secs(60))
            .await;
    }
    let read = |i: usize, what: &str| -> u128 {
        std::fs::read_to_string(out.join(format!("{i}.{what}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    for i in 1..5 {
        assert!(
            read(i, "start") >= read(i - 1, "end"),
            "step {i} started before step {} ended",
            i - 1
        );
    }
}

#[tokio::test]
async fn gpus_all_finds_the_devices_nvidia_smi_lists() {
    let env = TestEnv::new().await;
    let fake = env.path("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let smi = fake.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho 'GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-aaaa)'\necho 'GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-bbbb)'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let _w = env.worker_with(
        &crate::support::redis_url(),
        &["--gpus", "all", "--pool", "a100"],
        &[("PATH", path.as_str())],
    );
    let workers = wait_for("the worker's heartbeat", Duration::from_secs(20), || async {
        let w = env.queue.workers().await.unwrap();
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert_eq!(workers[0].gpus, ["0", "1"]);
    assert_eq!(workers[0].pools, ["a100"]);
    let status = env.queue.status().await.unwrap();
    let a100 = status.pools.iter().find(|p| p.pool == "a100").unwrap();
    assert_eq!(a100.capacity, Some(2), "its devices count in its pool's capacity");

    // Without --gpus, a local worker says it runs only jobs that need no GPU.
    let w = env.worker(&[]);
    wait_for("the startup line", Duration::from_secs(20), || async {
        w.log()
            .contains("claims only jobs that need no GPU")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_replay_of_a_small_trace_gives_the_schedule_worked_out_by_hand() {
    // Pool a100 has 4 GPUs; teams a and b have 2 each.
    //   job  submit  run  gpus  team
    //   0    0       10   2     a
    //   1    0       10   2     a
    //   2    1       10   2     b
    //   3    2       5    2     a
    // With borrowing: 0 and 1 start at once (1 borrows b's idle quota); 2 waits for the
    // borrowed GPUs to come back at 10; 3 (a, within its quota again) starts at 10 too.
    // As isolated partitions: 1 waits for 0 (a's 2 GPUs); 2 starts at 1; 3 waits for 1.
    let env = TestEnv::new().await;
    let trace = env.path("trace.csv");
    std::fs::write(
        &trace,
        "submit_s,duration_s,gpus,team,gpu_type\n0,10,2,a,a100\n0,10,2,a,a100\n1,10,2,b,a100\n2,5,2,a,a100\n",
    )
    .unwrap();
    let quotas = env.path("quotas.toml");
    std::fs::write(
        &quotas,
        "[pools.a100]\ncapacity = 4\n[pools.a100.quotas.a]\nnominal = 2\n[pools.a100.quotas.b]\nnominal = 2\n",
    )
    .unwrap();
    let schedule = env.path("schedule.csv");
    let rows = crate::support::replay_rows(&trace, &quotas, "10", Some(&schedule));
    let csv = std::fs::read_to_string(&schedule).unwrap();
    let mut got: HashMap<(String, usize), (f64, f64)> = HashMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        got.insert(
            (f[0].to_string(), f[1].parse().unwrap()),
            (f[5].parse().unwrap(), f[6].parse().unwrap()),
        );
    }
    let expect = [
        ("quotas", [(0.0, 10.0), (0.0, 10.0), (10.0, 20.0), (10.0, 15.0)]),
        (
            "partitions",
            [(0.0, 10.0), (10.0, 20.0), (1.0, 11.0), (20.0, 25.0)],
        ),
    ];
    for (run, jobs) in expect {
        for (job, (start, end)) in jobs.iter().enumerate() {
            let (s, e) = got[&(run.to_string(), job)];
            assert!(
                (s - start).abs() <= 1.5 && (e - end).abs() <= 1.5,
                "{run} job {job}: ran {s:.1}..{e:.1}, expected {start}..{end}\n{csv}"
            );
        }
    }
    let value = |case: &str| crate::support::row_value(&rows, case);
    // Mean wait: (0 + 0 + 9 + 8) / 4 with borrowing, (0 + 10 + 0 + 18) / 4 without.
    assert!((value("quotas all wait mean") - 4.25).abs() < 1.0);
    assert!((value("partitions all wait mean") - 7.0).abs() < 1.0);
    assert!((value("quotas makespan") - 20.0).abs() < 1.5);
    assert!((value("partitions makespan") - 25.0).abs() < 1.5);
    assert!(value("all wait mean quotas / partitions") < 0.8);
}

#[tokio::test]
async fn the_job_holding_a_reservation_is_admitted_even_behind_others_in_its_lane() {
    // R reserves the pool; then a job of R's own team is handed back to the head of R's
    // lane, where it is held up by R's reservation. R must still be found and admitted
    // when the pool frees, or the pool would stay reserved for ever.
    let env = TestEnv::new().await;
    let mut p = pool(4, &[]);
    p.reserve_after_secs = Some(0);
    env.queue.set_admission(&config(&[("a100", p)])).await.unwrap();
    let w = live_worker(&env).await;
    enqueue(
        &env,
        vec![gpu_job("x", "c", "a100", 3), gpu_job("h", "a", "a100", 1)],
    )
    .await;
    let running = claim(&env, &w, 2).await;
    assert_eq!(names(&running), ["x", "h"]);
    let r = enqueue(&env, vec![gpu_job("r", "a", "a100", 4)]).await.remove(0);
    assert!(claim(&env, &w, 1).await.is_empty());
    let status = env.queue.status().await.unwrap();
    let a100 = status.pools.iter().find(|p| p.pool == "a100").unwrap();
    assert_eq!(a100.reserved_by.as_deref(), Some(r.as_str()));
    // h goes back to the head of its lane, ahead of r.
    env.queue.release(&w, &running[1].id, "test").await.unwrap();
    assert_eq!(
        reason(&env, &running[1].id).await.to_string(),
        format!("pool a100 reserved for job {r}")
    );
    succeed(&env, &w, &running[0].id).await;
    assert_eq!(names(&claim(&env, &w, 4).await), ["r"]);
    assert_eq!(
        names(&claim(&env, &w, 4).await),
        Vec::<String>::new(),
        "r holds all 4"
    );
}

#[tokio::test]
async fn jobs_no_rule_applies_to_are_not_counted_and_their_ends_return_nothing() {
    // Without any configuration, a job of the default pool and team that needs no GPU and
    // has no group is claimed without a charge (the plain queue's fast path). Once a
    // configuration exists, the same kind of job is charged, and each end returns exactly
    // what its own lease carried.
    let env = TestEnv::new().await;
    let w = live_worker(&env).await;
    let plain = || gpu_job("plain", "default", "default", 0);
    enqueue(&env, vec![plain()]).await;
    let first = claim(&env, &w, 1).await.remove(0);
    assert_eq!(env.queue.usage().await.unwrap(), common::queue::Usage::default());
    let mut c = config(&[]);
    c.max_running = Some(5);
    env.queue.set_admission(&c).await.unwrap();
    enqueue(&env, vec![plain()]).await;
    let second = claim(&env, &w, 1).await.remove(0);
    assert_eq!(env.queue.usage().await.unwrap().running, 1);
    succeed(&env, &w, &first.id).await;
    assert_eq!(
        env.queue.usage().await.unwrap().running,
        1,
        "the uncharged lease returned nothing"
    );
    succeed(&env, &w, &second.id).await;
    assert_eq!(env.queue.usage().await.unwrap(), common::queue::Usage::default());
    assert!(env.queue.recount_usage(false).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_team_image_allow_list_refuses_other_images_at_enqueue() {
    let env = TestEnv::new().await;
    let out = env.scheduler(&[
        "quota",
        "set",
        "--team",
        "vision",
        "--allowed-images",
        "registry.example/vision/*,nvcr.io/nvidia/pytorch:*",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let enqueue = |image: &str| {
        env.scheduler(&[
            "enqueue", "--name", "train", "--team", "vision", "--image", image, "--", "python", "train.py",
        ])
    };
    for ok in [
        "registry.example/vision/resnet:3",
        "nvcr.io/nvidia/pytorch:24.01-py3",
    ] {
        let out = enqueue(ok);
        assert!(out.status.success(), "{ok}: {}", stderr(&out));
    }
    let before = env.queue.status().await.unwrap().queued();
    let out = enqueue("docker.io/library/ubuntu:latest");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("image \"docker.io/library/ubuntu:latest\" is not allowed for team \"vision\""),
        "{err}"
    );
    assert_eq!(
        env.queue.status().await.unwrap().queued(),
        before,
        "nothing was written"
    );
    // Another team has no list; `none` removes vision's.
    let out = env.scheduler(&[
        "enqueue",
        "--name",
        "t",
        "--team",
        "nlp",
        "--image",
        "docker.io/x:1",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.scheduler(&["quota", "set", "--team", "vision", "--allowed-images", "none"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(enqueue("docker.io/library/ubuntu:latest").status.success());
    // Per team only.
    let out = env.scheduler(&["quota", "set", "--pool", "a100", "--allowed-images", "x/*"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn in_a_strict_pool_a_teams_small_job_does_not_pass_its_held_up_larger_one() {
    let env = TestEnv::new().await;
    let strict = PoolConfig {
        strategy: Strategy::Strict,
        ..pool(3, &[("vision", quota(2, Some(0)))])
    };
    env.queue
        .set_admission(&config(&[("a100", strict)]))
        .await
        .unwrap();
    // vision's 1-GPU job fits, its 2-GPU job then does not (quota 2): in a strict pool
    // the second 1-GPU job, which would fit, waits behind it in the team's lane (FIFO
    // within a team), though a job of its own size was taken just before in the same
    // claim. (A best-effort pool lets it pass.)
    enqueue(
        &env,
        vec![
            gpu_job("one", "vision", "a100", 1),
            gpu_job("two", "vision", "a100", 2),
            gpu_job("one-more", "vision", "a100", 1),
        ],
    )
    .await;
    let w = live_worker(&env).await;
    let got = claim(&env, &w, 3).await;
    assert_eq!(names(&got), ["one"]);
    let status = env.queue.status().await.unwrap();
    assert_eq!(status.priorities[1].parked, 2, "both wait in vision's lane");
}

/// The API's group commit: single enqueues that share one script call are each checked
/// and answered on their own, and land with their own actor.
#[tokio::test]
async fn enqueues_sharing_one_call_are_each_checked_and_answered_on_their_own() {
    let env = TestEnv::new().await;
    env.queue
        .set_admission(&config(&[("a100", pool(8, &[]))]))
        .await
        .unwrap();
    let mut fixed = gpu_job("fixed", "vision", "a100", 1);
    fixed.id = Some("fixed-1".parse().unwrap());
    let mut invalid = gpu_job("invalid", "vision", "a100", 1);
    invalid.epochs = 0;
    let answers = env
        .queue
        .enqueue_each(vec![
            (gpu_job("fits", "vision", "a100", 4), "alice".into()),
            (gpu_job("too-big", "vision", "a100", 9), "bob".into()),
            (fixed.clone(), "carol".into()),
            (invalid, "dave".into()),
            // The same id again in the same call: the first created it.
            (fixed.clone(), "erin".into()),
            (gpu_job("cpu", "nlp", "default", 0), "frank".into()),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 6);
    let report = |i: usize| answers[i].as_ref().unwrap();
    let refusal = |i: usize| answers[i].as_ref().unwrap_err().to_string();
    assert!(
        refusal(1).contains("more than pool a100 holds (8)"),
        "{}",
        refusal(1)
    );
    assert!(refusal(3).contains("epochs"), "{}", refusal(3));
    for (i, actor) in [(0, "alice"), (2, "carol"), (5, "frank")] {
        assert_eq!((report(i).created, report(i).existing.len()), (1, 0), "job {i}");
        let job = env.queue.get(&report(i).ids[0]).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(
            job.events[0].detail.as_deref(),
            Some(format!("enqueued by {actor}").as_str()),
            "job {i}"
        );
    }
    assert_eq!(report(2).ids[0].as_str(), "fixed-1");
    assert_eq!(
        (report(4).created, report(4).existing.clone()),
        (0, vec![fixed.id.clone().unwrap()]),
        "the second enqueue of an id finds the first"
    );
    assert_eq!(
        env.queue.status().await.unwrap().outbox,
        3,
        "only the admitted jobs were written, each once"
    );
}
