//! Preemption: urgent work takes GPUs from background work, which checkpoints and goes
//! back to the head of its queue without losing an attempt.
//!
//! The decision runs in one script (`queue/lua/preempt.lua`), atomically with the pool's
//! reservation for the preemptor, so no other job can take the GPUs the victims free.
//! This module holds the configuration it reads (the `preemption` section of the
//! admission configuration), what the worker is told about each job it runs, and the
//! check made at enqueue on jobs that opt out.

use crate::{Error, JobId, JobSpec, Priority, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Seconds a victim gets between SIGTERM and SIGKILL, unless its spec or the
/// configuration says otherwise.
pub const DEFAULT_GRACE_SECS: u64 = 60;
/// A job that has run less than this is not preempted.
pub const DEFAULT_MIN_RUNTIME_SECS: u64 = 300;
/// Most victims per pool in any minute.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 10;
/// A job preempted this many times is not preempted again until it ends.
pub const DEFAULT_MAX_PREEMPTIONS: u32 = 3;

/// The `preemption` section of the admission configuration. Every field is optional;
/// the defaults are those of [`Preemption::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preemption {
    /// `false` turns preemption off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Per priority, the priorities its jobs may preempt. Absent priorities keep the
    /// default: urgent preempts normal and background, normal preempts background,
    /// background preempts nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy: BTreeMap<Priority, Vec<Priority>>,
    /// Whether a team below its nominal quota takes it back from teams running over
    /// theirs, whatever their priority (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim: Option<bool>,
    /// A job younger than this is not preempted (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_runtime_secs: Option<u64>,
    /// Most victims per pool in any 60 s (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
    /// A job preempted this many times becomes non-preemptible until it ends (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_preemptions: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL for a victim (default 60; a spec's
    /// `preempt_grace_secs` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u64>,
    /// Teams whose jobs of any priority may say `"preemptible": false`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub non_preemptible_teams: BTreeSet<String>,
}

impl Preemption {
    /// Whether nothing is set (the section is left out of the stored configuration).
    pub fn is_default(&self) -> bool {
        *self == Preemption::default()
    }

    /// The priorities a job of `p` may preempt.
    pub fn may_preempt(&self, p: Priority) -> Vec<Priority> {
        if let Some(list) = self.policy.get(&p) {
            return list.clone();
        }
        match p {
            Priority::Urgent => vec![Priority::Normal, Priority::Background],
            Priority::Normal => vec![Priority::Background],
            Priority::Background => Vec::new(),
        }
    }

    /// Checks what serde cannot: a priority may only preempt less urgent ones, so two
    /// jobs can never preempt each other back and forth.
    pub fn validate(&self) -> Result<()> {
        for (p, victims) in &self.policy {
            if let Some(v) = victims.iter().find(|v| **v <= *p) {
                return Err(Error::InvalidInput(format!(
                    "preemption policy: {p} may only preempt less urgent priorities, not {v}"
                )));
            }
        }
        if self.max_per_minute == Some(0) {
            return Err(Error::InvalidInput(
                "preemption max_per_minute must be at least 1 (use enabled: false to turn it off)".into(),
            ));
        }
        for t in &self.non_preemptible_teams {
            if !crate::spec::is_safe_name(t) {
                return Err(Error::InvalidInput(format!(
                    "non_preemptible_teams: team {t:?} must be 1 to 63 letters, digits, '-', '_' or '.'"
                )));
            }
        }
        Ok(())
    }

    /// Refuses at enqueue a job that opts out of preemption without being allowed to:
    /// only urgent jobs may, and jobs of the teams the configuration names.
    pub fn check_opt_out(config: Option<&Self>, spec: &JobSpec) -> Result<()> {
        if spec.preemptible != Some(false) || spec.priority == Priority::Urgent {
            return Ok(());
        }
        if config.is_some_and(|c| c.non_preemptible_teams.contains(&spec.team)) {
            return Ok(());
        }
        Err(Error::InvalidInput(format!(
            "\"preemptible\": false is only allowed for urgent (p0) jobs, or for teams in \
             preemption.non_preemptible_teams; team {:?} at {} is not",
            spec.team, spec.priority
        )))
    }
}

