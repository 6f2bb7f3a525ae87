//! The short chaos run: worker processes SIGKILLed every second or two and Redis SIGKILLed
//! (AOF everysec) and started again once while real jobs run. Nothing may be lost; jobs run twice are bounded by what was
//! in flight at the kills. (`loadtests chaos` with the README's larger settings is the long run.)

use crate::support::{bin, stderr, stdout};

#[test]
fn sigkills_and_a_redis_crash_lose_no_job_and_run_none_twice_at_once() {
    let out = std::process::Command::new(bin("loadtests"))
        .args([
            "chaos",
            "--jobs",
            "800",
            "--workers",
            "3",
            "--job-time",
            "200ms",
            "--limit",
            "150s",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["lost"], 0, "{text}");
    assert_eq!(r["overlapping"], 0, "no two copies of a job ran at once: {text}");
    assert_eq!(r["succeeded"], 800, "{text}");
    assert!(
        r["kills"].as_u64().unwrap() >= 2,
        "the driver must actually kill workers: {text}"
    );
    assert_eq!(r["redis_restarts"], 1, "{text}");
    assert!(
        r["duplicated"].as_u64().unwrap() <= r["in_flight_at_kills"].as_u64().unwrap(),
        "{text}"
    );
}
