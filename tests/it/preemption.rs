//! Preemption against a real Redis: who is chosen, the reservation that holds the freed
//! GPUs for the preemptor, the limits that keep it from thrashing, and the uncounted
//! hand-back of a victim.

use crate::support::TestEnv;
use common::admission::{AdmissionConfig, PoolConfig, Quota};
use common::preemption::{Directive, Preemption};
use common::queue::{EndedAttempt, Outcome, Room, PREEMPTED};
use common::{JobId, JobSpec, JobState, Priority, WorkerId, WorkerInfo};
use std::time::Duration;

async fn live_worker(env: &TestEnv) -> WorkerId {
    let w = WorkerId::generate("pre");
    env.queue
        .heartbeat(
            &WorkerInfo::starting(&w, "test", "test", 1),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    w
}

fn job(name: &str, team: &str, priority: Priority, gpus: u32) -> JobSpec {
    let mut s = JobSpec::new(name, team, vec!["true".into()]);
    s.resources.gpus = gpus;
    s.resources.gpu_type = Some("a100".into());
    s.priority = priority;
    s
}

/// An 8-GPU pool `a100` with these quotas, and preemption with no minimum run time.
fn config(capacity: u32, quotas: &[(&str, u32)]) -> AdmissionConfig {
    let pool = PoolConfig {
        capacity: Some(capacity),
        quotas: quotas
            .iter()
            .map(|(t, n)| {
                (
                    t.to_string(),
                    Quota {
                        nominal: *n,
                        ..Quota::default()
                    },
                )
            })
            .collect(),
        ..PoolConfig::default()
    };
    AdmissionConfig {
        pools: [("a100".to_string(), pool)].into(),
        preemption: Preemption {
            min_runtime_secs: Some(0),
            ..Preemption::default()
        },
        ..AdmissionConfig::default()
    }
}

async fn enqueue_one(env: &TestEnv, spec: JobSpec) -> JobId {
    env.queue.enqueue_batch(vec![spec]).await.unwrap().ids.remove(0)
}

async fn succeed(env: &TestEnv, w: &WorkerId, id: &JobId) {
    env.queue
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
}

/// Enqueues the jobs one at a time and claims each, so they run in this order.
async fn run_all(env: &TestEnv, w: &WorkerId, specs: Vec<JobSpec>) -> Vec<JobId> {
    let mut ids = Vec::new();
    for s in specs {
        let id = enqueue_one(env, s).await;
        let got = claim(env, w).await;
        assert_eq!(got, vec![id.clone()], "the job should start at once");
        ids.push(id);
    }
    ids
}

async fn claim(env: &TestEnv, w: &WorkerId) -> Vec<JobId> {
    env.queue
        .claim_within(w, 10, "t", &Room::default())
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect()
}

/// Moves a running job's start `secs` into the past, as if it had run that long.
async fn age(env: &TestEnv, id: &JobId, secs: u64) {
    let mut con = env.raw_redis().await;
    let started: u64 = redis::cmd("HGET")
        .arg(format!("{{{}}}:job:{id}", env.ns))
        .arg("started_at")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{{{}}}:job:{id}", env.ns))
        .arg("started_at")
        .arg(started - secs * 1000)
        .query_async(&mut con)
        .await
        .unwrap();
}

fn victims_of(started: &[common::preemption::Started], preemptor: &JobId) -> Vec<JobId> {
    let mut v = started
        .iter()
        .find(|s| &s.preemptor == preemptor)
        .map(|s| s.victims.clone())
        .unwrap_or_default();
    v.sort();
    v
}

fn sorted(mut v: Vec<JobId>) -> Vec<JobId> {
    v.sort();
    v
}

async fn preempt_directive(env: &TestEnv, id: &JobId) -> Directive {
    env.queue.watch(&[(id.clone(), None)]).await.unwrap().remove(0)
}

#[tokio::test]
async fn victims_are_the_lowest_priority_then_least_work_lost_and_unneeded_ones_are_dropped() {
    let env = TestEnv::new().await;
    env.queue.set_admission(&config(8, &[])).await.unwrap();
    let w = live_worker(&env).await;
    let bg = Priority::Background;
    let ids = run_all(
        &env,
        &w,
        vec![
            job("v1", "t", bg, 1),
            job("v2", "t", bg, 2),
            job("v3", "t", bg, 2),
            job("v4", "t", Priority::Normal, 3),
        ],
    )
    .await;
    let (v1, v2, v3, v4) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    // v1 and v4 checkpointed just now (little to lose); v2 has run 10 minutes, v3 20,
    // without a checkpoint.
    for (id, secs) in [(v1, 60), (v2, 600), (v3, 1200), (v4, 60)] {
        age(&env, id, secs).await;
    }
    env.queue.checkpointed(v1).await.unwrap();
    env.queue.checkpointed(v4).await.unwrap();

    // Two GPUs: v1 (1 GPU, least lost) then v2 free three; v1 is then not needed.
    let j = enqueue_one(&env, job("urgent-2", "u", Priority::Urgent, 2)).await;
    assert!(claim(&env, &w).await.is_empty(), "the pool is full");
    let started = env.queue.preempt().await.unwrap();
    assert_eq!(victims_of(&started, &j), vec![v2.clone()], "{started:?}");
    assert!(matches!(preempt_directive(&env, v2).await, Directive::Preempt { ref by, .. } if by == &j));
    assert_eq!(preempt_directive(&env, v1).await, Directive::Run);
    // One preemption per pool at a time.
    assert!(env.queue.preempt().await.unwrap().is_empty());

    // The victim stops; the preemptor starts in its GPUs.
    assert_eq!(
        env.queue.release(&w, v2, PREEMPTED).await.unwrap(),
        common::queue::FinishState::Moved(JobState::Queued)
    );
    assert_eq!(claim(&env, &w).await, vec![j.clone()]);

    // Three GPUs more (v2 is queued again, j took its GPUs): every background job goes
    // before the normal one, whatever it loses: v1 and v3, not v4.
    let k = enqueue_one(&env, job("urgent-3", "u", Priority::Urgent, 3)).await;
    let started = env.queue.preempt().await.unwrap();
    assert_eq!(
        victims_of(&started, &k),
        sorted(vec![v1.clone(), v3.clone()]),
        "{started:?}"
    );
    assert_eq!(preempt_directive(&env, v4).await, Directive::Run);
}

#[tokio::test]
async fn jobs_on_borrowed_quota_go_first_and_a_team_reclaims_its_nominal_quota() {
    let env = TestEnv::new().await;
    env.queue
        .set_admission(&config(8, &[("a", 4), ("b", 4)]))
        .await
        .unwrap();
    let w = live_worker(&env).await;
    // b borrows: three 2-GPU normal jobs (6 of its 4); a runs one background 2-GPU job.
    let ids = run_all(
        &env,
        &w,
        vec![
            job("b1", "b", Priority::Normal, 2),
            job("b2", "b", Priority::Normal, 2),
            job("b3", "b", Priority::Normal, 2),
            job("a1", "a", Priority::Background, 2),
        ],
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        age(&env, id, 600 + i as u64).await;
    }
    // An urgent job of a, within a's quota: b's borrowed jobs go before a's own
    // background job, although that one has the lower priority.
    let j = enqueue_one(&env, job("a-urgent", "a", Priority::Urgent, 2)).await;
    let started = env.queue.preempt().await.unwrap();
    let v = victims_of(&started, &j);
    assert_eq!(v.len(), 1, "{started:?}");
    assert!(
        v[0] != ids[3],
        "the background job of the team within its quota is spared"
    );

    // Reclaim: a background job of a may not preempt normal jobs by priority, but a is
    // below its nominal quota and b is over its own.
    let env = TestEnv::new().await;
    env.queue
        .set_admission(&config(8, &[("a", 4), ("b", 4)]))
        .await
        .unwrap();
    let w = live_worker(&env).await;
    let ids = run_all(
        &env,
        &w,
        (0..4)
            .map(|i| job(&format!("b{i}"), "b", Priority::Normal, 2))
            .collect(),
    )
    .await;
    for id in &ids {
        age(&env, id, 600).await;
    }
    let r = enqueue_one(&env, job("a-bg", "a", Priority::Background, 4)).await;
    let started = env.queue.preempt().await.unwrap();
    let v = victims_of(&started, &r);
    assert_eq!(v.len(), 2, "{started:?}");
    // The victims' GPUs are a's, although b's jobs are more urgent than its own: once they
    // are handed back, the claim starts a's job, not b's again.
    for id in &v {
        env.queue.release(&w, id, PREEMPTED).await.unwrap();
    }
    assert_eq!(claim(&env, &w).await, vec![r.clone()]);
    assert!(env.queue.preempt().await.unwrap().is_empty(), "no second round");
    // Nothing more than its nominal: a job of a that would put it over gets nothing.
    let env = TestEnv::new().await;
    env.queue
        .set_admission(&config(8, &[("a", 4), ("b", 4)]))
        .await
        .unwrap();
    let w = live_worker(&env).await;
    let ids = run_all(
        &env,
        &w,
        (0..4)
            .map(|i| job(&format!("b{i}"), "b", Priority::Normal, 2))
            .collect(),
    )
    .await;
    for id in &ids {
        age(&env, id, 600).await;
    }
    env.queue
        .enqueue_batch(vec![job("a-bg-big", "a", Priority::Background, 6)])
        .await
        .unwrap();
    assert!(env.queue.preempt().await.unwrap().is_empty());
}

#[tokio::test]
async fn urgent_jobs_young_jobs_and_opted_out_jobs_are_not_preempted() {
    let env = TestEnv::new().await;
    let mut c = config(4, &[]);
    c.preemption.min_runtime_secs = Some(3600);
    env.queue.set_admission(&c).await.unwrap();
    let w = live_worker(&env).await;
    let mut opted_out = job("keep", "t", Priority::Urgent, 1);
    opted_out.preemptible = Some(false);
    let ids = run_all(
        &env,
        &w,
        vec![
            job("u1", "t", Priority::Urgent, 1),
            opted_out,
            job("young", "t", Priority::Background, 1),
            job("old", "t", Priority::Background, 1),
        ],
    )
    .await;
    for id in [&ids[0], &ids[1], &ids[3]] {
        age(&env, id, 7200).await;
    }
    // Urgent needs 2: only "old" may go (u1 is urgent, "young" has run under an hour),
    // and one is not enough, so nothing happens.
    env.queue
        .enqueue_batch(vec![job("u2", "t", Priority::Urgent, 2)])
        .await
        .unwrap();
    assert!(env.queue.preempt().await.unwrap().is_empty());
    // With the minimum run time gone "young" may go too; still never u1.
    c.preemption.min_runtime_secs = Some(0);
    env.queue.set_admission(&c).await.unwrap();
    let started = env.queue.preempt().await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(
        sorted(started[0].victims.clone()),
        sorted(vec![ids[2].clone(), ids[3].clone()])
    );

    // A background job may not opt out unless its team is allowed to.
    let mut bg = job("bg", "t", Priority::Background, 1);
    bg.preemptible = Some(false);
    let e = env
        .queue
        .enqueue_batch(vec![bg.clone()])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("only allowed for urgent (p0) jobs"), "{e}");
    c.preemption.non_preemptible_teams.insert("t".into());
    env.queue.set_admission(&c).await.unwrap();
    env.queue.enqueue_batch(vec![bg]).await.unwrap();
}

