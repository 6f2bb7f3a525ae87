//! GPU admission: pools, team quotas with borrowing, caps on running jobs, and the
//! reasons a job waits.
//!
//! The rules run inside the claim script (`queue/lua/admission.lua`), so that a job is
//! admitted and its usage charged in one atomic step. This module holds the
//! configuration those rules read, the charge a job carries, the checks made at enqueue
//! (a job that could never be admitted is refused there), and the reasons as types.

mod images;
mod reason;

pub use images::image_matches;
pub use reason::WaitReason;

use crate::preemption::Preemption;
use crate::{Error, JobSpec, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The pool of jobs that name no `gpu_type`.
pub const DEFAULT_POOL: &str = "default";

/// How long a job held up by capacity waits before it reserves its pool, unless the pool
/// says otherwise.
pub const DEFAULT_RESERVE_AFTER_SECS: u64 = 600;

/// The pool a spec's job runs in: its GPU type, or [`DEFAULT_POOL`].
pub fn pool_of(spec: &JobSpec) -> &str {
    spec.resources.gpu_type.as_deref().unwrap_or(DEFAULT_POOL)
}

/// What a job's lease holds while it runs: GPUs of a pool, for a team, in a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Charge {
    /// The pool.
    pub pool: String,
    /// The team.
    pub team: String,
    /// GPUs.
    pub gpus: u32,
    /// The group (`batch --group`), if any.
    pub group: Option<String>,
}

impl Charge {
    /// The charge of a spec's job.
    pub fn of(spec: &JobSpec) -> Charge {
        Charge {
            pool: pool_of(spec).to_string(),
            team: spec.team.clone(),
            gpus: spec.resources.gpus,
            group: spec.group.clone(),
        }
    }

    /// As the scripts keep it: `pool|team|gpus|group`, or empty for the common default
    /// (default pool and team, no GPUs, no group), which the scripts assume when absent.
    pub fn encode(&self) -> String {
        let s = format!(
            "{}|{}|{}|{}",
            self.pool,
            self.team,
            self.gpus,
            self.group.as_deref().unwrap_or("")
        );
        if s == "default|default|0|" {
            String::new()
        } else {
            s
        }
    }

    /// Reads the scripts' form back (empty or absent is the default).
    pub fn decode(s: Option<&str>) -> Option<Charge> {
        let s = s.filter(|s| !s.is_empty()).unwrap_or("default|default|0|");
        let mut parts = s.splitn(4, '|');
        let (pool, team, gpus, group) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        Some(Charge {
            pool: pool.to_string(),
            team: team.to_string(),
            gpus: gpus.parse().ok()?,
            group: (!group.is_empty()).then(|| group.to_string()),
        })
    }
}

/// How a pool orders jobs that cannot all start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// A job that cannot be admitted for the pool's sake (full, at its cap, reserved)
    /// holds up everything behind it in the pool; one held up by its team holds up its
    /// team's jobs there.
    Strict,
    /// Jobs behind one that cannot be admitted start if they fit.
    #[default]
    BestEffort,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Strict => "strict",
            Strategy::BestEffort => "best-effort",
        })
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Strategy::Strict),
            "best-effort" => Ok(Strategy::BestEffort),
            other => Err(format!("strategy {other:?} is not strict or best-effort")),
        }
    }
}

/// A team's share of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// GPUs the team is entitled to.
    pub nominal: u32,
    /// Most GPUs it may use beyond `nominal`, borrowed from its cohort (none: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowing_limit: Option<u32>,
    /// Most of its unused `nominal` the cohort may borrow (none: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lending_limit: Option<u32>,
    /// The teams that lend to each other (none: the pool's one cohort, shared with the
    /// teams that have no quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
}

/// One pool of capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// GPUs in the pool (none: the devices its live workers advertise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// Most jobs running in the pool at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// How jobs that cannot all start are ordered.
    #[serde(default)]
    pub strategy: Strategy,
    /// Seconds a job held up by capacity waits before it reserves the pool (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_after_secs: Option<u64>,
    /// Team quotas. Teams without one share what the quotas leave of the capacity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quotas: BTreeMap<String, Quota>,
}

/// Caps of one team, across pools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamLimits {
    /// Most jobs of the team running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// When not empty, the only container images the team's jobs may name: patterns in
    /// which `*` stands for any run of characters (`registry.example/team-a/*`). A job
    /// that names none runs the worker's default image and is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl TeamLimits {
    /// Whether nothing is set, so the entry can go.
    pub fn is_empty(&self) -> bool {
        self.max_running.is_none() && self.images.is_empty()
    }
}

