//! Connections as production has them, against private servers the tests start and stop:
//! Redis ACL users and TLS (`rediss://`), PostgreSQL over TLS, and a Sentinel failover.

use crate::servers::{PrivatePostgres, PrivateRedis, SentinelSet, TestCerts};
use crate::support::{free_port, sh, stderr, stdout, wait_for, TestEnv};
use common::JobState;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Enqueues a job with `scheduler` through `url`, has a worker run it, and waits until
/// `show` says it succeeded.
async fn a_job_runs_through(env: &TestEnv, url: &str, envs: &[(&str, &str)]) {
    let out = env.scheduler_via(
        url,
        envs,
        &[
            "enqueue",
            "--name",
            "over-the-wire",
            "--id",
            "wire-1",
            "--",
            "true",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let _w = env.worker_with(url, &[], envs);
    wait_for("the job to succeed", LONG, || async {
        let out = env.scheduler_via(url, envs, &["show", "wire-1", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["state"] == "succeeded").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_user_with_a_password_runs_jobs_and_a_wrong_one_is_refused_clearly() {
    let env = TestEnv::new().await;
    let redis = PrivateRedis::with(
        &[
            "--user",
            "default",
            "off",
            "--user",
            "gpuq",
            "on",
            ">s3cret-pw",
            "~*",
            "&*",
            "+@all",
        ],
        None,
        |port| format!("redis://gpuq:s3cret-pw@127.0.0.1:{port}"),
    )
    .await;
    a_job_runs_through(&env, &redis.url, &[]).await;
    let wrong = redis.url.replace("s3cret-pw", "nope");
    let out = env.scheduler_via(&wrong, &[], &["status"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach Redis") && err.contains("authentication failed"),
        "{err}"
    );
    assert!(
        !err.contains("nope") && !err.contains("s3cret-pw"),
        "the password is masked: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_a_trusted_certificate_runs_jobs_and_an_untrusted_one_is_refused() {
    let env = TestEnv::new().await;
    let certs = TestCerts::make(&env.path("certs"));
    let redis = PrivateRedis::with(&[], Some(&certs), |port| format!("rediss://localhost:{port}")).await;
    let ca = certs.ca.display().to_string();
    // The binaries trust the test CA through the standard variable rustls reads.
    a_job_runs_through(&env, &redis.url, &[("SSL_CERT_FILE", ca.as_str())]).await;
    // Trusting another CA, the server's certificate is not trusted: refused.
    let other = TestCerts::make(&env.path("other-ca"));
    let other_ca = other.ca.display().to_string();
    let out = env.scheduler_via(&redis.url, &[("SSL_CERT_FILE", other_ca.as_str())], &["status"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("invalid peer certificate"), "{err}");
    // A plain redis:// to the TLS port does not work either.
    let plain = redis.url.replace("rediss://", "redis://");
    let out = env.scheduler_via(&plain, &[], &["status"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_store_over_verified_tls_records_jobs_and_an_untrusted_or_plain_one_is_refused() {
    use common::store::JobStore;
    let mut env = TestEnv::new().await;
    let certs = TestCerts::make(&env.path("certs"));
    let pg = PrivatePostgres::tls(env.path("pg"), &certs).await;
    let ca = certs.ca.display().to_string();
    env.database_url = pg.url(&format!("sslmode=verify-full&sslrootcert={ca}"));
    let _serve = env.serve();
    a_job_runs_through(&env, &crate::support::redis_url(), &[]).await;
    // `serve` recorded it in the store over the verified connection.
    let store = JobStore::open(&env.database_url).await.unwrap();
    wait_for("the store to record the success", LONG, || async {
        let rec = store.get(&"wire-1".parse().unwrap()).await.ok()??;
        (rec.state == common::JobState::Succeeded).then_some(())
    })
    .await;
    // Encrypted without verifying the server: works too.
    JobStore::open(&pg.url("sslmode=require"))
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    // A certificate from a CA the client does not trust: refused, naming why.
    let other = TestCerts::make(&env.path("other-ca"));
    let untrusted = pg.url(&format!("sslmode=verify-full&sslrootcert={}", other.ca.display()));
    let err = JobStore::open(&untrusted).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot open job store") && err.contains("certificate"),
        "{err}"
    );
    // Without TLS the server (hostssl only) refuses the connection.
    let err = JobStore::open(&pg.url("sslmode=disable"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no encryption"), "{err}");
}

/// Two workers and `serve` drain a queue they reach through three Sentinels. Mid-drain
/// the Sentinels fail over to the replica: the workers, `serve`, the CLI and the client
/// follow it, the jobs enqueued after it run too, and every job ends succeeded, in Redis
/// and in the store, having run at least once.
#[tokio::test(flavor = "multi_thread")]
async fn the_pool_keeps_draining_across_a_sentinel_failover_and_loses_nothing() {
    use common::queue::RedisQueue;
    const HALF: usize = 150;
    let env = TestEnv::new().await;
    let set = SentinelSet::start(env.path("sentinel")).await;
    let q = RedisQueue::connect(&set.url, &env.ns).await.unwrap();
    let ran = env.path("ran");
    let spec = |i: usize| {
        let mut s = sh("failover", &format!("echo \"$GPUQ_JOB_ID\" >> {}", ran.display()));
        s.id = Some(format!("f-{i}").parse().unwrap());
        s
    };
    q.enqueue_batch((0..HALF).map(spec).collect()).await.unwrap();
    let _serve = env.serve_via(&set.url, &["--listen", &format!("127.0.0.1:{}", free_port())]);
    let _w1 = env.worker_with(&set.url, &["--concurrency", "4"], &[]);
    let _w2 = env.worker_with(&set.url, &["--concurrency", "4"], &[]);
    let succeeded = |q: RedisQueue| async move {
        let mut n = 0;
        for i in 0..2 * HALF {
            let id = format!("f-{i}").parse().unwrap();
            if let Ok(Some(r)) = q.get(&id).await {
                n += usize::from(r.state == JobState::Succeeded);
            }
        }
        n
    };
    wait_for("a quarter of the jobs to succeed", LONG, || {
        let q = q.clone();
        async move { (succeeded(q).await >= HALF / 4).then_some(()) }
    })
    .await;
    set.fail_over().await;
    // The same handle follows the new primary. Calls fail while it moves, and enqueue
    // until the new primary has a replica again to acknowledge it: until then it reports
    // that it is not confirmed, and retrying with the same ids adds only what is missing.
    wait_for("the second half to be enqueued on the new primary", LONG, || {
        let q = q.clone();
        async move { q.enqueue_batch((HALF..2 * HALF).map(spec).collect()).await.ok() }
    })
    .await;
    wait_for("every job to succeed", Duration::from_secs(120), || {
        let q = q.clone();
        async move { (succeeded(q).await == 2 * HALF).then_some(()) }
    })
    .await;
    // Each ran (at least once), and the workers heartbeat to the new primary.
    let lines = std::fs::read_to_string(&ran).unwrap();
    let seen: std::collections::BTreeSet<&str> = lines.lines().collect();
    for i in 0..2 * HALF {
        assert!(seen.contains(format!("f-{i}").as_str()), "f-{i} never ran");
    }
    // `serve` followed too: the store has every success.
    let store = common::store::JobStore::open(&env.database_url).await.unwrap();
    wait_for("the store to record every success", LONG, || async {
        let listed = store
            .list(&common::ListFilter {
                state: Some(JobState::Succeeded),
                limit: 1_000,
                ..Default::default()
            })
            .await
            .ok()?;
        (listed.len() == 2 * HALF).then_some(())
    })
    .await;
    // And the CLI reaches the new primary through the same URL.
    let out = env.scheduler_via(&set.url, &[], &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let direct = RedisQueue::connect(&set.replica.url, &env.ns).await.unwrap();
    assert_eq!(direct.workers().await.unwrap().len(), 2);
    let role: Vec<redis::Value> = {
        let client = redis::Client::open(set.replica.url.clone()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("ROLE").query_async(&mut c).await.unwrap()
    };
    assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())));
}

/// Behind Sentinel with `?replicas=2` and one replica, no enqueue can be confirmed: it is
/// reported as not confirmed, naming the id it was given (so that repeating it adds
/// nothing new), and the shared connection is not held up by the wait.
#[tokio::test(flavor = "multi_thread")]
async fn an_enqueue_too_few_replicas_acknowledge_is_reported_with_its_ids() {
    use common::queue::RedisQueue;
    let env = TestEnv::new().await;
    let set = SentinelSet::start(env.path("sentinel")).await;
    let q = RedisQueue::connect(&format!("{}?replicas=2", set.url), &env.ns)
        .await
        .unwrap();
    let (waiting, read) = tokio::join!(q.enqueue_batch(vec![sh("unconfirmed", "true")]), async {
        // Issued while the enqueue waits for its replicas: answered at once.
        let started = std::time::Instant::now();
        q.status().await.unwrap();
        started.elapsed()
    });
    let err = waiting.unwrap_err();
    let common::Error::Unreplicated { acked, wanted, ids } = &err else {
        panic!("{err}");
    };
    assert_eq!((*acked, *wanted, ids.len()), (1, 2, 1));
    assert!(err.to_string().contains(ids[0].as_str()), "{err}");
    assert!(
        read < common::queue::REPLICA_ACK_TIMEOUT / 2,
        "a read waited {read:?}"
    );
    // The job is on the primary; enqueueing its id again adds nothing.
    assert!(q.get(&ids[0]).await.unwrap().is_some());
    let mut again = sh("unconfirmed", "true");
    again.id = Some(ids[0].clone());
    let err = q.enqueue_batch(vec![again]).await.unwrap_err();
    assert!(matches!(err, common::Error::Unreplicated { .. }), "{err}");
    assert_eq!(q.status().await.unwrap().queued(), 1);
}
