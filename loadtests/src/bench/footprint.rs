//! Footprint: resident memory of an idle worker and of `scheduler serve`.

use crate::env::{rss_bytes, wait_until, Bench};
use crate::report::Row;
use anyhow::Result;
use std::time::Duration;

pub(crate) async fn run(url: &str) -> Result<Vec<Row>> {
    let mut b = Bench::new(url, "rss").await?;
    let w = b.worker("local", 4, &[])?;
    let db = common::store::sqlite_url(&b.dir.join("jobs.db"));
    let s = b.serve(&db)?;
    b.wait_workers(1).await?;
    // Resident memory settles once start-up allocations are done; take the steady value:
    // two reads 500 ms apart within 2%.
    let mut rows = Vec::new();
    for (name, i) in [
        ("idle worker (local launcher, 4 slots)", w),
        ("scheduler serve (SQLite store)", s),
    ] {
        let pid = b.pid(i);
        let mut last = 0u64;
        wait_until("resident memory to settle", Duration::from_secs(20), || {
            let prev = last;
            let now = rss_bytes(pid).unwrap_or(0);
            last = now;
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(prev > 0 && (now as f64 - prev as f64).abs() / (prev as f64) < 0.02)
            }
        })
        .await?;
        rows.push(Row::new("footprint", name, last as f64 / 1e6, "MB"));
    }
    b.cleanup().await?;
    Ok(rows)
}