/// The whole admission configuration: what `scheduler quota apply` loads and
/// `quota set|delete` edit. Everything is optional; an empty one admits everything
/// (only a worker's own devices and group caps apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Most jobs running at once in the whole queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// When set, the only teams that may enqueue or be given a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_teams: Option<BTreeSet<String>>,
    /// Per-team caps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<String, TeamLimits>,
    /// Pools. When any is defined, a job must name one of them (or none, for the
    /// default pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, PoolConfig>,
    /// Who may preempt whom, and the limits that keep it from thrashing.
    #[serde(default, skip_serializing_if = "Preemption::is_default")]
    pub preemption: Preemption,
}

fn check_name(what: &str, value: &str) -> Result<()> {
    if crate::spec::is_safe_name(value) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{what} {value:?} must be 1 to 63 letters, digits, '-', '_' or '.'"
        )))
    }
}

impl AdmissionConfig {
    /// Checks what serde cannot: names, and limits that contradict each other.
    pub fn validate(&self) -> Result<()> {
        self.preemption.validate()?;
        if let Some(teams) = &self.allowed_teams {
            for t in teams {
                check_name("allowed team", t)?;
            }
        }
        for (team, limits) in &self.teams {
            check_name("team", team)?;
            self.check_team_allowed(team)?;
            for p in &limits.images {
                if p.trim().is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(Error::InvalidInput(format!(
                        "team {team}: image pattern {p:?} must be non-empty, without spaces"
                    )));
                }
            }
        }
        for (name, pool) in &self.pools {
            check_name("pool", name)?;
            for (team, q) in &pool.quotas {
                check_name("team", team)?;
                self.check_team_allowed(team)?;
                if let Some(c) = &q.cohort {
                    check_name("cohort", c)?;
                }
                if q.lending_limit.is_some_and(|l| l > q.nominal) {
                    return Err(Error::InvalidInput(format!(
                        "pool {name}, team {team}: lending_limit {} is more than the nominal quota {}",
                        q.lending_limit.unwrap_or_default(),
                        q.nominal
                    )));
                }
            }
        }
        Ok(())
    }

    /// Refuses a team the allow-list (when on) does not name.
    pub fn check_team_allowed(&self, team: &str) -> Result<()> {
        match &self.allowed_teams {
            Some(allowed) if !allowed.contains(team) => Err(Error::InvalidInput(format!(
                "team {team:?} is not in the team allow-list ({})",
                allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a job whose image its team's allow-list (when it has one) does not match.
    pub fn check_image_allowed(&self, spec: &JobSpec) -> Result<()> {
        let (Some(image), Some(limits)) = (&spec.image, self.teams.get(&spec.team)) else {
            return Ok(());
        };
        if limits.images.is_empty() || limits.images.iter().any(|p| image_matches(p, image)) {
            return Ok(());
        }
        Err(Error::InvalidInput(format!(
            "image {image:?} is not allowed for team {:?} (allowed: {})",
            spec.team,
            limits.images.join(", ")
        )))
    }

    /// Refuses, at enqueue, a job that could never be admitted: an unknown team (with the
    /// allow-list on), a pool nobody defined (when pools are defined), more GPUs than its
    /// pool declares, or more than its team could ever hold there.
    pub fn check_admissible(&self, spec: &JobSpec) -> Result<()> {
        self.check_team_allowed(&spec.team)?;
        self.check_image_allowed(spec)?;
        let pool = pool_of(spec);
        let gpus = spec.resources.gpus;
        let Some(pc) = self.pools.get(pool) else {
            if pool != DEFAULT_POOL && !self.pools.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "job {:?} asks for pool {pool:?}, which is not defined (pools: {})",
                    spec.name,
                    self.pools.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            return Ok(());
        };
        if let Some(cap) = pc.capacity {
            if gpus > cap {
                return Err(Error::InvalidInput(format!(
                    "job {:?} needs {gpus} GPUs, more than pool {pool} holds ({cap})",
                    spec.name
                )));
            }
        }
        if gpus > 0 && !pc.quotas.is_empty() {
            let most = Self::most_for_team(pc, &spec.team);
            if let Some(most) = most {
                if gpus > most {
                    return Err(Error::InvalidInput(format!(
                        "job {:?} needs {gpus} GPUs, more than team {} can ever hold in pool {pool} ({most}, quota with borrowing)",
                        spec.name, spec.team
                    )));
                }
            }
        }
        Ok(())
    }

    /// The most GPUs a team could hold in a pool with nothing else running, when that is
    /// known (the capacity is declared, or the team's borrowing is limited).
    fn most_for_team(pc: &PoolConfig, team: &str) -> Option<u32> {
        let assigned: u32 = pc.quotas.values().map(|q| q.nominal).sum();
        let shared = pc.capacity.map(|c| c.saturating_sub(assigned));
        match pc.quotas.get(team) {
            // Teams without a quota share what the quotas leave, and borrow nothing.
            None => shared,
            Some(q) => {
                let cohort = q.cohort.as_deref();
                let mut in_cohort: u32 = pc
                    .quotas
                    .values()
                    .filter(|o| o.cohort.as_deref() == cohort)
                    .map(|o| o.nominal)
                    .sum();
                if cohort.is_none() {
                    in_cohort += shared?;
                }
                let borrow_cap = q.borrowing_limit.map(|b| q.nominal + b);
                Some(borrow_cap.map_or(in_cohort, |b| b.min(in_cohort)))
            }
        }
    }

    /// The pool's configuration, if it is defined.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_charge_is_not_written() {
        let spec = JobSpec::new("a", "default", vec!["true".into()]);
        assert_eq!(Charge::of(&spec).encode(), "");
        assert_eq!(Charge::decode(None), Some(Charge::of(&spec)));
        let mut gpu = JobSpec::new("b", "vision", vec!["true".into()]);
        gpu.resources.gpus = 4;
        gpu.resources.gpu_type = Some("a100".into());
        gpu.group = Some("sweep-3".into());
        let c = Charge::of(&gpu);
        assert_eq!(c.encode(), "a100|vision|4|sweep-3");
        assert_eq!(Charge::decode(Some(&c.encode())), Some(c));
    }

    fn config() -> AdmissionConfig {
        let mut pools = BTreeMap::new();
        let mut quotas = BTreeMap::new();
        quotas.insert(
            "vision".to_string(),
            Quota {
                nominal: 8,
                borrowing_limit: Some(4),
                ..Quota::default()
            },
        );
        quotas.insert(
            "nlp".to_string(),
            Quota {
                nominal: 4,
                ..Quota::default()
            },
        );
        pools.insert(
            "a100".to_string(),
            PoolConfig {
                capacity: Some(16),
                quotas,
                ..PoolConfig::default()
            },
        );
        AdmissionConfig {
            pools,
            ..AdmissionConfig::default()
        }
    }

    fn job(team: &str, pool: Option<&str>, gpus: u32) -> JobSpec {
        let mut s = JobSpec::new("j", team, vec!["true".into()]);
        s.resources.gpus = gpus;
        s.resources.gpu_type = pool.map(str::to_string);
        s
    }

    #[test]
    fn a_job_that_could_never_be_admitted_is_refused() {
        let c = config();
        assert!(c.check_admissible(&job("vision", Some("a100"), 12)).is_ok());
        let e = c.check_admissible(&job("vision", Some("a100"), 13)).unwrap_err();
        assert!(
            e.to_string().contains("more than team vision can ever hold"),
            "{e}"
        );
        let e = c.check_admissible(&job("vision", Some("a100"), 17)).unwrap_err();
        assert!(e.to_string().contains("more than pool a100 holds (16)"), "{e}");
        let e = c.check_admissible(&job("vision", Some("h100"), 1)).unwrap_err();
        assert!(e.to_string().contains("not defined"), "{e}");
        // nlp may borrow everything its cohort holds: 8 + 4 + the 4 nobody was given.
        assert!(c.check_admissible(&job("nlp", Some("a100"), 16)).is_ok());
        // Teams without a quota share the 4 GPUs the quotas leave.
        assert!(c.check_admissible(&job("audio", Some("a100"), 4)).is_ok());
        assert!(c.check_admissible(&job("audio", Some("a100"), 5)).is_err());
        assert!(
            c.check_admissible(&job("audio", None, 64)).is_ok(),
            "the default pool is not defined: no limit"
        );
    }

    #[test]
    fn the_allow_list_refuses_unknown_teams() {
        let mut c = config();
        c.allowed_teams = Some(["vision".to_string(), "nlp".to_string()].into());
        assert!(c.validate().is_ok());
        assert!(c.check_admissible(&job("audio", None, 0)).is_err());
        c.teams.insert(
            "audio".into(),
            TeamLimits {
                max_running: Some(1),
                ..TeamLimits::default()
            },
        );
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("not in the team allow-list"), "{e}");
    }

    #[test]
    fn reasons_read_from_the_script_say_what_holds_the_job() {
        let r = |p: &[&str]| {
            WaitReason::from_script(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .to_string()
        };
        assert_eq!(
            r(&["quota", "vision", "a100", "16", "16", "0", "0"]),
            "team vision at its a100 quota (16/16 GPUs)"
        );
        assert_eq!(
            r(&["pool_full", "h100", "64", "64", "8"]),
            "pool h100 full (64/64 GPUs used, needs 8)"
        );
        assert_eq!(
            r(&["group", "sweep-3", "2", "2"]),
            "group sweep-3 at max-running 2"
        );
        assert_eq!(
            r(&["reserved", "a100", "big-1"]),
            "pool a100 reserved for job big-1"
        );
        assert_eq!(r(&["behind", "12"]), "behind 12 jobs of higher or equal priority");
    }
}