#[tokio::test]
async fn a_pool_preempts_at_most_its_rate_and_a_job_at_most_max_preemptions_times() {
    let env = TestEnv::new().await;
    let mut c = config(4, &[]);
    c.preemption.max_per_minute = Some(2);
    c.preemption.max_preemptions = Some(1);
    env.queue.set_admission(&c).await.unwrap();
    let w = live_worker(&env).await;
    let ids = run_all(
        &env,
        &w,
        (0..4)
            .map(|i| job(&format!("bg{i}"), "t", Priority::Background, 1))
            .collect(),
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        age(&env, id, 600 + i as u64).await;
    }
    // Three victims would be over the rate: nothing (a preemption is all or nothing).
    let big = enqueue_one(&env, job("u3", "t", Priority::Urgent, 3)).await;
    assert!(env.queue.preempt().await.unwrap().is_empty());
    env.queue.cancel(&big, "test").await.unwrap();
    // Two are within it.
    let j = enqueue_one(&env, job("u2", "t", Priority::Urgent, 2)).await;
    let v = victims_of(&env.queue.preempt().await.unwrap(), &j);
    assert_eq!(v.len(), 2);
    for id in &v {
        env.queue.release(&w, id, PREEMPTED).await.unwrap();
    }
    assert_eq!(claim(&env, &w).await, vec![j.clone()]);
    // The minute's two are used: another urgent job waits.
    let k = enqueue_one(&env, job("u1", "t", Priority::Urgent, 1)).await;
    assert!(env.queue.preempt().await.unwrap().is_empty());
    // With the rate raised and room made, the two victims (preempted once, the cap)
    // are claimed again from the head of their queue, with the preempted attempt not
    // counted; afterwards they are never chosen again, the other two are.
    c.preemption.max_per_minute = Some(100);
    env.queue.set_admission(&c).await.unwrap();
    env.queue.cancel(&k, "test").await.unwrap();
    succeed(&env, &w, &j.clone()).await;
    let again = claim(&env, &w).await;
    assert_eq!(sorted(again.clone()), v, "the victims were queued at the head");
    let rec = env.queue.get(&v[0]).await.unwrap().unwrap();
    assert_eq!(rec.attempt, 1, "the preempted attempt was not counted");
    for id in &again {
        age(&env, id, 7200).await;
    }
    let l = enqueue_one(&env, job("u1b", "t", Priority::Urgent, 2)).await;
    let chosen = victims_of(&env.queue.preempt().await.unwrap(), &l);
    assert_eq!(
        chosen,
        sorted(vec![ids[2].clone(), ids[3].clone()]),
        "not the capped {v:?}"
    );
}

