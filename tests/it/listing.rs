//! `scheduler list` pages: by cursor (`--before`), every job once and in order, and a deep
//! page found without reading the index up to it.

use crate::servers::PrivateRedis;
use crate::support::{sh, stderr, TestEnv};
use common::queue::RedisQueue;

/// Enqueues `batches` batches of `per` jobs on `q` (a batch shares its enqueue
/// millisecond, so pages break inside runs of equal times), and returns their ids.
async fn enqueue(q: &RedisQueue, batches: usize, per: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for b in 0..batches {
        let specs = (0..per).map(|i| sh(&format!("page-{b}-{i}"), "true")).collect();
        ids.extend(
            q.enqueue_batch(specs)
                .await
                .unwrap()
                .ids
                .into_iter()
                .map(|i| i.to_string()),
        );
    }
    ids
}

/// One page of `scheduler list --json` on `url`, and the cursor it prints for the next.
fn page(env: &TestEnv, url: &str, args: &[&str]) -> (Vec<serde_json::Value>, Option<String>) {
    let out = env.scheduler_via(url, &[], &[&["list", "--json"][..], args].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let next = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("more: add --before ").map(str::to_string));
    (jobs, next)
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_by_cursor_list_every_job_once_newest_first() {
    let env = TestEnv::new().await;
    let url = crate::support::redis_url();
    let mut ids = enqueue(&env.queue, 5, 500).await;
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut args = vec!["--limit", "300"];
        if let Some(c) = &cursor {
            args.extend(["--before", c.as_str()]);
        }
        let (jobs, next) = page(&env, &url, &args);
        seen.extend(jobs.iter().map(|j| {
            (
                j["enqueued_at"].as_u64().unwrap(),
                j["id"].as_str().unwrap().to_string(),
            )
        }));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // Newest first, then by id, each job exactly once.
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "pages follow the listing's order");
    let mut listed: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "every job once, none twice");
    // A cursor that is not one is refused, naming the flag.
    let out = env.scheduler(&["list", "--before", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--before") && stderr(&out).contains("MS:ID"),
        "{}",
        stderr(&out)
    );
}

/// Reads of job hashes on `redis` so far.
async fn hash_reads(redis: &PrivateRedis) -> u64 {
    let client = redis::Client::open(redis.url.clone()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hgetall:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_page_by_cursor_reads_about_a_page_where_an_offset_reads_everything_before_it() {
    let env = TestEnv::new().await;
    // A server of its own, so that its command counts are this test's alone.
    let redis = PrivateRedis::start().await;
    let q = RedisQueue::connect(&redis.url, &env.ns).await.unwrap();
    enqueue(&q, 50, 100).await;
    // The cursor 4,000 jobs deep, from a page that ends there.
    let (_, cursor) = page(&env, &redis.url, &["--limit", "4000"]);
    let cursor = cursor.expect("a full page names its cursor");

    let before = hash_reads(&redis).await;
    let (by_cursor, _) = page(&env, &redis.url, &["--limit", "10", "--before", &cursor]);
    let cursor_reads = hash_reads(&redis).await - before;
    let before = hash_reads(&redis).await;
    let (by_offset, _) = page(&env, &redis.url, &["--limit", "10", "--offset", "4000"]);
    let offset_reads = hash_reads(&redis).await - before;

    assert_eq!(by_cursor, by_offset, "both reach the same page");
    assert_eq!(by_cursor.len(), 10);
    // The seek reads enqueue times only; the walk reads whole jobs in chunks of 200, and
    // on to the end of the page's last millisecond (here a batch of 100).
    assert!(
        cursor_reads <= 400,
        "{cursor_reads} job reads for a page by cursor"
    );
    assert!(
        offset_reads >= 4000,
        "{offset_reads} job reads for a page by offset"
    );
}

/// The dashboard's running jobs come from the leases: newest first, a team's only when
/// asked, and without reading the hashes of the jobs queued behind them.
#[tokio::test(flavor = "multi_thread")]
async fn running_jobs_are_found_from_the_leases_without_reading_the_queue() {
    let redis = PrivateRedis::start().await;
    let env = TestEnv::new().await;
    let q = RedisQueue::connect(&redis.url, &env.ns).await.unwrap();
    let mut specs = Vec::new();
    for (i, team) in ["vision", "nlp", "vision"].iter().enumerate() {
        let mut s = sh(&format!("run-{i}"), "true");
        s.team = team.to_string();
        specs.push(s);
    }
    let running: Vec<String> = q
        .enqueue_batch(specs)
        .await
        .unwrap()
        .ids
        .iter()
        .map(|i| i.to_string())
        .collect();
    enqueue(&q, 10, 100).await;
    let w = common::WorkerId::generate("listing-test");
    q.heartbeat(
        &common::WorkerInfo::starting(&w, "t", "t", 3),
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(q.claim_many(&w, 3).await.unwrap().len(), 3);

    let before = hash_reads(&redis).await;
    let all: Vec<String> = q
        .running_jobs(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id.to_string())
        .collect();
    let reads = hash_reads(&redis).await - before;
    // The three running, in the listing's order (newest first), and only their hashes.
    let mut records = Vec::new();
    for id in &running {
        records.push(q.get(&id.parse().unwrap()).await.unwrap().unwrap());
    }
    records.sort_by(common::listing_order);
    let in_order = |team: Option<&str>| -> Vec<String> {
        records
            .iter()
            .filter(|r| team.is_none_or(|t| r.spec.team == t))
            .map(|r| r.id.to_string())
            .collect()
    };
    assert_eq!(all, in_order(None));
    assert!(
        reads <= 3,
        "{reads} hash reads for 3 running jobs behind 1,000 queued"
    );
    let vision: Vec<String> = q
        .running_jobs(Some("vision"), 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id.to_string())
        .collect();
    assert_eq!(vision, in_order(Some("vision")));
    assert_eq!(vision.len(), 2);
    assert_eq!(q.running_jobs(None, 1).await.unwrap().len(), 1);
    assert!(q.running_jobs(Some("nobody"), 10).await.unwrap().is_empty());
}
