//! Admission state in Redis: the configuration, the usage the leases charge, each pool's
//! capacity and reservation, and why a queued job waits. The rules themselves run in the
//! scripts (`lua/admission.lua`).

use super::{scripts, RedisQueue};
use crate::admission::{AdmissionConfig, WaitReason};
use crate::{Error, JobId, Result};
use redis::AsyncCommands;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Running jobs and GPUs held, from the leases' charges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Jobs running.
    pub running: u64,
    /// Per pool: GPUs used and jobs running.
    pub pools: BTreeMap<String, Held>,
    /// Per pool, then team: GPUs used and jobs running.
    pub teams: BTreeMap<String, BTreeMap<String, Held>>,
    /// Per team, jobs running in all pools.
    pub team_running: BTreeMap<String, u64>,
    /// Per group, jobs running.
    pub groups: BTreeMap<String, u64>,
}

/// What some jobs hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Held {
    /// GPUs.
    pub gpus: u64,
    /// Jobs.
    pub jobs: u64,
}

impl Usage {
    fn from_fields(fields: HashMap<String, i64>) -> Usage {
        let mut u = Usage::default();
        for (f, v) in fields {
            let v = v.max(0) as u64;
            let parts: Vec<&str> = f.split('|').collect();
            match parts.as_slice() {
                ["j"] => u.running = v,
                ["t", team] => {
                    u.team_running.insert(team.to_string(), v);
                }
                ["j", pool] => u.pools.entry(pool.to_string()).or_default().jobs = v,
                ["g", pool] => u.pools.entry(pool.to_string()).or_default().gpus = v,
                ["j", pool, team] => {
                    u.teams
                        .entry(pool.to_string())
                        .or_default()
                        .entry(team.to_string())
                        .or_default()
                        .jobs = v
                }
                ["g", pool, team] => {
                    u.teams
                        .entry(pool.to_string())
                        .or_default()
                        .entry(team.to_string())
                        .or_default()
                        .gpus = v
                }
                ["grp", group] => {
                    u.groups.insert(group.to_string(), v);
                }
                _ => {}
            }
        }
        u
    }

    /// GPUs a team uses in a pool.
    pub fn team_gpus(&self, pool: &str, team: &str) -> u64 {
        self.teams
            .get(pool)
            .and_then(|t| t.get(team))
            .map_or(0, |h| h.gpus)
    }
}

/// One pool as `scheduler status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// Its name.
    pub pool: String,
    /// Its GPUs, when known (declared, or advertised by live workers).
    pub capacity: Option<u64>,
    /// GPUs used.
    pub used: u64,
    /// Jobs running.
    pub running: u64,
    /// The job holding its reservation, if any.
    pub reserved_by: Option<String>,
    /// GPUs that job waits for.
    pub reserved: u64,
    /// Running jobs preempted for that job, still stopping.
    pub draining: Vec<String>,
}

/// A usage counter that did not match the leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The counter (`g|POOL|TEAM`, ...).
    pub field: String,
    /// What it said.
    pub recorded: i64,
    /// What the leases add up to.
    pub actual: i64,
}

/// Why a queued job waits, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// Jobs ahead of it at its priority or a more urgent one, in its pool.
    pub position: Option<u64>,
    /// The reason it is not running yet.
    pub reason: WaitReason,
}

/// What the census script reads in one step.
pub(super) struct Census {
    pub(super) priorities: Vec<PriorityCensus>,
    pub(super) pools: Vec<PoolStatus>,
    pub(super) waiting: BTreeMap<String, u64>,
}

/// The census script's per-priority figures: queued, parked, oldest head.
pub(super) struct PriorityCensus {
    pub(super) queued: u64,
    pub(super) parked: u64,
    pub(super) oldest: Option<u64>,
}

/// The admission configuration as read once, with the SHA-1 of its JSON (empty when none
/// is set): what enqueue.lua compares with the configuration it finds, so that an
/// enqueue checked against a configuration that changed since is refused and checked
/// again, without a read of the configuration on every enqueue.
#[derive(Clone)]
pub(super) struct AdmissionSeen {
    pub(super) digest: String,
    pub(super) config: Option<Arc<AdmissionConfig>>,
}

fn parse_admission(raw: &str) -> Result<AdmissionConfig> {
    serde_json::from_str(raw).map_err(|e| Error::Corrupt(format!("admission configuration: {e}")))
}

impl RedisQueue {
    /// The admission configuration, if one was set.
    pub async fn admission(&self) -> Result<Option<AdmissionConfig>> {
        let mut conn = self.conn().await?;
        let raw: Option<String> = conn.get(self.keys.admission()).await?;
        raw.map(|r| parse_admission(&r)).transpose()
    }

    /// The admission configuration this process read last, or read now if it has none;
    /// true when it was read now.
    pub(super) async fn admission_seen(&self) -> Result<(AdmissionSeen, bool)> {
        if let Some(seen) = self.admission_seen.lock().expect("admission lock").clone() {
            return Ok((seen, false));
        }
        let mut conn = self.conn().await?;
        let raw: Option<String> = conn.get(self.keys.admission()).await?;
        let seen = AdmissionSeen {
            digest: raw
                .as_deref()
                .map(|r| sha1_smol::Sha1::from(r).hexdigest())
                .unwrap_or_default(),
            config: raw.map(|r| parse_admission(&r)).transpose()?.map(Arc::new),
        };
        *self.admission_seen.lock().expect("admission lock") = Some(seen.clone());
        Ok((seen, true))
    }

