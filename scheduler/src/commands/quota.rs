//! `quota`: pools, team quotas and caps, and the usage the leases hold against them.

use crate::cli::{QuotaApplyArgs, QuotaCheckArgs, QuotaCommand, QuotaDeleteArgs, QuotaSetArgs};
use crate::format::print_json;
use crate::{CliError, CliResult};
use common::admission::{AdmissionConfig, PoolConfig, Quota, TeamLimits};
use common::queue::{PoolStatus, RedisQueue, Usage};
use serde::Serialize;

pub(crate) async fn run(queue: &RedisQueue, command: QuotaCommand) -> CliResult<()> {
    match command {
        QuotaCommand::Show(a) => show(queue, a.json).await,
        QuotaCommand::Set(a) => set(queue, a).await,
        QuotaCommand::Delete(a) => delete(queue, a).await,
        QuotaCommand::Apply(a) => apply(queue, a).await,
        QuotaCommand::Check(a) => check(queue, a).await,
    }
}

/// One pool as `quota show` and `status` print it.
#[derive(Debug, Serialize)]
pub(crate) struct PoolRow {
    pub(crate) pool: String,
    /// GPUs, when known.
    pub(crate) capacity: Option<u64>,
    pub(crate) used: u64,
    /// GPUs held for the job holding the reservation.
    pub(crate) reserved: u64,
    pub(crate) free: Option<u64>,
    pub(crate) running: u64,
    pub(crate) max_running: Option<u32>,
    pub(crate) strategy: String,
    pub(crate) reserved_by: Option<String>,
    /// Running jobs preempted for the reservation, still stopping.
    pub(crate) draining: Vec<String>,
}

/// One team's use of one pool.
#[derive(Debug, Serialize)]
pub(crate) struct TeamRow {
    pub(crate) pool: String,
    pub(crate) team: String,
    pub(crate) used: u64,
    /// Its nominal quota; `None` for a team without one.
    pub(crate) nominal: Option<u64>,
    /// GPUs it uses beyond its nominal quota.
    pub(crate) borrowed: u64,
    pub(crate) borrowing_limit: Option<u32>,
    pub(crate) running: u64,
}

/// Pool and team rows from the configuration, the census and the usage.
pub(crate) fn rows(
    config: &AdmissionConfig,
    pools: &[PoolStatus],
    usage: &Usage,
) -> (Vec<PoolRow>, Vec<TeamRow>) {
    let pool_rows = pools
        .iter()
        .filter(|p| {
            p.used > 0 || p.capacity.is_some() || config.pools.contains_key(&p.pool) || p.pool != "default"
        })
        .map(|p| {
            let pc = config.pools.get(&p.pool);
            PoolRow {
                pool: p.pool.clone(),
                capacity: p.capacity,
                used: p.used,
                reserved: p.reserved,
                free: p.capacity.map(|c| c.saturating_sub(p.used)),
                running: p.running,
                max_running: pc.and_then(|c| c.max_running),
                strategy: pc.map(|c| c.strategy).unwrap_or_default().to_string(),
                reserved_by: p.reserved_by.clone(),
                draining: p.draining.clone(),
            }
        })
        .collect();
    let mut team_rows = Vec::new();
    let mut pools_seen: Vec<&String> = config.pools.keys().collect();
    for p in usage.teams.keys() {
        if !pools_seen.contains(&p) {
            pools_seen.push(p);
        }
    }
    for pool in pools_seen {
        let quotas = config.pools.get(pool).map(|p| &p.quotas);
        let mut teams: Vec<&String> = quotas.map(|q| q.keys().collect()).unwrap_or_default();
        if let Some(used) = usage.teams.get(pool) {
            for t in used.keys() {
                if !teams.contains(&t) {
                    teams.push(t);
                }
            }
        }
        teams.sort();
        for team in teams {
            let q = quotas.and_then(|q| q.get(team));
            let held = usage
                .teams
                .get(pool)
                .and_then(|t| t.get(team))
                .copied()
                .unwrap_or_default();
            let nominal = q.map(|q| u64::from(q.nominal));
            team_rows.push(TeamRow {
                pool: pool.clone(),
                team: team.clone(),
                used: held.gpus,
                nominal,
                borrowed: nominal.map_or(0, |n| held.gpus.saturating_sub(n)),
                borrowing_limit: q.and_then(|q| q.borrowing_limit),
                running: held.jobs,
            });
        }
    }
    (pool_rows, team_rows)
}

