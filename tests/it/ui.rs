//! The web dashboard over HTTP, against a real `scheduler serve --api`, Redis and store:
//! signing in with a token, the session cookie, CSRF on state changes, revocation ending
//! a session, team isolation on the overview, and the ETag of its live updates.

use crate::support::{free_port, stderr, stdout, wait_for, TestEnv, WorkerProcess};
use common::queue::Room;
use common::{JobSpec, WorkerId, WorkerInfo};
use std::time::Duration;

pub(crate) struct Ui {
    pub(crate) base: String,
    pub(crate) serve: WorkerProcess,
}

pub(crate) fn token(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = env.scheduler(&all);
    assert!(out.status.success(), "token create: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

pub(crate) async fn serve_ui(env: &TestEnv, extra: &[&str]) -> Ui {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--api", "--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let serve = env.serve_with(&args);
    let base = format!("http://{listen}");
    let probe = format!("{base}/ui/login");
    wait_for("the dashboard to answer", Duration::from_secs(20), || {
        let probe = probe.clone();
        async move { ureq::get(&probe).call().ok().map(|_| ()) }
    })
    .await;
    Ui { base, serve }
}

/// An agent that does not follow redirects, so that each answer can be checked.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).build()
}

/// Status, headers of interest and body.
struct Answer {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    etag: Option<String>,
    body: String,
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    Answer {
        status: r.status(),
        location: r.header("location").map(str::to_string),
        set_cookie: r.header("set-cookie").map(str::to_string),
        etag: r.header("etag").map(str::to_string),
        body: r.into_string().unwrap_or_default(),
    }
}

fn get(url: &str, cookie: Option<&str>) -> Answer {
    let mut req = agent().get(url);
    if let Some(c) = cookie {
        req = req.set("cookie", c);
    }
    answer(req.call())
}

fn post_form(url: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Answer {
    let mut req = agent().post(url);
    if let Some(c) = cookie {
        req = req.set("cookie", c);
    }
    answer(req.send_form(form))
}

/// Signs in; the `name=value` of the session cookie.
fn sign_in(ui: &Ui, token: &str) -> String {
    let a = post_form(&format!("{}/ui/login", ui.base), None, &[("token", token)]);
    assert_eq!(
        (a.status, a.location.as_deref()),
        (303, Some("/ui")),
        "{}",
        a.body
    );
    let set = a.set_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    set.split(';').next().unwrap().to_string()
}

/// The CSRF value of the page's forms.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn a_token_signs_in_to_a_session_that_sign_out_and_revocation_end() {
    let env = TestEnv::new().await;
    let viewer = token(&env, &["--team", "vision", "--role", "viewer", "--name", "lead"]);
    let ui = serve_ui(&env, &[]).await;

    // Nothing is served without a session.
    let a = get(&format!("{}/ui", ui.base), None);
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/ui/login")));
    assert_eq!(get(&format!("{}/ui/overview.part", ui.base), None).status, 401);
    // A wrong token gets the sign-in page again, saying so, and no cookie.
    let a = post_form(&format!("{}/ui/login", ui.base), None, &[("token", "gpuq_nope")]);
    assert_eq!(a.status, 401);
    assert!(a.body.contains("unknown token"), "{}", a.body);
    assert!(a.set_cookie.is_none());
    // A made-up cookie is no session.
    let a = get(&format!("{}/ui", ui.base), Some("gpuq_session=0123456789abcdef"));
    assert_eq!(a.status, 303);

    let cookie = sign_in(&ui, &viewer);
    assert!(!cookie.contains(&viewer), "the cookie is not the token");
    let page = get(&format!("{}/ui", ui.base), Some(&cookie));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("lead · viewer · team vision"), "{}", page.body);
    assert!(page.body.contains("id=\"queues\""), "{}", page.body);

    // Signing out needs the page's CSRF token: without it (or with another) nothing
    // changes.
    let logout = format!("{}/ui/logout", ui.base);
    assert_eq!(post_form(&logout, Some(&cookie), &[]).status, 403);
    let a = post_form(&logout, Some(&cookie), &[("csrf", "forged")]);
    assert_eq!(a.status, 403);
    assert!(a.body.contains("CSRF"), "{}", a.body);
    assert_eq!(get(&format!("{}/ui", ui.base), Some(&cookie)).status, 200);
    let a = post_form(&logout, Some(&cookie), &[("csrf", &csrf_of(&page.body))]);
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/ui/login")));
    assert!(a.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(get(&format!("{}/ui", ui.base), Some(&cookie)).status, 303);

    // Revoking the token ends its sessions at once.
    let cookie = sign_in(&ui, &viewer);
    assert_eq!(get(&format!("{}/ui", ui.base), Some(&cookie)).status, 200);
    let out = env.scheduler(&["token", "revoke", "lead"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked = format!("{}/ui", ui.base);
    wait_for(
        "the revocation to reach the dashboard",
        Duration::from_secs(5),
        || {
            let a = get(&revoked, Some(&cookie));
            async move { (a.status == 303).then_some(a) }
        },
    )
    .await
    .location
    .filter(|l| l == "/ui/login?why=refused")
    .expect("sent to sign in, saying why");
    let _ = &ui.serve;
}

#[tokio::test]
async fn the_overview_shows_a_team_its_own_jobs_and_updates_by_etag() {
    let env = TestEnv::new().await;
    let vision = token(&env, &["--team", "vision", "--role", "viewer"]);
    let nlp = token(&env, &["--team", "nlp", "--role", "viewer"]);
    let admin = token(&env, &["--role", "admin"]);
    let ui = serve_ui(&env, &[]).await;
    let w = WorkerId::generate("ui");
    env.queue
        .heartbeat(
            &WorkerInfo::starting(&w, "test", "test", 4),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let report = env
        .queue
        .enqueue_batch(vec![
            JobSpec::new("vision-train", "vision", vec!["true".into()]),
            JobSpec::new("nlp-train", "nlp", vec!["true".into()]),
        ])
        .await
        .unwrap();
    let claimed = env
        .queue
        .claim_within(&w, 2, "t", &Room::default())
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 2);
    let (vision_job, nlp_job) = (report.ids[0].as_str(), report.ids[1].as_str());

    // The overview counts what waits for the store: let serve write it all first.
    wait_for("the outbox to drain", Duration::from_secs(20), || {
        let q = env.queue.clone();
        async move { (q.status().await.unwrap().outbox == 0).then_some(()) }
    })
    .await;
    let part = format!("{}/ui/overview.part", ui.base);
    let seen_by = |t: &str| {
        let cookie = sign_in(&ui, t);
        let a = get(&part, Some(&cookie));
        assert_eq!(a.status, 200, "{}", a.body);
        (cookie, a)
    };
    let (cookie, mine) = seen_by(&vision);
    assert!(mine.body.contains(vision_job), "{}", mine.body);
    assert!(
        !mine.body.contains(nlp_job),
        "team vision sees nlp's job: {}",
        mine.body
    );
    let (_, theirs) = seen_by(&nlp);
    assert!(theirs.body.contains(nlp_job) && !theirs.body.contains(vision_job));
    let (_, all) = seen_by(&admin);
    assert!(all.body.contains(nlp_job) && all.body.contains(vision_job));

    // Unchanged: a 304 without a body. Changed (a job queued): the new body.
    let etag = mine.etag.expect("an ETag");
    let again = agent()
        .get(&part)
        .set("cookie", &cookie)
        .set("if-none-match", &etag)
        .call();
    let again = answer(again);
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    env.queue
        .enqueue_batch(vec![JobSpec::new("more", "vision", vec!["true".into()])])
        .await
        .unwrap();
    let changed = wait_for("the overview to change", Duration::from_secs(10), || {
        let a = answer(
            agent()
                .get(&part)
                .set("cookie", &cookie)
                .set("if-none-match", &etag)
                .call(),
        );
        async move { (a.status == 200).then_some(a) }
    })
    .await;
    assert_ne!(changed.etag.as_deref(), Some(etag.as_str()));
    let _ = &ui.serve;
}

#[tokio::test]
async fn without_authentication_the_dashboard_says_so_and_still_needs_its_csrf_token() {
    let env = TestEnv::new().await;
    let ui = serve_ui(&env, &["--insecure-no-auth"]).await;
    let a = get(&format!("{}/ui/login", ui.base), None);
    assert!(a.body.contains("runs without authentication"), "{}", a.body);
    let cookie = sign_in(&ui, "");
    let page = get(&format!("{}/ui", ui.base), Some(&cookie));
    assert_eq!(page.status, 200);
    let logout = format!("{}/ui/logout", ui.base);
    assert_eq!(post_form(&logout, Some(&cookie), &[]).status, 403);
    let _ = &ui.serve;
}

#[tokio::test]
async fn a_job_page_shows_its_history_and_log_and_its_buttons_only_to_roles_that_may_act() {
    let env = TestEnv::new().await;
    let submitter = token(
        &env,
        &["--team", "vision", "--role", "submitter", "--name", "vision-ci"],
    );
    let viewer = token(&env, &["--team", "vision", "--role", "viewer"]);
    let other_team = token(&env, &["--team", "nlp", "--role", "submitter"]);
    let ui = serve_ui(&env, &[]).await;
    let mut talker = JobSpec::new(
        "talker",
        "vision",
        vec!["sh".into(), "-c".into(), "echo line-1; echo line-2".into()],
    );
    talker.id = Some("ui-talker".parse().unwrap());
    let mut waiter = JobSpec::new("waiter", "vision", vec!["true".into()]);
    waiter.id = Some("ui-waiter".parse().unwrap());
    env.queue
        .enqueue_batch_as(vec![waiter], "vision-ci")
        .await
        .unwrap();
    let job_url = format!("{}/ui/jobs/ui-waiter", ui.base);

    // A viewer sees the job and no buttons, and cannot cancel it with a forged form.
    let as_viewer = sign_in(&ui, &viewer);
    let page = get(&job_url, Some(&as_viewer));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("enqueued by vision-ci"), "{}", page.body);
    assert!(!page.body.contains("id=\"cancel\""), "{}", page.body);
    let session_csrf = csrf_of(&page.body);
    let a = post_form(
        &format!("{job_url}/cancel"),
        Some(&as_viewer),
        &[("csrf", &session_csrf)],
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // Another team's job is not found, even by URL; a malformed id is named.
    let as_other = sign_in(&ui, &other_team);
    assert_eq!(get(&job_url, Some(&as_other)).status, 404);
    let bad = get(&format!("{}/ui/jobs/no%20such!", ui.base), Some(&as_other));
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("job id"), "{}", bad.body);

    // A submitter has the button; the form without its CSRF token changes nothing.
    let as_submitter = sign_in(&ui, &submitter);
    let page = get(&job_url, Some(&as_submitter));
    assert!(page.body.contains("id=\"cancel\""), "{}", page.body);
    assert_eq!(
        post_form(&format!("{job_url}/cancel"), Some(&as_submitter), &[]).status,
        403
    );
    let id: common::JobId = "ui-waiter".parse().unwrap();
    assert_eq!(
        env.queue.get(&id).await.unwrap().unwrap().state,
        common::JobState::Queued
    );
    let a = post_form(
        &format!("{job_url}/cancel"),
        Some(&as_submitter),
        &[("csrf", &csrf_of(&page.body))],
    );
    assert_eq!(
        (a.status, a.location.as_deref()),
        (303, Some("/ui/jobs/ui-waiter")),
        "{}",
        a.body
    );
    let job = env.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(job.state, common::JobState::Cancelled);
    let page = get(&job_url, Some(&as_submitter));
    assert!(page.body.contains("cancelled by vision-ci"), "{}", page.body);
    assert!(page.body.contains("id=\"retry\"") && !page.body.contains("id=\"cancel\""));

    // The log arrives over Server-Sent Events, to its end.
    env.queue
        .enqueue_batch_as(vec![talker], "vision-ci")
        .await
        .unwrap();
    let _worker = env.worker(&["--gpus", "0"]);
    let stream = answer(
        agent()
            .get(&format!("{}/ui/jobs/ui-talker/logs/stream", ui.base))
            .set("cookie", &as_viewer)
            .call(),
    );
    assert_eq!(stream.status, 200);
    let data: Vec<&str> = stream
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(&data[..2], ["line-1", "line-2"], "{}", stream.body);
    assert!(stream.body.contains("event: end"), "{}", stream.body);
    assert_eq!(
        get(
            &format!("{}/ui/jobs/ui-talker/logs/stream", ui.base),
            Some(&as_other)
        )
        .status,
        404
    );
    let _ = &ui.serve;
}

#[tokio::test]
async fn the_job_list_filters_and_pages_a_teams_jobs_and_names_a_bad_filter() {
    let env = TestEnv::new().await;
    let vision = token(&env, &["--team", "vision", "--role", "viewer"]);
    let ui = serve_ui(&env, &[]).await;
    let mut specs: Vec<JobSpec> = (0..60)
        .map(|i| JobSpec::new(format!("sweep-{i}"), "vision", vec!["true".into()]))
        .collect();
    specs[0].priority = common::Priority::Urgent;
    specs.push(JobSpec::new("theirs", "nlp", vec!["true".into()]));
    env.queue.enqueue_batch(specs).await.unwrap();
    let cookie = sign_in(&ui, &vision);
    let list = format!("{}/ui/jobs", ui.base);

    // 60 of the team's jobs: a page of 50, then the rest; never the other team's.
    let first = get(&list, Some(&cookie));
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body.matches("class=\"job\"").count(), 50);
    assert!(!first.body.contains("theirs"), "{}", first.body);
    let at = first.body.find("id=\"next\" href=\"").expect("a next page") + 16;
    let next = first.body[at..at + first.body[at..].find('"').unwrap()].replace("&amp;", "&");
    let second = get(&format!("{}{next}", ui.base), Some(&cookie));
    assert_eq!(
        second.body.matches("class=\"job\"").count(),
        10,
        "{}",
        second.body
    );
    let urgent = get(
        &format!("{list}?priority=urgent&state=queued&team=&model_type=&since=&until="),
        Some(&cookie),
    );
    assert_eq!(urgent.body.matches("class=\"job\"").count(), 1, "{}", urgent.body);
    assert!(urgent.body.contains("sweep-0"));
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let since = get(&format!("{list}?since={yesterday}"), Some(&cookie));
    assert_eq!(since.body.matches("class=\"job\"").count(), 50);
    let until = get(&format!("{list}?until={yesterday}"), Some(&cookie));
    assert!(until.body.contains("No job matches"), "{}", until.body);

    // Bad filters: a clear message, 400.
    for (query, says) in [
        ("colour=red", "colour"),
        ("since=yesterday", "yesterday&quot;: not a date"),
        ("state=sleeping", "state"),
        ("before=garbage", "before"),
    ] {
        let a = get(&format!("{list}?{query}"), Some(&cookie));
        assert_eq!(a.status, 400, "{query}: {}", a.body);
        assert!(a.body.contains(says), "{query}: {}", a.body);
    }
    let _ = &ui.serve;
}

#[tokio::test]
async fn the_costs_page_names_a_bad_query_offers_its_csv_and_an_expired_session_is_said() {
    let env = TestEnv::new().await;
    let viewer = token(&env, &["--team", "vision", "--role", "viewer"]);
    let ui = serve_ui(&env, &[]).await;
    let cookie = sign_in(&ui, &viewer);

    let page = get(&format!("{}/ui/costs", ui.base), Some(&cookie));
    assert_eq!(page.status, 200, "{}", page.body);
    for part in [
        "id=\"budgets\"",
        "id=\"spend\"",
        "id=\"report\"",
        "/ui/costs.part?by=team&amp;days=30",
    ] {
        assert!(page.body.contains(part), "{part}: {}", page.body);
    }
    let csv = answer(
        agent()
            .get(&format!("{}/ui/costs.csv?by=model-type&days=7", ui.base))
            .set("cookie", &cookie)
            .call(),
    );
    assert_eq!(csv.status, 200);
    assert!(
        csv.body
            .starts_with("group,cost,runs,avg_cost,avg_run_secs,previous_cost,change_pct,top_job\r\n"),
        "{}",
        csv.body
    );
    // The live part answers 304 to the ETag it gave.
    let part = get(
        &format!("{}/ui/costs.part?by=team&days=30", ui.base),
        Some(&cookie),
    );
    let etag = part.etag.expect("an ETag");
    let again = answer(
        agent()
            .get(&format!("{}/ui/costs.part?by=team&days=30", ui.base))
            .set("cookie", &cookie)
            .set("if-none-match", &etag)
            .call(),
    );
    assert_eq!(again.status, 304);

    // Bad queries are named on the page, with a 400.
    for (query, named) in [
        ("days=abc", "days \"abc\""),
        ("days=0", "days 0"),
        ("days=400", "days 400"),
        ("by=colour", "cannot group by \"colour\""),
        ("colour=red", "unknown field `colour`"),
    ] {
        let bad = get(&format!("{}/ui/costs?{query}", ui.base), Some(&cookie));
        assert_eq!(bad.status, 400, "{query}: {}", bad.body);
        let said = bad.body.replace("&quot;", "\"");
        assert!(said.contains(named), "{query}: {said}");
    }

    // A session Redis no longer knows (expired) goes to sign in, saying so.
    let stale = "gpuq_session=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let a = get(&format!("{}/ui/costs", ui.base), Some(stale));
    assert_eq!(
        (a.status, a.location.as_deref()),
        (303, Some("/ui/login?why=expired"))
    );
    let login = get(&format!("{}/ui/login?why=expired", ui.base), None);
    assert!(login.body.contains("Your session has expired"), "{}", login.body);
    // A script's poll with it gets a 401 (and the page reloads into the redirect above).
    assert_eq!(
        get(&format!("{}/ui/overview.part", ui.base), Some(stale)).status,
        401
    );
    let _ = &ui.serve;
}
