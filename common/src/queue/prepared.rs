//! A batch validated and encoded for enqueue.lua: its jobs in groups that share their
//! settings, each job's spec as JSON, and a big group that starts now as pending records
//! (`lua/lib.lua`), built here so that Redis stores each as it comes.

use super::enqueue::MAX_ATOMIC_BATCH;
use crate::{JobId, JobSpec, Result};
use std::sync::Arc;

/// A batch validated and encoded for enqueue.lua, not yet sent.
pub(super) struct Prepared {
    pub(super) specs: Vec<JobSpec>,
    pub(super) groups: Vec<Group>,
    pub(super) ids: Vec<JobId>,
    /// For a chunk of a resumable batch: where it goes in the batch.
    pub(super) resume: Option<Resume>,
}

/// Where a chunk of a resumable batch goes: the batch's record (`Keys::resume`) and the
/// chunk's first position in the batch.
pub(super) struct Resume {
    pub(super) record: String,
    pub(super) at: usize,
}

impl Prepared {
    /// Validates `specs` (giving ids to those without) and groups them for enqueue.lua.
    pub(super) fn new(mut specs: Vec<JobSpec>, actor: &Arc<str>) -> Result<Self> {
        if specs.len() > MAX_ATOMIC_BATCH {
            return Err(crate::Error::InvalidInput(format!(
                "a batch of {} jobs is more than the {MAX_ATOMIC_BATCH} one atomic enqueue takes",
                specs.len()
            )));
        }
        for spec in &specs {
            spec.validate()?;
        }
        // Runs of consecutive jobs that share their settings go as one group.
        let mut groups: Vec<Group> = Vec::new();
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs.iter_mut() {
            let (settings, id, json) = encode(spec, actor)?;
            ids.push(id.clone());
            match groups.last_mut() {
                Some(g) if g.settings == settings => g.jobs.push((id, json)),
                _ => groups.push(Group::of(settings, id, json)),
            }
        }
        for g in groups.iter_mut() {
            g.as_records();
        }
        Ok(Prepared {
            specs,
            groups,
            ids,
            resume: None,
        })
    }
}

/// Jobs of a batch that share their settings, in batch order (see lua/enqueue.lua): a
/// typical batch is one group, with two values per job.
pub(super) struct Group {
    pub(super) settings: Settings,
    /// The token of the head the group's pending records share (lua/lib.lua), or empty
    /// when its jobs get hashes.
    pub(super) token: String,
    /// Each job's id and its spec JSON, or with a token its pending record.
    pub(super) jobs: Vec<(JobId, String)>,
}

/// The fewest jobs of a group that wait as pending records: below that, a hash per job
/// costs Redis little next to the call, and a single enqueue's job, often claimed or read
/// soon after, finds its hash in place.
const RECORDS_FROM: usize = 32;

impl Group {
    /// Whether the group's records go to Redis staged: written by a plain HSET before
    /// enqueue.lua runs, in the same MULTI, rather than handed to the script (fresh ids
    /// only, which cannot exist, so the HSET cannot overwrite anything).
    pub(super) fn staged(&self) -> bool {
        !self.token.is_empty() && self.settings.fresh
    }

    /// A group of one job, with a hash of its own (unless [`Self::as_records`]).
    pub(super) fn of(settings: Settings, id: JobId, json: String) -> Self {
        Group {
            settings,
            token: String::new(),
            jobs: vec![(id, json)],
        }
    }

    /// Turns a big group that starts now into pending records, `@TOKEN US spec` each,
    /// built here so that Redis stores each value as it comes (building them in Lua
    /// cost Redis a fifth of its time per job). The token is random, 64 bits; enqueue.lua
    /// writes each record whole should it be taken already.
    fn as_records(&mut self) {
        if self.jobs.len() < RECORDS_FROM || self.settings.not_before != 0 {
            return;
        }
        self.token = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let head = format!("@{}\u{1f}", self.token);
        for (_, json) in self.jobs.iter_mut() {
            json.insert_str(0, &head);
        }
    }
}

/// What the jobs of a group share.
#[derive(PartialEq)]
pub(super) struct Settings {
    pub(super) priority: &'static str,
    pub(super) max_attempts: u32,
    pub(super) not_before: u64,
    pub(super) fresh: bool,
    pub(super) charge: String,
    pub(super) group_cap: Option<u32>,
    /// Who enqueues them: named in their history and the store's.
    pub(super) actor: Arc<str>,
}

/// One validated spec for enqueue.lua: its group's settings, its id (given here when it
/// has none) and its JSON.
pub(super) fn encode(spec: &mut JobSpec, actor: &Arc<str>) -> Result<(Settings, JobId, String)> {
    let fresh = spec.id.is_none();
    let id = spec.id.get_or_insert_with(JobId::generate).clone();
    let json = serde_json::to_string(spec).expect("a JobSpec always serializes");
    if json.len() > crate::spec::MAX_SPEC_BYTES {
        return Err(crate::SpecError::new(
            "",
            format!(
                "the spec of job {id} is {} bytes of JSON, more than {}",
                json.len(),
                crate::spec::MAX_SPEC_BYTES
            ),
        )
        .into());
    }
    let settings = Settings {
        priority: spec.priority.as_str(),
        max_attempts: spec.max_attempts,
        not_before: spec.not_before.unwrap_or(0),
        fresh,
        charge: crate::admission::Charge::of(spec).encode(),
        group_cap: spec.group_max_running,
        actor: actor.clone(),
    };
    Ok((settings, id, json))
}