/// The pool and team tables, as text.
pub(crate) fn render_rows(o: &mut String, pools: &[PoolRow], teams: &[TeamRow]) {
    use std::fmt::Write;
    let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    if !pools.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<18} {:>8} {:>6} {:>9} {:>6} {:>8}  STRATEGY",
            "pools", "CAPACITY", "USED", "RESERVED", "FREE", "RUNNING"
        );
        for p in pools {
            let _ = writeln!(
                o,
                "  {:<16} {:>8} {:>6} {:>9} {:>6} {:>8}  {}{}",
                p.pool,
                dash(p.capacity),
                p.used,
                p.reserved,
                dash(p.free),
                match p.max_running {
                    Some(m) => format!("{}/{m}", p.running),
                    None => p.running.to_string(),
                },
                p.strategy,
                match (&p.reserved_by, p.draining.len()) {
                    (Some(j), 0) => format!("  (reserved for {j})"),
                    (Some(j), n) => format!(
                        "  (reserved for {j}; {n} preempted, draining: {})",
                        p.draining.join(", ")
                    ),
                    (None, _) => String::new(),
                }
            );
        }
    }
    if !teams.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<18} {:<10} {:>6} {:>6} {:>9} {:>8}",
            "teams", "POOL", "USED", "QUOTA", "BORROWED", "RUNNING"
        );
        for t in teams {
            let _ = writeln!(
                o,
                "  {:<16} {:<10} {:>6} {:>6} {:>9} {:>8}",
                t.team,
                t.pool,
                t.used,
                dash(t.nominal),
                match t.borrowing_limit {
                    Some(l) => format!("{}/{l}", t.borrowed),
                    None => t.borrowed.to_string(),
                },
                t.running
            );
        }
    }
}

#[derive(Serialize)]
struct Shown {
    config: AdmissionConfig,
    pools: Vec<PoolRow>,
    teams: Vec<TeamRow>,
    usage: Usage,
}

async fn show(queue: &RedisQueue, json: bool) -> CliResult<()> {
    let config = queue.admission().await?.unwrap_or_default();
    let status = queue.status().await?;
    let (pools, teams) = rows(&config, &status.pools, &status.usage);
    if json {
        print_json(&Shown {
            config,
            pools,
            teams,
            usage: status.usage,
        });
        return Ok(());
    }
    let mut o = String::new();
    describe(&mut o, &config);
    render_rows(&mut o, &pools, &teams);
    print!("{o}");
    Ok(())
}

