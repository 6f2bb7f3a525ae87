//! The ceiling: what Redis itself does on this machine (`redis-benchmark` LPUSH/RPOP),
//! so the queue's figures can be read as a fraction of it.

use crate::report::Row;
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs redis-benchmark; returns rows and the LPUSH rate without pipelining.
pub(crate) fn run(url: &str, requests: u32) -> Result<(Vec<Row>, f64)> {
    let hostport = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:6379");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "6379"));
    let port = port.split('/').next().unwrap_or("6379");
    let mut rows = Vec::new();
    let mut lpush = 0.0;
    for pipeline in [1, 16] {
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                host,
                "-p",
                port,
                "-t",
                "lpush,rpop",
                "-n",
                &requests.to_string(),
                "-q",
            ])
            .args(["-P", &pipeline.to_string()])
            .output()
            .context("redis-benchmark (Debian's redis-tools) on PATH")?;
        if !out.status.success() {
            bail!("redis-benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
        for line in text.lines().filter(|l| l.contains("requests per second")) {
            let (cmd, rest) = line.split_once(':').context("redis-benchmark output")?;
            let value: f64 = rest.split_whitespace().next().context("rate")?.parse()?;
            if cmd.trim() == "LPUSH" && pipeline == 1 {
                lpush = value;
            }
            rows.push(Row::new(
                "ceiling",
                format!("redis-benchmark {} -P {pipeline}", cmd.trim()),
                value,
                "ops/s",
            ));
        }
    }
    Ok((rows, lpush))
}