#[tokio::test]
async fn a_p0_job_starts_once_exactly_enough_victims_have_stopped_and_nothing_else_takes_their_gpus() {
    let env = TestEnv::new().await;
    env.queue.set_admission(&config(4, &[])).await.unwrap();
    let w = live_worker(&env).await;
    let ids = run_all(
        &env,
        &w,
        (0..4)
            .map(|i| job(&format!("bg{i}"), "t", Priority::Background, 1))
            .collect(),
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        age(&env, id, 600 + i as u64).await;
    }
    let j = enqueue_one(&env, job("urgent", "u", Priority::Urgent, 2)).await;
    let v = victims_of(&env.queue.preempt().await.unwrap(), &j);
    assert_eq!(v.len(), 2);
    let status = env.queue.status().await.unwrap();
    let pool = status.pools.iter().find(|p| p.pool == "a100").unwrap();
    assert_eq!(pool.reserved_by.as_deref(), Some(j.as_str()));
    let draining: Vec<JobId> = pool.draining.iter().map(|d| d.parse().unwrap()).collect();
    assert_eq!(sorted(draining), v, "status shows the jobs draining");

    // One victim stops: one GPU is free, which neither j (needs 2) nor a background job
    // may take.
    env.queue.release(&w, &v[0], PREEMPTED).await.unwrap();
    let filler = enqueue_one(&env, job("filler", "t", Priority::Background, 1)).await;
    let got = claim(&env, &w).await;
    assert!(got.is_empty(), "nothing may take the reserved GPU: {got:?}");
    // The second stops: j starts.
    env.queue.release(&w, &v[1], PREEMPTED).await.unwrap();
    assert_eq!(claim(&env, &w).await, vec![j.clone()]);

    // The victim's history names its preemptor and the GPU time it lost, the attempt is
    // not counted, and it waits at the head of its priority, ahead of the filler.
    let rec = env.queue.get(&v[0]).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempt), (JobState::Queued, 0));
    let last = rec.events.last().unwrap();
    let detail = last.detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("preempted by {j} (priority); ")),
        "{detail}"
    );
    assert!(detail.ends_with(" GPU-s lost"), "{detail}");
    let lost: f64 = detail
        .trim_start_matches(&format!("preempted by {j} (priority); "))
        .trim_end_matches(" GPU-s lost")
        .parse()
        .unwrap();
    assert!(
        lost >= 600.0,
        "ran 10 minutes on 1 GPU without a checkpoint: {lost}"
    );
    assert_eq!((rec.preemptions, rec.preempted_for.clone()), (1, None));
    assert!(rec.lost_gpu_secs >= 600.0, "{}", rec.lost_gpu_secs);
    let preemptor = env.queue.get(&j).await.unwrap().unwrap();
    let named: Vec<JobId> = preemptor.preempting.iter().map(|d| d.parse().unwrap()).collect();
    assert_eq!(sorted(named), v, "the preemptor names its victims");
    let waiting = env.queue.why_waiting(&filler).await.unwrap().unwrap();
    assert_eq!(waiting.position, Some(2), "both victims are ahead of the filler");
    let usage = env.queue.usage().await.unwrap();
    assert_eq!(usage.pools["a100"].gpus, 4);
}