/// The queue-wide settings and caps, as text.
fn describe(o: &mut String, c: &AdmissionConfig) {
    use std::fmt::Write;
    if *c == AdmissionConfig::default() {
        let _ = writeln!(
            o,
            "no quotas or caps: every job is admitted (workers' own devices still apply)"
        );
        return;
    }
    let _ = writeln!(
        o,
        "running jobs cap {}",
        c.max_running.map_or("none".to_string(), |m| m.to_string())
    );
    if let Some(t) = &c.allowed_teams {
        let _ = writeln!(
            o,
            "allowed teams    {}",
            t.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for (team, l) in &c.teams {
        if let Some(m) = l.max_running {
            let _ = writeln!(o, "team {team}: at most {m} running");
        }
        if !l.images.is_empty() {
            let _ = writeln!(o, "team {team}: images {}", l.images.join(", "));
        }
    }
    for (name, p) in &c.pools {
        let assigned: u32 = p.quotas.values().map(|q| q.nominal).sum();
        let _ = writeln!(
            o,
            "pool {name}: capacity {}, {} quota, reserve after {}{}",
            p.capacity
                .map_or("from its workers' devices".to_string(), |c| format!("{c} GPUs")),
            p.strategy,
            humantime::format_duration(std::time::Duration::from_secs(
                p.reserve_after_secs
                    .unwrap_or(common::admission::DEFAULT_RESERVE_AFTER_SECS)
            )),
            match p.capacity {
                Some(cap) if assigned > cap => {
                    format!("; quotas add up to {assigned}, more than the capacity")
                }
                _ => String::new(),
            }
        );
        for (team, q) in &p.quotas {
            let _ = writeln!(
                o,
                "  {team}: {} GPUs, borrow {}, lend {}, cohort {}",
                q.nominal,
                q.borrowing_limit
                    .map_or("any".to_string(), |b| format!("up to {b}")),
                q.lending_limit
                    .map_or("all".to_string(), |l| format!("up to {l}")),
                q.cohort.as_deref().unwrap_or(name)
            );
        }
    }
}

fn done(config: &AdmissionConfig, json: bool) {
    if json {
        print_json(config);
    } else {
        let mut o = String::new();
        describe(&mut o, config);
        print!("{o}");
    }
}

fn bad(msg: impl Into<String>) -> common::Error {
    common::Error::InvalidInput(msg.into())
}

async fn set(queue: &RedisQueue, a: QuotaSetArgs) -> CliResult<()> {
    let pool_fields = a.capacity.is_some() || a.strategy.is_some() || a.reserve_after.is_some();
    let quota_fields =
        a.nominal.is_some() || a.borrowing_limit.is_some() || a.lending_limit.is_some() || a.cohort.is_some();
    let nothing = !pool_fields
        && !quota_fields
        && a.max_running.is_none()
        && a.allowed_teams.is_none()
        && a.allowed_images.is_none();
    if nothing {
        return Err(CliError::BadInput(
            "quota set: nothing to set (give --nominal, --capacity, --max-running, ...)".into(),
        ));
    }
    let config = queue
        .update_admission(|c| {
            match (&a.pool, &a.team) {
                (Some(pool), Some(team)) => {
                    if pool_fields {
                        return Err(bad("--capacity, --strategy and --reserve-after are set on a pool: drop --team"));
                    }
                    if a.max_running.is_some() {
                        return Err(bad("--max-running is per pool (--pool), per team (--team) or for the queue, not per team in a pool"));
                    }
                    if a.allowed_images.is_some() {
                        return Err(bad("--allowed-images is per team: drop --pool"));
                    }
                    let p = c.pools.entry(pool.clone()).or_default();
                    let q = match p.quotas.get_mut(team) {
                        Some(q) => q,
                        None => {
                            let Some(nominal) = a.nominal else {
                                return Err(bad(format!("team {team} has no quota in pool {pool} yet: give --nominal")));
                            };
                            p.quotas.entry(team.clone()).or_insert(Quota {
                                nominal,
                                ..Quota::default()
                            })
                        }
                    };
                    if let Some(n) = a.nominal {
                        q.nominal = n;
                    }
                    if let Some(l) = a.borrowing_limit {
                        q.borrowing_limit = l.get();
                    }
                    if let Some(l) = a.lending_limit {
                        q.lending_limit = l.get();
                    }
                    if let Some(cohort) = &a.cohort {
                        q.cohort = (cohort != "none").then(|| cohort.clone());
                    }
                }
                (Some(pool), None) => {
                    if a.allowed_images.is_some() {
                        return Err(bad("--allowed-images is per team: give --team, not --pool"));
                    }
                    if quota_fields {
                        return Err(bad("--nominal, --borrowing-limit, --lending-limit and --cohort are a team's: give --team"));
                    }
                    let p: &mut PoolConfig = c.pools.entry(pool.clone()).or_default();
                    if let Some(cap) = a.capacity {
                        p.capacity = cap.get();
                    }
                    if let Some(s) = a.strategy {
                        p.strategy = s;
                    }
                    if let Some(d) = a.reserve_after {
                        p.reserve_after_secs = Some(d.as_secs());
                    }
                    if let Some(m) = a.max_running {
                        p.max_running = m.get();
                    }
                }
                (None, Some(team)) => {
                    if quota_fields || pool_fields {
                        return Err(bad("a team's quota is per pool: give --pool"));
                    }
                    if a.max_running.is_none() && a.allowed_images.is_none() {
                        return Err(bad("for a team alone only --max-running and --allowed-images can be set"));
                    }
                    let limits = c.teams.entry(team.clone()).or_insert_with(TeamLimits::default);
                    if let Some(m) = a.max_running {
                        limits.max_running = m.get();
                    }
                    if let Some(list) = &a.allowed_images {
                        limits.images = if list == "none" {
                            Vec::new()
                        } else {
                            list.split(',')
                                .map(|p| p.trim().to_string())
                                .filter(|p| !p.is_empty())
                                .collect()
                        };
                    }
                    if limits.is_empty() {
                        c.teams.remove(team);
                    }
                }
                (None, None) => {
                    if a.allowed_images.is_some() {
                        return Err(bad("--allowed-images is per team: give --team"));
                    }
                    if quota_fields || pool_fields {
                        return Err(bad("give --pool (and --team for a team's quota)"));
                    }
                    if let Some(m) = a.max_running {
                        c.max_running = m.get();
                    }
                }
            }
            if let Some(list) = &a.allowed_teams {
                c.allowed_teams = (list != "none").then(|| {
                    list.split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect()
                });
            }
            Ok(())
        })
        .await?;
    done(&config, a.json);
    Ok(())
}

async fn delete(queue: &RedisQueue, a: QuotaDeleteArgs) -> CliResult<()> {
    if !a.all && a.pool.is_none() && a.team.is_none() {
        return Err(CliError::BadInput(
            "quota delete: give --pool, --team (or both), or --all".into(),
        ));
    }
    let config = queue
        .update_admission(|c| {
            if a.all {
                *c = AdmissionConfig::default();
                return Ok(());
            }
            match (&a.pool, &a.team) {
                (Some(pool), Some(team)) => {
                    let p = c
                        .pools
                        .get_mut(pool)
                        .ok_or_else(|| bad(format!("pool {pool} is not defined")))?;
                    p.quotas
                        .remove(team)
                        .ok_or_else(|| bad(format!("team {team} has no quota in pool {pool}")))?;
                }
                (Some(pool), None) => {
                    c.pools
                        .remove(pool)
                        .ok_or_else(|| bad(format!("pool {pool} is not defined")))?;
                }
                (None, Some(team)) => {
                    c.teams
                        .remove(team)
                        .ok_or_else(|| bad(format!("team {team} has no cap")))?;
                }
                (None, None) => unreachable!("checked above"),
            }
            Ok(())
        })
        .await?;
    done(&config, a.json);
    Ok(())
}

/// Reads a configuration file: TOML, or JSON when the name ends in `.json`.
pub(crate) fn parse_file(path: &std::path::Path, text: &str) -> CliResult<AdmissionConfig> {
    let name = path.display();
    let config: AdmissionConfig = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| CliError::BadInput(format!("{name}: {e}")))?
    } else {
        toml::from_str(text).map_err(|e| {
            CliError::BadInput(format!(
                "{name}: {}",
                e.to_string().lines().collect::<Vec<_>>().join(" ")
            ))
        })?
    };
    config
        .validate()
        .map_err(|e| CliError::BadInput(format!("{name}: {e}")))?;
    Ok(config)
}

async fn apply(queue: &RedisQueue, a: QuotaApplyArgs) -> CliResult<()> {
    let text = super::read_input(&a.file)?;
    let config = parse_file(&a.file, &text)?;
    queue.set_admission(&config).await?;
    done(&config, a.json);
    Ok(())
}

async fn check(queue: &RedisQueue, a: QuotaCheckArgs) -> CliResult<()> {
    let drift = queue.recount_usage(!a.dry_run).await?;
    if a.json {
        print_json(&serde_json::json!({ "repaired": !a.dry_run, "drift": drift }));
        return Ok(());
    }
    if drift.is_empty() {
        println!("usage matches the leases");
        return Ok(());
    }
    for d in &drift {
        println!(
            "{}: {} -> {}{}",
            d.field,
            d.recorded,
            d.actual,
            if a.dry_run {
                " (not repaired: --dry-run)"
            } else {
                ""
            }
        );
    }
    println!(
        "{} counters {}",
        drift.len(),
        if a.dry_run {
            "differ from the leases"
        } else {
            "repaired from the leases"
        }
    );
    Ok(())
}