/// What a worker is told, each cancel-check interval, about a job it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// Go on.
    Run,
    /// Its cancellation was requested.
    Cancel,
    /// It was chosen as a victim of `by`, which holds its pool's reservation: stop it
    /// with SIGTERM, give it `grace` to checkpoint and exit, then SIGKILL it.
    Preempt {
        /// The job the victim makes room for.
        by: JobId,
        /// Time between SIGTERM and SIGKILL.
        grace: Duration,
    },
}

impl Directive {
    /// Parses a reply of `watch.lua`; `spec` gives the job's own grace, which wins.
    pub(crate) fn from_script(reply: &str, spec_grace: Option<u64>) -> Directive {
        let mut parts = reply.split('\t');
        match parts.next() {
            Some("cancel") => Directive::Cancel,
            Some("preempt") => {
                let Some(Ok(by)) = parts.next().map(str::parse::<JobId>) else {
                    return Directive::Run;
                };
                let default = parts
                    .next()
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(DEFAULT_GRACE_SECS);
                Directive::Preempt {
                    by,
                    grace: Duration::from_secs(spec_grace.unwrap_or(default)),
                }
            }
            _ => Directive::Run,
        }
    }
}

/// One preemption `preempt.lua` started: the pool, the job it is for, and its victims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The pool whose capacity is taken back.
    pub pool: String,
    /// The job that now holds the pool's reservation.
    pub preemptor: JobId,
    /// The running jobs flagged to stop for it.
    pub victims: Vec<JobId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_lets_each_priority_preempt_only_less_urgent_ones() {
        let p = Preemption::default();
        assert_eq!(
            p.may_preempt(Priority::Urgent),
            vec![Priority::Normal, Priority::Background]
        );
        assert_eq!(p.may_preempt(Priority::Normal), vec![Priority::Background]);
        assert!(p.may_preempt(Priority::Background).is_empty());
    }

    #[test]
    fn a_policy_that_preempts_upwards_is_refused() {
        let mut p = Preemption::default();
        p.policy.insert(Priority::Background, vec![Priority::Normal]);
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("p2 may only preempt less urgent priorities, not p1"),
            "{e}"
        );
    }

    #[test]
    fn only_urgent_jobs_and_named_teams_may_opt_out() {
        let mut spec = JobSpec::new("x", "vision", vec!["true".into()]);
        spec.preemptible = Some(false);
        let e = Preemption::check_opt_out(None, &spec).unwrap_err().to_string();
        assert!(e.contains("only allowed for urgent (p0) jobs"), "{e}");
        spec.priority = Priority::Urgent;
        assert!(Preemption::check_opt_out(None, &spec).is_ok());
        spec.priority = Priority::Background;
        let mut c = Preemption::default();
        c.non_preemptible_teams.insert("vision".into());
        assert!(Preemption::check_opt_out(Some(&c), &spec).is_ok());
    }

    #[test]
    fn the_workers_directive_takes_the_specs_grace_over_the_default() {
        assert_eq!(Directive::from_script("", None), Directive::Run);
        assert_eq!(Directive::from_script("cancel", Some(5)), Directive::Cancel);
        assert_eq!(
            Directive::from_script("preempt\tj-1\t60", None),
            Directive::Preempt {
                by: "j-1".parse().unwrap(),
                grace: Duration::from_secs(60)
            }
        );
        assert_eq!(
            Directive::from_script("preempt\tj-1\t60", Some(7)),
            Directive::Preempt {
                by: "j-1".parse().unwrap(),
                grace: Duration::from_secs(7)
            }
        );
    }
}
