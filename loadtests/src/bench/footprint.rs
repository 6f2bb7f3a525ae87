//! Footprint: resident memory of an idle worker and of `scheduler serve`.

use crate::env::{settled_rss, Bench};
use crate::report::Row;
use anyhow::Result;

pub(crate) async fn run(url: &str) -> Result<Vec<Row>> {
    let mut b = Bench::new(url, "rss").await?;
    let w = b.worker("local", 4, &[])?;
    let db = common::store::sqlite_url(&b.dir.join("jobs.db"));
    let s = b.serve(&db)?;
    b.wait_workers(1).await?;
    let mut rows = Vec::new();
    for (name, i) in [
        ("idle worker (local launcher, 4 slots)", w),
        ("scheduler serve (SQLite store)", s),
    ] {
        let pid = b.pid(i);
        let last = settled_rss(pid).await?;
        rows.push(Row::new("footprint", name, last as f64 / 1e6, "MB"));
    }
    b.cleanup().await?;
    Ok(rows)
}
