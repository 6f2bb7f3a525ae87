//! The dashboard in a real browser: the distribution's headless Chromium, driven through
//! chromedriver over WebDriver, against a real `scheduler serve --api`, worker, Redis and
//! store. Each test saves screenshots of the pages it visits under
//! `target/ui-screenshots/`.
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver` (scripts/test
//! installs them when missing); `CHROMIUM` and `CHROMEDRIVER` point elsewhere.

use crate::support::{free_port, stderr, wait_for, Reaped, TestEnv, WorkerProcess};
use crate::ui::{serve_ui, token, Ui};
use common::{JobId, JobSpec, JobState};
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A headless Chromium under its own chromedriver, closed on drop.
struct Browser {
    client: Client,
    _driver: Reaped,
    /// One Chromium at a time: several at once on two cores starve the other tests'
    /// processes (heartbeats, timed waits) running beside them.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn program(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver (scripts/test does), or set {var}"
    );
    path
}

impl Browser {
    async fn start() -> Browser {
        let turn = TURN.lock().await;
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let port = free_port();
        let driver = Command::new(program("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs");
        let driver = Reaped(driver);
        let status = format!("http://127.0.0.1:{port}/status");
        wait_for("chromedriver to answer", Duration::from_secs(20), || {
            let status = status.clone();
            async move {
                ureq::get(&status)
                    .timeout(Duration::from_secs(2))
                    .call()
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--no-first-run"],
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
            _turn: turn,
        }
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// Signs in with `token` on the sign-in form and waits for the overview.
    async fn sign_in(&self, ui: &Ui, token: &str) {
        self.open(&format!("{}/ui/login", ui.base)).await;
        let field = self.client.find(Locator::Css("input[name=token]")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("form[action='/ui/login'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_css("the overview after signing in", "#queues").await;
        let url = self.client.current_url().await.unwrap();
        assert_eq!(url.path(), "/ui");
    }

    /// The text of the first element matching `css`, if there is one.
    async fn text(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.attr(name).await.ok().flatten()
    }

    async fn wait_css(&self, what: &str, css: &str) {
        wait_for(what, LONG, || async {
            self.client.find(Locator::Css(css)).await.ok().map(|_| ())
        })
        .await;
    }

    /// Waits for the text of `css` to be as `wanted`; on a timeout, says what it was.
    async fn wait_text(&self, what: &str, css: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let text = self.text(css).await;
            if let Some(t) = text.as_deref().filter(|t| wanted(t)) {
                return t.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {LONG:?} waiting for {what}; {css} reads {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_attr(&self, what: &str, css: &str, name: &str, wanted: &str) {
        wait_for(what, LONG, || async {
            (self.attr(css, name).await.as_deref() == Some(wanted)).then_some(())
        })
        .await;
    }

    /// Whether the page is still the one `mark_page` marked: a reload or a navigation
    /// loses the mark.
    async fn mark_page(&self) {
        self.client
            .execute("window.__gpuq_mark = 1;", vec![])
            .await
            .unwrap();
    }

    async fn page_is_marked(&self) -> bool {
        let v = self
            .client
            .execute("return window.__gpuq_mark === 1;", vec![])
            .await
            .unwrap();
        v.as_bool() == Some(true)
    }

    /// Saves a screenshot as `target/ui-screenshots/NAME.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// A job of `team` that prints `first`, waits for the file `gate`, then prints `second`.
fn gated(id: &str, team: &str, gate: &std::path::Path) -> JobSpec {
    let script = format!(
        "echo first; while [ ! -e '{}' ]; do sleep 0.05; done; echo second",
        gate.display()
    );
    let mut spec = JobSpec::new(id, team, vec!["sh".into(), "-c".into(), script]);
    spec.id = Some(id.parse().unwrap());
    spec
}

