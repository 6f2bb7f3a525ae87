//! Connections as production has them: Redis ACL users and TLS (`rediss://`), against
//! private redis-servers the tests start and stop.

use crate::support::{stderr, stdout, wait_for, PrivateRedis, TestCerts, TestEnv};
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
