//! `quota`: pools, team quotas and caps, and the usage the leases hold against them.

use crate::app::{App, Caller, PoolRow, TeamRow};
use crate::cli::{QuotaApplyArgs, QuotaCheckArgs, QuotaCommand, QuotaDeleteArgs, QuotaSetArgs};
use crate::format::print_json;
use crate::{CliError, CliResult};
use common::admission::{AdmissionConfig, PoolConfig, Quota, TeamLimits};

pub(crate) async fn run(app: &App, caller: &Caller, command: QuotaCommand) -> CliResult<()> {
    match command {
        QuotaCommand::Show(a) => show(app, caller, a.json).await,
        QuotaCommand::Set(a) => set(app, caller, a).await,
        QuotaCommand::Delete(a) => delete(app, caller, a).await,
        QuotaCommand::Apply(a) => apply(app, caller, a).await,
        QuotaCommand::Check(a) => check(app, caller, a).await,
    }
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

async fn show(app: &App, caller: &Caller, json: bool) -> CliResult<()> {
    let view = app.quotas(caller).await?;
    if json {
        print_json(&view);
        return Ok(());
    }
    let mut o = String::new();
    describe(&mut o, &view.config);
    render_rows(&mut o, &view.pools, &view.teams);
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

async fn set(app: &App, caller: &Caller, a: QuotaSetArgs) -> CliResult<()> {
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
    let config = app
        .update_admission(caller, "quota.set", |c| {
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

async fn delete(app: &App, caller: &Caller, a: QuotaDeleteArgs) -> CliResult<()> {
    if !a.all && a.pool.is_none() && a.team.is_none() {
        return Err(CliError::BadInput(
            "quota delete: give --pool, --team (or both), or --all".into(),
        ));
    }
    let config = app
        .update_admission(caller, "quota.delete", |c| {
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

async fn apply(app: &App, caller: &Caller, a: QuotaApplyArgs) -> CliResult<()> {
    let text = super::read_input(&a.file)?;
    let config = crate::app::parse_quota_file(&a.file, &text)?;
    app.set_admission(caller, &config).await?;
    done(&config, a.json);
    Ok(())
}

async fn check(app: &App, caller: &Caller, a: QuotaCheckArgs) -> CliResult<()> {
    caller.require(crate::app::Role::Admin, "repairing usage counters")?;
    let drift = app.queue().recount_usage(!a.dry_run).await?;
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