#[tokio::test]
async fn cancelling_the_preemptor_drops_the_reservation_and_the_victims_keep_running() {
    let env = TestEnv::new().await;
    env.queue.set_admission(&config(2, &[])).await.unwrap();
    let w = live_worker(&env).await;
    let ids = run_all(
        &env,
        &w,
        (0..2)
            .map(|i| job(&format!("bg{i}"), "t", Priority::Background, 1))
            .collect(),
    )
    .await;
    for id in &ids {
        age(&env, id, 600).await;
    }
    let j = enqueue_one(&env, job("urgent", "u", Priority::Urgent, 2)).await;
    let v = victims_of(&env.queue.preempt().await.unwrap(), &j);
    assert_eq!(v, sorted(ids.clone()));
    env.queue.cancel(&j, "changed my mind").await.unwrap();
    for id in &ids {
        assert_eq!(preempt_directive(&env, id).await, Directive::Run);
    }
    let status = env.queue.status().await.unwrap();
    let pool = status.pools.iter().find(|p| p.pool == "a100").unwrap();
    assert_eq!(pool.reserved_by, None);
    assert!(pool.draining.is_empty(), "{:?}", pool.draining);
    // They end normally, as if nothing had happened.
    let ended: Vec<EndedAttempt> = ids
        .iter()
        .map(|id| EndedAttempt {
            id: id.clone(),
            attempt: None,
            claim_token: None,
            outcome: Outcome::Succeeded,
        })
        .collect();
    env.queue.finish_many(&w, &ended).await.unwrap();
    assert_eq!(
        env.queue.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
}

/// One GPU in the default pool, and preemption without a minimum run time.
pub(crate) fn one_gpu() -> AdmissionConfig {
    let mut c = AdmissionConfig {
        pools: [(
            "default".to_string(),
            PoolConfig {
                capacity: Some(1),
                ..PoolConfig::default()
            },
        )]
        .into(),
        ..AdmissionConfig::default()
    };
    c.preemption.min_runtime_secs = Some(0);
    c
}

/// The same, with `grace_secs` for the victims.
fn one_gpu_with_grace(grace_secs: u64) -> AdmissionConfig {
    let mut c = one_gpu();
    c.preemption.grace_secs = Some(grace_secs);
    c
}

fn lost_gpu_secs(detail: &str) -> f64 {
    detail
        .rsplit("; ")
        .next()
        .and_then(|s| s.strip_suffix(" GPU-s lost"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no GPU time lost in {detail:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preempted_trainer_resumes_from_its_checkpoint_without_losing_an_attempt() {
    let env = TestEnv::new().await;
    env.queue.set_admission(&one_gpu_with_grace(30)).await.unwrap();
    let mut trainer = JobSpec::new(
        "sweep",
        "research",
        vec![
            crate::support::bin("trainer").display().to_string(),
            "--epoch-delay-ms".into(),
            "150".into(),
        ],
    );
    trainer.epochs = 20;
    trainer.resources.gpus = 1;
    trainer.priority = Priority::Background;
    trainer.max_attempts = 1;
    let victim = enqueue_one(&env, trainer).await;
    let port = crate::support::free_port();
    let _serve = env.serve_with(&["--listen", &format!("127.0.0.1:{port}")]);
    let _w = env.worker(&["--gpus", "0"]);
    let before: u32 = crate::support::wait_for("four epochs", Duration::from_secs(60), || async {
        let p = env.record(&victim).await.progress?;
        let done: u32 = p.strip_prefix("epoch ")?.split('/').next()?.parse().ok()?;
        (done >= 4).then_some(done)
    })
    .await;
    let mut urgent = crate::support::sh("incident", "echo fixed");
    urgent.resources.gpus = 1;
    urgent.priority = Priority::Urgent;
    let preemptor = enqueue_one(&env, urgent).await;
    env.wait_state(&preemptor, JobState::Succeeded, Duration::from_secs(30))
        .await;
    let done = env
        .wait_state(&victim, JobState::Succeeded, Duration::from_secs(60))
        .await;
    // One attempt of one allowed: the preempted one did not count.
    assert_eq!((done.attempt, done.attempt_limit), (1, 1));
    let preempted = done
        .events
        .iter()
        .find_map(|e| e.detail.as_deref().filter(|d| d.starts_with("preempted by ")))
        .expect("a preempted transition");
    assert!(
        preempted.starts_with(&format!("preempted by {preemptor} (priority); ")),
        "{preempted}"
    );
    // It checkpoints every epoch (150 ms apart): far less than the run is lost.
    let lost = lost_gpu_secs(preempted);
    assert!(lost < 5.0, "{lost} GPU-s lost with a checkpoint per epoch");
    // The second attempt resumed after the epochs the first one had checkpointed.
    let log = env.queue.logs(&victim, 1000).await.unwrap();
    let resumed: u32 = log
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["event"] == "resumed").then(|| v["from_epoch"].as_u64())?
        })
        .unwrap_or_else(|| panic!("no resume in the log: {log:?}")) as u32;
    assert!(
        resumed > before,
        "resumed at epoch {resumed}, having seen {before} done"
    );
    assert!(resumed <= 20, "{resumed}");
    // serve counts it, with the GPU time lost.
    let body = crate::observability::scrape_until(
        port,
        &["gpuq_preemptions_total{pool=\"default\",victim_priority=\"p2\",reason=\"priority\"} 1"],
    )
    .await;
    assert!(
        body.contains("gpuq_preemption_lost_gpu_seconds_total{pool=\"default\",victim_priority=\"p2\",reason=\"priority\"}"),
        "{body}"
    );
    crate::observability::promtool_accepts(&body);
    // `show` tells the story.
    let show = crate::support::stdout(&env.scheduler(&["show", victim.as_str()]));
    assert!(show.contains("preemptions 1, "), "{show}");
    assert!(
        show.contains(&format!("preempted by {preemptor} (priority); ")),
        "{show}"
    );
    let show = crate::support::stdout(&env.scheduler(&["show", preemptor.as_str()]));
    assert!(show.contains(&format!("preempting {victim}")), "{show}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_victims_worker_killed_in_its_grace_loses_nothing_and_leaves_usage_exact() {
    let env = TestEnv::new().await;
    env.queue.set_admission(&one_gpu_with_grace(60)).await.unwrap();
    let term = env.path("got-term");
    let ran = env.path("ran-once");
    // The first attempt ignores SIGTERM (it is in its grace until SIGKILL); the next one
    // ends at once.
    let mut stubborn = crate::support::sh(
        "stubborn",
        &format!(
            "if [ -e {ran} ]; then exit 0; fi; touch {ran}; trap 'touch {term}' TERM; \
             while true; do sleep 0.1; done",
            ran = ran.display(),
            term = term.display()
        ),
    );
    stubborn.resources.gpus = 1;
    stubborn.priority = Priority::Background;
    let victim = enqueue_one(&env, stubborn).await;
    let mut a = env.worker(&["--gpus", "0"]);
    env.wait_state(&victim, JobState::Running, Duration::from_secs(30))
        .await;
    let mut urgent = crate::support::sh("incident", "echo fixed");
    urgent.resources.gpus = 1;
    urgent.priority = Priority::Urgent;
    let preemptor = enqueue_one(&env, urgent).await;
    crate::support::wait_for("the victim to get SIGTERM", Duration::from_secs(30), || async {
        term.exists().then_some(())
    })
    .await;
    a.kill();
    // Another worker recovers the victim and runs the preemptor, then the victim.
    let _b = env.worker(&["--gpus", "1"]);
    env.wait_state(&preemptor, JobState::Succeeded, Duration::from_secs(60))
        .await;
    env.wait_state(&victim, JobState::Succeeded, Duration::from_secs(60))
        .await;
    let usage = env.queue.usage().await.unwrap();
    assert_eq!(usage.running, 0, "{usage:?}");
    assert!(
        usage.pools.values().all(|h| h.gpus == 0 && h.jobs == 0),
        "{usage:?}"
    );
    let drift = env.queue.recount_usage(false).await.unwrap();
    assert!(drift.is_empty(), "{drift:?}");
}

#[tokio::test]
async fn quota_apply_loads_the_preemption_section_and_refuses_a_policy_that_preempts_upwards() {
    let env = TestEnv::new().await;
    let file = env.path("quotas.toml");
    std::fs::write(
        &file,
        r#"
[pools.a100]
capacity = 16

[preemption]
grace_secs = 90
min_runtime_secs = 600
max_per_minute = 4
max_preemptions = 2
reclaim = false
non_preemptible_teams = ["payments"]

[preemption.policy]
p0 = ["p2"]
"#,
    )
    .unwrap();
    let out = env.scheduler(&["quota", "apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let c = env.queue.admission().await.unwrap().unwrap();
    let p = &c.preemption;
    assert_eq!(
        (
            p.grace_secs,
            p.min_runtime_secs,
            p.max_per_minute,
            p.max_preemptions,
            p.reclaim
        ),
        (Some(90), Some(600), Some(4), Some(2), Some(false))
    );
    assert_eq!(p.may_preempt(Priority::Urgent), vec![Priority::Background]);
    assert_eq!(p.may_preempt(Priority::Normal), vec![Priority::Background]);
    assert!(p.non_preemptible_teams.contains("payments"));

    // Background preempting normal is refused, in one line, and nothing changes.
    std::fs::write(&file, "[preemption.policy]\np2 = [\"p1\"]\n").unwrap();
    let out = env.scheduler(&["quota", "apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", crate::support::stderr(&out));
    let err = crate::support::stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("p2 may only preempt less urgent priorities, not p1"),
        "{err}"
    );
    assert_eq!(env.queue.admission().await.unwrap().unwrap(), c);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_of_an_urgent_burst_over_a_background_backlog_preempts_for_it() {
    // Pool a100, 4 GPUs. Four background jobs of 12 s fill it at 0; two urgent jobs of 2 s
    // arrive at 2. With preemption they start within about two trace seconds (a reaper
    // tick and a cancel check, accelerated 4x); in the baseline (isolated FIFO
    // partitions, no preemption) they wait for the backlog, until 12.
    let env = TestEnv::new().await;
    let trace = env.path("trace.csv");
    std::fs::write(
        &trace,
        "submit_s,duration_s,gpus,team,priority,gpu_type\n\
         0,12,1,research,p2,a100\n0,12,1,research,p2,a100\n0,12,1,research,p2,a100\n0,12,1,research,p2,a100\n\
         2,2,1,oncall,p0,a100\n2,2,1,oncall,p0,a100\n",
    )
    .unwrap();
    let quotas = env.path("quotas.toml");
    std::fs::write(
        &quotas,
        "[pools.a100]\ncapacity = 4\n[preemption]\nmin_runtime_secs = 0\n",
    )
    .unwrap();
    let rows = crate::support::replay_rows(&trace, &quotas, "4", None);
    let value = |case: &str| crate::support::row_value(&rows, case);
    let urgent_wait = value("quotas priority p0 wait p99");
    let baseline_wait = value("partitions priority p0 wait p99");
    assert!(
        urgent_wait < 5.0,
        "urgent jobs waited {urgent_wait} trace s with preemption"
    );
    assert!(baseline_wait > 8.0, "and {baseline_wait} without");
    assert_eq!(
        value("quotas preemptions"),
        2.0,
        "two victims for two urgent GPUs"
    );
    assert_eq!(value("partitions preemptions"), 0.0);
    // The victims start again (simulated jobs keep no checkpoint), so they lose what ran.
    assert!(value("quotas GPU time preemptions lost") > 1.0);
}

/// A live worker that holds `devices` GPUs of pool a100 (a local worker with `--gpus`).
async fn device_worker(env: &TestEnv, name: &str, devices: usize) -> WorkerId {
    let w = WorkerId::generate(name);
    let mut info = WorkerInfo::starting(&w, "test", "local", 8);
    info.pools = vec!["a100".into()];
    info.gpus = (0..devices).map(|d| d.to_string()).collect();
    env.queue.heartbeat(&info, Duration::from_secs(60)).await.unwrap();
    w
}

async fn claim_on(env: &TestEnv, w: &WorkerId, free: u32) -> Vec<JobId> {
    let room = Room {
        pools: vec!["a100".into()],
        free_gpus: Some(free),
    };
    env.queue
        .claim_within(w, 10, "t", &room)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect()
}

#[tokio::test]
async fn on_workers_with_devices_the_victims_are_all_on_one_worker() {
    // Two local workers with 4 GPUs each, each running two 2-GPU background jobs. The
    // pool's capacity comes from their devices. A 4-GPU urgent job can only start on one
    // worker's free devices, so both victims must be on the same worker, whatever the
    // work the others would lose.
    let env = TestEnv::new().await;
    let mut c = config(0, &[]);
    c.pools.get_mut("a100").unwrap().capacity = None;
    env.queue.set_admission(&c).await.unwrap();
    let a = device_worker(&env, "box-a", 4).await;
    let b = device_worker(&env, "box-b", 4).await;
    let mut on = Vec::new();
    for (w, i) in [(&a, 0), (&a, 1), (&b, 2), (&b, 3)] {
        let id = enqueue_one(&env, job(&format!("bg{i}"), "t", Priority::Background, 2)).await;
        let free = 4 - 2 * (i % 2) as u32;
        assert_eq!(claim_on(&env, w, free).await, vec![id.clone()]);
        on.push((w.clone(), id));
    }
    // By work lost alone the choice would be bg1 (on a) and bg3 (on b).
    for ((_, id), secs) in on.iter().zip([1000, 600, 1000, 600]) {
        age(&env, id, secs).await;
    }
    let j = enqueue_one(&env, job("urgent", "u", Priority::Urgent, 4)).await;
    let v = victims_of(&env.queue.preempt().await.unwrap(), &j);
    assert_eq!(v.len(), 2, "{v:?}");
    let hosts: Vec<&WorkerId> = on
        .iter()
        .filter(|(_, id)| v.contains(id))
        .map(|(w, _)| w)
        .collect();
    assert_eq!(hosts[0], hosts[1], "victims on two workers: {v:?}");
    let host = hosts[0].clone();
    for id in &v {
        env.queue.release(&host, id, PREEMPTED).await.unwrap();
    }
    assert_eq!(claim_on(&env, &host, 4).await, vec![j]);
}

#[tokio::test]
async fn a_victim_that_ends_by_itself_leaves_no_draining_mark() {
    let env = TestEnv::new().await;
    env.queue.set_admission(&config(1, &[])).await.unwrap();
    let w = live_worker(&env).await;
    let ids = run_all(&env, &w, vec![job("bg", "t", Priority::Background, 1)]).await;
    age(&env, &ids[0], 600).await;
    let j = enqueue_one(&env, job("urgent", "u", Priority::Urgent, 1)).await;
    assert_eq!(victims_of(&env.queue.preempt().await.unwrap(), &j), ids);
    // It finishes in its grace: it succeeded, and nothing drains any more.
    succeed(&env, &w, &ids[0].clone()).await;
    let status = env.queue.status().await.unwrap();
    let pool = status.pools.iter().find(|p| p.pool == "a100").unwrap();
    assert!(pool.draining.is_empty(), "{:?}", pool.draining);
    assert_eq!(
        env.queue.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
    assert_eq!(claim(&env, &w).await, vec![j]);
}
