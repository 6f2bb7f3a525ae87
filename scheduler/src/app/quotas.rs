//! Pools, team quotas and caps, and the usage the leases hold against them.

use super::{App, AppError, AppResult, Caller, Role};
use common::admission::AdmissionConfig;
use common::queue::{PoolStatus, Usage};
use serde::Serialize;

/// One pool as `quota show` and `status` print it.
#[derive(Debug, Serialize)]
pub struct PoolRow {
    pub pool: String,
    /// GPUs, when known.
    pub capacity: Option<u64>,
    pub used: u64,
    /// GPUs held for the job holding the reservation.
    pub reserved: u64,
    pub free: Option<u64>,
    pub running: u64,
    pub max_running: Option<u32>,
    pub strategy: String,
    pub reserved_by: Option<String>,
    /// Running jobs preempted for the reservation, still stopping.
    pub draining: Vec<String>,
}

/// One team's use of one pool.
#[derive(Debug, Serialize)]
pub struct TeamRow {
    pub pool: String,
    pub team: String,
    pub used: u64,
    /// Its nominal quota; `None` for a team without one.
    pub nominal: Option<u64>,
    /// GPUs it uses beyond its nominal quota.
    pub borrowed: u64,
    pub borrowing_limit: Option<u32>,
    pub running: u64,
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

/// The admission configuration with each pool's and team's use of it.
#[derive(Debug, Serialize)]
pub struct QuotaView {
    /// The configuration (pools, quotas, caps).
    pub config: AdmissionConfig,
    /// Each pool's GPUs.
    pub pools: Vec<PoolRow>,
    /// Each team's GPUs in each pool.
    pub teams: Vec<TeamRow>,
    /// The raw usage counters.
    pub usage: Usage,
}

impl App {
    /// The configuration and what is used of it. A team caller sees its own team's rows
    /// and the pools (capacity is not a secret: it explains why a job waits).
    pub async fn quotas(&self, caller: &Caller) -> AppResult<QuotaView> {
        caller.require(Role::Viewer, "reading quotas")?;
        let config = self.queue().admission().await?.unwrap_or_default();
        let status = self.queue().status().await?;
        let (pools, mut teams) = rows(&config, &status.pools, &status.usage);
        teams.retain(|t| caller.sees_team(&t.team));
        let mut usage = status.usage;
        if caller.team.is_some() {
            for per_team in usage.teams.values_mut() {
                per_team.retain(|team, _| caller.sees_team(team));
            }
        }
        Ok(QuotaView {
            config,
            pools,
            teams,
            usage,
        })
    }

    /// Replaces the admission configuration (admins only), after validating it.
    pub async fn set_admission(&self, caller: &Caller, config: &AdmissionConfig) -> AppResult<()> {
        caller.require(Role::Admin, "changing quotas")?;
        config
            .validate()
            .map_err(|e| AppError::bad_input(e.to_string()))?;
        self.queue().set_admission(config).await?;
        self.audit(
            caller,
            "quota.apply",
            "admission",
            &format!("{} pools", config.pools.len()),
        )
        .await;
        Ok(())
    }

    /// Changes the admission configuration in place (admins only): `change` gets the
    /// current one and says what is wrong with the request, if anything.
    pub async fn update_admission(
        &self,
        caller: &Caller,
        what: &str,
        change: impl FnMut(&mut AdmissionConfig) -> common::Result<()>,
    ) -> AppResult<AdmissionConfig> {
        caller.require(Role::Admin, "changing quotas")?;
        let config = self.queue().update_admission(change).await?;
        self.audit(caller, what, "admission", "").await;
        Ok(config)
    }
}

/// Reads an admission configuration file: TOML, or JSON when the name ends in `.json`.
pub fn parse_quota_file(path: &std::path::Path, text: &str) -> AppResult<AdmissionConfig> {
    let name = path.display();
    let config: AdmissionConfig = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| AppError::bad_input(format!("{name}: {e}")))?
    } else {
        toml::from_str(text).map_err(|e| {
            AppError::bad_input(format!(
                "{name}: {}",
                e.to_string().lines().collect::<Vec<_>>().join(" ")
            ))
        })?
    };
    config
        .validate()
        .map_err(|e| AppError::bad_input(format!("{name}: {e}")))?;
    Ok(config)
}