    /// Forgets the configuration read last (enqueue.lua found another one).
    pub(super) fn forget_admission(&self) {
        *self.admission_seen.lock().expect("admission lock") = None;
    }

    /// Replaces the whole admission configuration (`quota apply`), after validating it.
    pub async fn set_admission(&self, config: &AdmissionConfig) -> Result<()> {
        self.update_admission(|c| {
            *c = config.clone();
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Edits the admission configuration with `edit`, which sees the current one (or an
    /// empty one), and writes the result if nobody changed it meanwhile (else it reads
    /// again and edits again). The result is validated before it is written; an empty
    /// configuration is removed.
    pub async fn update_admission(
        &self,
        mut edit: impl FnMut(&mut AdmissionConfig) -> Result<()>,
    ) -> Result<AdmissionConfig> {
        let mut conn = self.conn().await?;
        loop {
            let raw: Option<String> = conn.get(self.keys.admission()).await?;
            let mut config: AdmissionConfig = match &raw {
                Some(r) => parse_admission(r)?,
                None => AdmissionConfig::default(),
            };
            edit(&mut config)?;
            config.validate()?;
            let new = if config == AdmissionConfig::default() {
                String::new()
            } else {
                serde_json::to_string(&config).expect("the configuration always serializes")
            };
            let answer: String = scripts::CONFIGURE
                .arg(self.keys.prefix())
                .arg(raw.unwrap_or_default())
                .arg(new)
                .invoke_async(&mut conn)
                .await?;
            if answer == "ok" {
                // This process's enqueues check against the new one from now on (other
                // processes' find out from enqueue.lua).
                self.forget_admission();
                return Ok(config);
            }
        }
    }

    /// The usage the leases charge now.
    pub async fn usage(&self) -> Result<Usage> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, i64> = conn.hgetall(self.keys.usage()).await?;
        Ok(Usage::from_fields(fields))
    }

    /// Compares the usage with the sum of the leases' charges; with `repair`, sets it to
    /// that sum. Returns the counters that differed (before the repair).
    pub async fn recount_usage(&self, repair: bool) -> Result<Vec<Drift>> {
        let mut conn = self.conn().await?;
        let flat: Vec<String> = scripts::RECOUNT
            .key(self.keys.workers())
            .arg(self.keys.prefix())
            .arg(if repair { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        flat.chunks(3)
            .map(|c| match c {
                [field, recorded, actual] => Ok(Drift {
                    field: field.clone(),
                    recorded: recorded.parse().unwrap_or(0),
                    actual: actual.parse().unwrap_or(0),
                }),
                _ => Err(Error::Corrupt("recount script answered a partial row".into())),
            })
            .collect()
    }

    /// Why a queued job waits, computed with the claim's own rules; `None` when the job is
    /// not queued.
    pub async fn why_waiting(&self, id: &JobId) -> Result<Option<Waiting>> {
        let mut conn = self.conn().await?;
        let reply: Vec<String> = scripts::WHY
            .arg(self.keys.prefix())
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await?;
        let Some((position, reason)) = reply.split_first() else {
            return Ok(None);
        };
        let reason = WaitReason::from_script(reason)
            .ok_or_else(|| Error::Corrupt(format!("why script answered {reply:?}")))?;
        let position = position.parse::<i64>().ok().filter(|p| *p >= 0).map(|p| p as u64);
        Ok(Some(Waiting { position, reason }))
    }

    /// Per priority (most urgent first) what is queued, and per pool its capacity,
    /// use and reservation.
    pub(super) async fn census(&self) -> Result<Census> {
        let mut conn = self.conn().await?;
        let reply: Vec<String> = scripts::CENSUS
            .arg(self.keys.prefix())
            .invoke_async(&mut conn)
            .await?;
        let num = |s: &str| s.parse::<u64>().ok();
        let bad = || Error::Corrupt(format!("census script answered {} values", reply.len()));
        let pools_n = reply.get(9).and_then(|n| num(n)).ok_or_else(bad)? as usize;
        let reasons_at = 10 + pools_n * 7;
        if reply.len() < reasons_at || (reply.len() - reasons_at) % 2 != 0 {
            return Err(bad());
        }
        let priorities = reply[..9]
            .chunks(3)
            .map(|c| PriorityCensus {
                queued: num(&c[0]).unwrap_or(0),
                parked: num(&c[1]).unwrap_or(0),
                oldest: num(&c[2]),
            })
            .collect();
        let pools = reply[10..reasons_at]
            .chunks(7)
            .map(|c| PoolStatus {
                pool: c[0].clone(),
                capacity: num(&c[1]),
                used: num(&c[2]).unwrap_or(0),
                running: num(&c[3]).unwrap_or(0),
                reserved_by: (!c[4].is_empty()).then(|| c[4].clone()),
                reserved: num(&c[5]).unwrap_or(0),
                draining: c[6]
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
            .collect();
        let waiting = reply[reasons_at..]
            .chunks(2)
            .map(|c| (c[0].clone(), num(&c[1]).unwrap_or(0)))
            .collect();
        Ok(Census {
            priorities,
            pools,
            waiting,
        })
    }
}
