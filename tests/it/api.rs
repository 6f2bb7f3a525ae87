//! The HTTP API against a real `scheduler serve --api`, Redis and store: tokens and
//! roles, team isolation, audit, bad input, blocking waits, log streaming, and the
//! checked-in OpenAPI document.

use crate::support::{free_port, stderr, stdout, wait_for, TestEnv, WorkerProcess};
use serde_json::{json, Value};
use std::time::Duration;

/// A running API and the address it answers on.
struct Served {
    base: String,
    _serve: WorkerProcess,
}

fn token(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = env.scheduler(&all);
    assert!(out.status.success(), "token create: {}", stderr(&out));
    let t = stdout(&out).trim().to_string();
    assert!(t.starts_with("gpuq_"), "{t}");
    t
}

async fn serve_api(env: &TestEnv, extra: &[&str]) -> Served {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--api", "--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let serve = env.serve_with(&args);
    let base = format!("http://{listen}");
    let probe = format!("{base}/openapi.json");
    wait_for("the API to answer", Duration::from_secs(20), || {
        let probe = probe.clone();
        async move { ureq::get(&probe).call().ok().map(|_| ()) }
    })
    .await;
    Served { base, _serve: serve }
}

/// Status and JSON body of a request (errors included).
fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req = ureq::request(method, url).set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn spec(name: &str, script: &str) -> Value {
    json!({"name": name, "command": ["sh", "-c", script], "epochs": 1})
}

#[tokio::test]
async fn the_api_refuses_to_start_without_a_token() {
    let env = TestEnv::new().await;
    let mut serve = env.serve_with(&["--api", "--listen", &format!("127.0.0.1:{}", free_port())]);
    let code = wait_for("serve to exit", Duration::from_secs(20), || {
        let done = serve.try_wait();
        async move { done }
    })
    .await;
    assert_eq!(code, Some(2), "{}", serve.log());
    assert!(serve.log().contains("scheduler token create"), "{}", serve.log());
}