fn worker(env: &TestEnv) -> WorkerProcess {
    env.worker(&["--gpus", "0", "--concurrency", "2"])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_signs_in_watches_a_job_queue_run_and_succeed_and_reads_its_log_as_it_is_written() {
    let env = TestEnv::new().await;
    let lead = token(
        &env,
        &["--team", "vision", "--role", "submitter", "--name", "vision-lead"],
    );
    let ui = serve_ui(&env, &[]).await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/ui/login", ui.base)).await;
    browser.screenshot("login").await;
    browser.sign_in(&ui, &lead).await;
    let who = browser.text("header .who").await.unwrap();
    assert!(who.contains("team vision") && who.contains("submitter"), "{who}");
    browser.mark_page().await;

    // Queued: the normal queue's depth goes to 1 on the open overview.
    let gate = env.path("gate-overview");
    env.queue
        .enqueue_batch(vec![gated("ui-watched", "vision", &gate)])
        .await
        .unwrap();
    browser
        .wait_text(
            "the overview to show the job queued",
            "#queues tr[data-priority=normal] td.depth",
            |t| t == "1",
        )
        .await;
    // Running: its row appears among the running jobs, with its worker.
    let _worker = worker(&env);
    browser
        .wait_css(
            "the overview to show the job running",
            "#running tr.job[data-id=ui-watched]",
        )
        .await;
    browser.screenshot("overview").await;
    // Succeeded: the row goes and the chart counts one success this hour.
    std::fs::write(&gate, "").unwrap();
    env.wait_state(&"ui-watched".parse().unwrap(), JobState::Succeeded, LONG)
        .await;
    browser
        .wait_attr(
            "the overview's chart to count the success",
            "#activity polyline[data-series=succeeded]",
            "data-total",
            "1",
        )
        .await;
    assert!(
        browser
            .client
            .find(Locator::Css("#running tr.job[data-id=ui-watched]"))
            .await
            .is_err(),
        "a finished job is not listed as running"
    );
    assert!(browser.page_is_marked().await, "the overview was never reloaded");

    // The job page of a running job: the log's lines arrive as they are written.
    let gate = env.path("gate-log");
    env.queue
        .enqueue_batch(vec![gated("ui-talker", "vision", &gate)])
        .await
        .unwrap();
    env.wait_state(&"ui-talker".parse().unwrap(), JobState::Running, LONG)
        .await;
    browser.open(&format!("{}/ui/jobs/ui-talker", ui.base)).await;
    browser
        .wait_text("the first log line", "#log", |t| t.contains("first"))
        .await;
    assert!(!browser.text("#log").await.unwrap().contains("second"));
    assert_eq!(browser.text("#state").await.as_deref(), Some("running"));
    assert!(browser.text("#so-far").await.is_some_and(|t| t.starts_with('$')));
    browser.screenshot("job").await;
    browser.mark_page().await;
    std::fs::write(&gate, "").unwrap();
    browser
        .wait_text("the second log line", "#log", |t| t.contains("second"))
        .await;
    browser
        .wait_text("the log's end", "#log-state", |t| t.contains("has ended"))
        .await;
    assert!(browser.page_is_marked().await, "the log arrived without a reload");

    // The job list: the finished jobs, linked.
    browser.open(&format!("{}/ui/jobs", ui.base)).await;
    browser
        .wait_css("the job list", "#jobs tr.job[data-id=ui-watched]")
        .await;
    browser.screenshot("jobs").await;
    browser.close().await;
    let _ = &ui.serve;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_is_cancelled_with_its_button() {
    let env = TestEnv::new().await;
    let lead = token(
        &env,
        &["--team", "vision", "--role", "submitter", "--name", "vision-lead"],
    );
    let ui = serve_ui(&env, &[]).await;
    let gate = env.path("never");
    let id: JobId = "ui-cancelled".parse().unwrap();
    env.queue
        .enqueue_batch(vec![gated("ui-cancelled", "vision", &gate)])
        .await
        .unwrap();
    let _worker = worker(&env);
    env.wait_state(&id, JobState::Running, LONG).await;

    let browser = Browser::start().await;
    browser.sign_in(&ui, &lead).await;
    browser.open(&format!("{}/ui/jobs/ui-cancelled", ui.base)).await;
    browser
        .wait_text("the job page", "#state", |t| t == "running")
        .await;
    browser
        .client
        .find(Locator::Css("#cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The form posts with the session's CSRF token and comes back to the job's page.
    browser
        .wait_text("the page to show the cancellation", "#history", |t| {
            t.contains("cancelled by vision-lead")
        })
        .await;
    let job = env.wait_state(&id, JobState::Cancelled, LONG).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(
        browser.client.find(Locator::Css("#cancel")).await.is_err(),
        "a cancelled job has no cancel button"
    );
    assert!(browser.client.find(Locator::Css("#retry")).await.is_ok());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_sees_no_buttons_and_another_team_cannot_see_the_job_even_by_url() {
    let env = TestEnv::new().await;
    let viewer = token(&env, &["--team", "vision", "--role", "viewer"]);
    let other = token(&env, &["--team", "nlp", "--role", "submitter"]);
    let ui = serve_ui(&env, &[]).await;
    let gate = env.path("never");
    env.queue
        .enqueue_batch(vec![gated("ui-private", "vision", &gate)])
        .await
        .unwrap();
    let _worker = worker(&env);
    env.wait_state(&"ui-private".parse().unwrap(), JobState::Running, LONG)
        .await;

    let browser = Browser::start().await;
    browser.sign_in(&ui, &viewer).await;
    browser
        .wait_css(
            "the viewer's overview to list the job",
            "#running tr.job[data-id=ui-private]",
        )
        .await;
    browser.open(&format!("{}/ui/jobs/ui-private", ui.base)).await;
    browser
        .wait_text("the job page", "#state", |t| t == "running")
        .await;
    for button in ["#cancel", "#retry"] {
        assert!(
            browser.client.find(Locator::Css(button)).await.is_err(),
            "a viewer has no {button} button"
        );
    }
    browser.close().await;

    // Team nlp: not on its overview, and "not found" by URL, as for a job that does not exist.
    let browser = Browser::start().await;
    browser.sign_in(&ui, &other).await;
    assert!(browser
        .client
        .find(Locator::Css("#running tr.job"))
        .await
        .is_err());
    browser.open(&format!("{}/ui/jobs/ui-private", ui.base)).await;
    let said = browser.text("main .error").await.unwrap_or_default();
    browser.open(&format!("{}/ui/jobs/ui-no-such-job", ui.base)).await;
    let missing = browser.text("main .error").await.unwrap_or_default();
    assert!(said.contains("not found"), "{said}");
    assert_eq!(
        said.replace("ui-private", "ID"),
        missing.replace("ui-no-such-job", "ID")
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_bar_crosses_its_warn_mark_when_a_jobs_cost_is_recorded() {
    let env = TestEnv::new().await;
    let lead = token(&env, &["--team", "vision", "--role", "viewer"]);
    // A one-core job costs about $0.000011 a second: a budget of $0.0001 warning at 5%
    // ($0.000005) is crossed by the first second of it.
    let out = env.scheduler(&["budget", "set", "0.0001", "--team", "vision", "--warn", "0.05"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ui = serve_ui(&env, &[]).await;
    let browser = Browser::start().await;
    browser.sign_in(&ui, &lead).await;
    browser.open(&format!("{}/ui/costs", ui.base)).await;
    let row = "#budgets tr.budget[data-team=vision]";
    browser.wait_css("the budget's row", row).await;
    assert_eq!(
        browser.attr(row, "data-over-warn").await.as_deref(),
        Some("false")
    );
    browser.mark_page().await;

    let gate = env.path("gate-cost");
    let mut spec = gated("ui-costly", "vision", &gate);
    spec.resources.cpu = 1.0;
    env.queue.enqueue_batch(vec![spec]).await.unwrap();
    let _worker = worker(&env);
    let id: JobId = "ui-costly".parse().unwrap();
    let running = env.wait_state(&id, JobState::Running, LONG).await;
    // Let it run a little over a second of wall time, then finish.
    let started = running.started_at.unwrap();
    wait_for("a second of running", LONG, || async {
        (common::now_ms() >= started + 1_100).then_some(())
    })
    .await;
    std::fs::write(&gate, "").unwrap();
    env.wait_state(&id, JobState::Succeeded, LONG).await;

    browser
        .wait_attr("the bar to cross its warn mark", row, "data-over-warn", "true")
        .await;
    assert!(
        browser.page_is_marked().await,
        "the costs page was never reloaded"
    );
    let spent: f64 = browser
        .attr(&format!("{row} rect.spent"), "width")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let warn: f64 = browser
        .attr(&format!("{row} line.warn"), "x1")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        spent > warn,
        "the spent bar ({spent}) passes the warn mark ({warn})"
    );
    browser
        .wait_attr(
            "the spend chart to draw the team",
            "#spend polyline[data-series=vision]",
            "data-series",
            "vision",
        )
        .await;
    browser.screenshot("costs").await;
    // The job's own page has the recorded cost of its attempt.
    browser.open(&format!("{}/ui/jobs/ui-costly", ui.base)).await;
    browser
        .wait_text("the job's recorded cost", "#recorded", |t| {
            t.starts_with('$') && t.contains("for 1 ended attempt run(s)")
        })
        .await;
    browser.close().await;
}