#[tokio::test]
async fn team_tokens_see_and_change_their_own_teams_jobs_only() {
    let env = TestEnv::new().await;
    let vision = token(
        &env,
        &["--team", "vision", "--role", "submitter", "--name", "vision-ci"],
    );
    let viewer = token(&env, &["--team", "vision", "--role", "viewer"]);
    let nlp = token(&env, &["--team", "nlp", "--role", "submitter"]);
    let admin = token(&env, &["--role", "admin"]);
    let api = serve_api(&env, &[]).await;
    let jobs = format!("{}/v1/jobs", api.base);

    // A spec naming no team takes the token's.
    let (status, body) = call(
        "POST",
        &jobs,
        Some(&vision),
        Some(&spec("r50", "exit 0").to_string()),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["job"]["spec"]["team"], "vision");
    assert_eq!(body["job"]["events"][0]["detail"], "enqueued by vision-ci");
    let id = body["job"]["id"].as_str().unwrap().to_string();
    let job = format!("{jobs}/{id}");
    // The enqueue's reply is the job as Redis holds it, but for where it waits.
    let (_, mut read) = call("GET", &job, Some(&vision), None);
    let map = read.as_object_mut().unwrap();
    assert!(
        map.remove("position").is_some() && map.remove("waiting").is_some(),
        "{read}"
    );
    assert_eq!(body["job"], read);

    // Another team: not found, whether reading, cancelling or retrying; absent from lists.
    for (method, url) in [
        ("GET", job.clone()),
        ("POST", format!("{job}/cancel")),
        ("POST", format!("{job}/retry")),
        ("GET", format!("{job}/logs")),
    ] {
        let (status, body) = call(method, &url, Some(&nlp), None);
        assert_eq!(status, 404, "{method} {url}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    let (_, page) = call("GET", &jobs, Some(&nlp), None);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 0, "{page}");
    let (status, body) = call("GET", &format!("{jobs}?team=vision"), Some(&nlp), None);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // ... and it cannot enqueue for another team.
    let mut other = spec("r51", "exit 0");
    other["team"] = json!("vision");
    let (status, body) = call("POST", &jobs, Some(&nlp), Some(&other.to_string()));
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // A viewer reads but changes nothing.
    let (status, _) = call("GET", &job, Some(&viewer), None);
    assert_eq!(status, 200);
    let (_, page) = call("GET", &jobs, Some(&viewer), None);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "{page}");
    for (method, url, body) in [
        ("POST", jobs.clone(), Some(spec("r52", "exit 0").to_string())),
        ("POST", format!("{job}/cancel"), None),
        (
            "POST",
            format!("{}/v1/batches", api.base),
            Some(json!({"jobs": [spec("r53", "exit 0")]}).to_string()),
        ),
        (
            "PUT",
            format!("{}/v1/budgets", api.base),
            Some(json!({"team": "vision", "amount": "10"}).to_string()),
        ),
        ("GET", format!("{}/v1/tokens", api.base), None),
    ] {
        let (status, b) = call(method, &url, Some(&viewer), body.as_deref());
        assert_eq!(
            (status, b["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {url}: {b}"
        );
    }
    // A submitter may not manage budgets or tokens; an admin may, for every team.
    let (status, _) = call("GET", &format!("{}/v1/tokens", api.base), Some(&vision), None);
    assert_eq!(status, 403);
    let (status, b) = call(
        "PUT",
        &format!("{}/v1/budgets", api.base),
        Some(&admin),
        Some(&json!({"team": "vision", "amount": "10"}).to_string()),
    );
    assert_eq!(status, 200, "{b}");
    let (status, b) = call("GET", &job, Some(&admin), None);
    assert_eq!((status, b["id"].as_str()), (200, Some(id.as_str())));

    // The owner cancels with a reason: the history names who and why, in Redis and in
    // the store.
    let (status, b) = call(
        "POST",
        &format!("{job}/cancel"),
        Some(&vision),
        Some(r#"{"reason":"wrong data"}"#),
    );
    assert_eq!((status, b["state"].as_str()), (200, Some("cancelled")), "{b}");
    let shown = stdout(&env.scheduler(&["show", &id]));
    assert!(shown.contains("cancelled by vision-ci: wrong data"), "{shown}");
    assert!(shown.contains("enqueued by vision-ci"), "{shown}");
    let store = common::store::JobStore::open(&env.database_url).await.unwrap();
    let jid: common::JobId = id.parse().unwrap();
    let stored = wait_for("the store to record the cancel", Duration::from_secs(20), || {
        let store = store.clone();
        let jid = jid.clone();
        async move {
            let r = store.get(&jid).await.ok().flatten()?;
            (r.state == common::JobState::Cancelled).then_some(r)
        }
    })
    .await;
    let details: Vec<_> = stored.events.iter().filter_map(|e| e.detail.clone()).collect();
    assert!(
        details.contains(&"enqueued by vision-ci".to_string()),
        "{details:?}"
    );
    assert!(
        details.contains(&"cancelled by vision-ci: wrong data".to_string()),
        "{details:?}"
    );
    // Non-job writes go to the audit log.
    let audit = store.audit_log(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "budget.set" && a.target == "vision" && a.actor.starts_with("all-admin-")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused_and_no_token_is_logged() {
    let env = TestEnv::new().await;
    let admin = token(&env, &["--role", "admin", "--name", "root"]);
    let brief = token(&env, &["--team", "vision", "--role", "viewer", "--expires", "2s"]);
    let kept = token(&env, &["--team", "vision", "--role", "viewer", "--name", "kept"]);
    let api = serve_api(&env, &[]).await;
    let status_url = format!("{}/v1/status", api.base);
    assert_eq!(call("GET", &status_url, Some(&kept), None).0, 200);
    assert_eq!(call("GET", &status_url, Some(&brief), None).0, 200);
    // No token, a malformed one, an unknown one.
    let (status, b) = call("GET", &status_url, None, None);
    assert_eq!(
        (status, b["code"].as_str()),
        (401, Some("unauthenticated")),
        "{b}"
    );
    assert_eq!(call("GET", &status_url, Some("gpuq_0000"), None).0, 401);
    assert_eq!(call("GET", &status_url, Some("not-a-token"), None).0, 401);
    // Expiry is checked on every request.
    let expired = wait_for("the brief token to expire", Duration::from_secs(10), || {
        let (status, b) = call("GET", &status_url, Some(&brief), None);
        async move { (status == 401).then_some(b) }
    })
    .await;
    assert!(
        expired["message"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
    // Revocation takes effect at once, by name.
    let (status, _) = call(
        "DELETE",
        &format!("{}/v1/tokens/kept", api.base),
        Some(&admin),
        None,
    );
    assert_eq!(status, 204);
    let (status, b) = call("GET", &status_url, Some(&kept), None);
    assert_eq!(status, 401, "{b}");
    assert!(b["message"].as_str().unwrap().contains("revoked"), "{b}");
    // A revocation by another process (the CLI) reaches the server's cached copy too.
    let cli_revoked = token(
        &env,
        &["--team", "vision", "--role", "viewer", "--name", "cli-revoked"],
    );
    assert_eq!(call("GET", &status_url, Some(&cli_revoked), None).0, 200);
    let out = env.scheduler(&["token", "revoke", "cli-revoked"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(
        "the CLI's revocation to reach the server",
        Duration::from_secs(2),
        || {
            let status = call("GET", &status_url, Some(&cli_revoked), None).0;
            async move { (status == 401).then_some(()) }
        },
    )
    .await;
    // Listing shows the tokens, never a secret or its hash.
    let (_, listed) = call("GET", &format!("{}/v1/tokens", api.base), Some(&admin), None);
    let text = listed.to_string();
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 4, "{listed}");
    let cli = stdout(&env.scheduler(&["token", "list", "--json"]));
    for secret in [&admin, &brief, &kept, &cli_revoked] {
        assert!(!text.contains(secret.as_str()) && !cli.contains(secret.as_str()));
        assert!(!text.contains(&scheduler::app::token_hash(secret)));
    }
    let log = api._serve.log();
    for secret in [&admin, &brief, &kept] {
        assert!(!log.contains(secret.as_str()), "a token reached serve's log");
        assert!(
            !log.contains(&secret[5..21]),
            "part of a token reached serve's log"
        );
    }
}

#[tokio::test]
async fn bad_input_gets_a_400_naming_what_is_wrong_and_changes_nothing() {
    let env = TestEnv::new().await;
    let t = token(&env, &["--team", "vision", "--role", "submitter"]);
    let api = serve_api(&env, &[]).await;
    let jobs = format!("{}/v1/jobs", api.base);
    let big = format!(r#"{{"name":"x","command":["{}"]}}"#, "a".repeat(17 * 1024 * 1024));
    let cases: Vec<(&str, String, Option<String>, &str, &str)> = vec![
        (
            "POST",
            jobs.clone(),
            Some("{not json".into()),
            "bad_input",
            "not valid JSON",
        ),
        ("POST", jobs.clone(), Some(String::new()), "bad_input", "empty"),
        (
            "POST",
            jobs.clone(),
            Some(r#"{"name":"a","command":["true"],"colour":"red"}"#.into()),
            "invalid_spec",
            "colour",
        ),
        (
            "POST",
            jobs.clone(),
            Some(r#"{"name":"a","command":["true"],"epochs":"three"}"#.into()),
            "invalid_spec",
            "epochs",
        ),
        (
            "POST",
            jobs.clone(),
            Some(r#"{"name":"a","command":[]}"#.into()),
            "invalid_spec",
            "command",
        ),
        ("POST", jobs.clone(), Some(big), "too_large", "larger than"),
        (
            "POST",
            format!("{}/v1/batches", api.base),
            Some(
                r#"{"jobs":[{"name":"a","command":["true"]},{"name":"b","command":["true"],"gpus":2}]}"#
                    .into(),
            ),
            "invalid_spec",
            "jobs[1]",
        ),
        (
            "POST",
            format!("{}/v1/batches", api.base),
            Some(r#"{"jobs":[],"extra":1}"#.into()),
            "bad_input",
            "extra",
        ),
        ("GET", format!("{jobs}?limit=abc"), None, "bad_input", "limit"),
        ("GET", format!("{jobs}?limit=0"), None, "bad_input", "limit"),
        ("GET", format!("{jobs}?colour=red"), None, "bad_input", "colour"),
        (
            "GET",
            format!("{jobs}?state=sleeping"),
            None,
            "bad_input",
            "state",
        ),
        (
            "GET",
            format!("{jobs}?before=nonsense"),
            None,
            "bad_input",
            "before",
        ),
        ("GET", format!("{jobs}/x/y"), None, "not_found", "route"),
        (
            "GET",
            format!("{jobs}/nope?wait=finished"),
            None,
            "bad_input",
            "wait",
        ),
        (
            "GET",
            format!("{jobs}/nope?wait=succeeded&timeout=1h"),
            None,
            "bad_input",
            "timeout",
        ),
        ("GET", format!("{jobs}/nope"), None, "not_found", "nope"),
    ];
    for (method, url, body, code, names) in cases {
        let (status, b) = call(method, &url, Some(&t), body.as_deref());
        let expected = if code == "not_found" { 404 } else { 400 };
        assert_eq!(status, expected, "{method} {}: {b}", &url[..url.len().min(120)]);
        assert_eq!(b["code"], code, "{b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains(names), "{message:?} should name {names:?}");
        assert!(!message.contains('\n'));
    }
    // Nothing was enqueued.
    let (_, page) = call("GET", &jobs, Some(&t), None);
    assert_eq!(page["jobs"], json!([]), "{page}");
    assert_eq!(
        env.queue
            .status()
            .await
            .unwrap()
            .priorities
            .iter()
            .map(|p| p.depth)
            .sum::<u64>(),
        0
    );
}

#[tokio::test]
async fn an_enqueue_is_idempotent_for_the_same_spec_and_a_conflict_for_another() {
    let env = TestEnv::new().await;
    let t = token(&env, &["--team", "vision", "--role", "submitter"]);
    let api = serve_api(&env, &[]).await;
    let jobs = format!("{}/v1/jobs", api.base);
    let mut s = spec("fixed", "exit 0");
    s["id"] = json!("fixed-1");
    s["resources"] = json!({"gpus": 8});
    assert_eq!(call("POST", &jobs, Some(&t), Some(&s.to_string())).0, 201);
    let (status, b) = call("POST", &jobs, Some(&t), Some(&s.to_string()));
    assert_eq!((status, b["created"].as_bool()), (200, Some(false)), "{b}");
    s["epochs"] = json!(7);
    let (status, b) = call("POST", &jobs, Some(&t), Some(&s.to_string()));
    assert_eq!((status, b["code"].as_str()), (409, Some("conflict")), "{b}");
    let (_, job) = call("GET", &format!("{jobs}/fixed-1"), Some(&t), None);
    assert_eq!(job["spec"]["epochs"], 1, "the first spec stays");
    // A queued job cannot be retried (it used to look like a retry that worked).
    let (status, b) = call("POST", &format!("{jobs}/fixed-1/retry"), Some(&t), None);
    assert_eq!((status, b["code"].as_str()), (409, Some("conflict")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("is queued"), "{b}");
    // Times that are not dates are refused, not read as 1970.
    let (status, b) = call(
        "GET",
        &format!("{}/v1/costs/report?from=3&to=9223372036854775807", api.base),
        Some(&t),
        None,
    );
    assert_eq!((status, b["code"].as_str()), (400, Some("bad_input")), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("to 9223372036854775807"),
        "{b}"
    );
}

#[tokio::test]
async fn a_request_waits_for_a_state_and_a_log_streams_to_the_end() {
    let env = TestEnv::new().await;
    let t = token(&env, &["--team", "vision", "--role", "submitter"]);
    let api = serve_api(&env, &["--api-max-waits", "2"]).await;
    let jobs = format!("{}/v1/jobs", api.base);
    let s = spec("talker", "for i in 1 2 3; do echo line-$i; sleep 0.2; done");
    let (_, b) = call("POST", &jobs, Some(&t), Some(&s.to_string()));
    let id = b["job"]["id"].as_str().unwrap().to_string();
    // Nothing runs it yet: the wait times out, saying so.
    let resp = ureq::get(&format!("{jobs}/{id}?wait=succeeded&timeout=300ms"))
        .set("authorization", &format!("Bearer {t}"))
        .call()
        .unwrap();
    assert_eq!(resp.header("gpuq-wait"), Some("timeout"));
    let _worker = env.worker(&["--gpus", "0"]);
    // Follow the log while another request blocks until the job succeeds.
    let follow_url = format!("{jobs}/{id}/logs/stream");
    let token_copy = t.clone();
    let follower = std::thread::spawn(move || {
        let resp = ureq::get(&follow_url)
            .set("authorization", &format!("Bearer {token_copy}"))
            .call()
            .unwrap();
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        std::io::read_to_string(resp.into_reader()).unwrap()
    });
    let resp = ureq::get(&format!("{jobs}/{id}?wait=succeeded,failed&timeout=60s"))
        .set("authorization", &format!("Bearer {t}"))
        .call()
        .unwrap();
    assert_eq!(resp.header("gpuq-wait"), Some("reached"));
    let job: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    let events = follower.join().unwrap();
    let data: Vec<&str> = events.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(&data[..3], ["line-1", "line-2", "line-3"], "{events}");
    assert!(events.contains("event: end"), "{events}");
    let (_, logs) = call("GET", &format!("{jobs}/{id}/logs?lines=2"), Some(&t), None);
    assert_eq!(logs["lines"], json!(["line-2", "line-3"]));
}

#[tokio::test]
async fn more_waits_than_connections_get_a_503_not_a_stall() {
    let env = TestEnv::new().await;
    let t = token(&env, &["--team", "vision", "--role", "submitter"]);
    let api = serve_api(&env, &["--api-max-waits", "1"]).await;
    let jobs = format!("{}/v1/jobs", api.base);
    let mut s = spec("never", "exit 0");
    s["resources"] = json!({"gpus": 8});
    let (_, b) = call("POST", &jobs, Some(&t), Some(&s.to_string()));
    let id = b["job"]["id"].as_str().unwrap().to_string();
    let long = format!("{jobs}/{id}?wait=succeeded&timeout=5s");
    let short = format!("{jobs}/{id}?wait=succeeded&timeout=100ms");
    let tk = t.clone();
    // The long wait takes the one connection (trying again while a short one has it).
    let first = std::thread::spawn(move || loop {
        let (status, _) = call("GET", &long, Some(&tk), None);
        if status != 503 {
            return status;
        }
    });
    // While it holds the connection, another wait is refused at once and plain
    // requests go on.
    let refused = wait_for("a second wait to be refused", Duration::from_secs(4), || {
        let (status, b) = call("GET", &short, Some(&t), None);
        async move { (status == 503).then_some(b) }
    })
    .await;
    assert_eq!(refused["code"], "too_many_waits");
    assert_eq!(call("GET", &format!("{jobs}/{id}"), Some(&t), None).0, 200);
    assert_eq!(first.join().unwrap(), 200);
}

#[test]
fn the_checked_in_openapi_document_is_current() {
    let generated = scheduler::api::openapi::json();
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p tests openapi` and commit it"
    );
    // Every operation but the document itself needs the bearer token.
    assert_eq!(doc["security"], json!([{"bearer": []}]));
}

/// Single enqueues from many clients share script calls inside `serve` (a group
/// commit). A SIGKILL of `serve` while they stream in loses none that was acknowledged:
/// each is in Redis with its own actor, and reaches the store after a restart.
#[tokio::test]
async fn concurrent_single_enqueues_acknowledged_before_a_sigkill_of_serve_are_all_kept() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let env = TestEnv::new().await;
    let t = token(
        &env,
        &["--team", "vision", "--role", "submitter", "--name", "vision-ci"],
    );
    let mut api = serve_api(&env, &[]).await;
    let jobs = format!("{}/v1/jobs", api.base);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (jobs, t, acked, count) = (jobs.clone(), t.clone(), acked.clone(), count.clone());
        clients.push(std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            for n in 0.. {
                let mut s = spec("burst", "exit 0");
                let id = format!("burst-{c}-{n}");
                s["id"] = json!(id);
                match agent
                    .post(&jobs)
                    .set("authorization", &format!("Bearer {t}"))
                    .set("content-type", "application/json")
                    .send_string(&s.to_string())
                {
                    Ok(r) => {
                        assert_eq!(r.status(), 201, "{id}");
                        let body: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
                        assert_eq!(body["job"]["id"], id.as_str());
                        acked.lock().unwrap().push(id);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // serve is gone: whatever this request did is unknown.
                    Err(ureq::Error::Transport(_)) => return,
                    Err(e) => panic!("{id}: {e}"),
                }
            }
        }));
    }
    let seen = count.clone();
    wait_for("1,000 acknowledged enqueues", Duration::from_secs(60), || {
        let n = seen.load(Ordering::SeqCst);
        async move { (n >= 1000).then_some(()) }
    })
    .await;
    api._serve.kill();
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1000);
    for id in &acked {
        let job = env
            .queue
            .get(&id.parse().unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged job {id} is not in Redis"));
        assert_eq!(
            job.events[0].detail.as_deref(),
            Some("enqueued by vision-ci"),
            "{id}"
        );
    }
    // A new serve writes every acknowledged job to the store.
    let _serve = env.serve();
    wait_for("the outbox to drain", Duration::from_secs(60), || {
        let q = env.queue.clone();
        async move { (q.status().await.unwrap().outbox == 0).then_some(()) }
    })
    .await;
    let store = common::store::JobStore::open(&env.database_url).await.unwrap();
    let missing = store.missing(&acked).await.unwrap();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the store: {missing:?}"
    );
}
