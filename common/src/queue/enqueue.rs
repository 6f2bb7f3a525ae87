//! Enqueueing: one script call per batch, so a batch lands all-or-nothing.

use super::{scripts, RedisQueue};
use crate::preemption::Preemption;
use crate::{JobId, JobSpec, Result};
use serde::Serialize;

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnqueueReport {
    /// The ids of all jobs in the request, in order (generated where the spec had none).
    pub ids: Vec<JobId>,
    /// How many were new.
    pub created: usize,
    /// Ids that already existed and were left unchanged.
    pub existing: Vec<JobId>,
    /// When the new jobs were enqueued (ms, Redis time); 0 when none was.
    #[serde(skip)]
    pub enqueued_at: u64,
}

/// Most jobs one atomic enqueue takes. Redis runs one script at a time, so a script must
/// stay short (the bound is 100 ms, see the README: heartbeats wait behind it); a batch of
/// 5,000 took 40-80 ms on the 2-core benchmark machine. Larger batches go in atomic chunks
/// (`scheduler batch --chunked`).
pub const MAX_ATOMIC_BATCH: usize = 5_000;

impl RedisQueue {
    /// Enqueues validated specs atomically. Specs without an id get a generated one;
    /// ids that already exist are left unchanged and reported (enqueue is idempotent).
    /// At most [`MAX_ATOMIC_BATCH`] specs.
    pub async fn enqueue_batch(&self, specs: Vec<JobSpec>) -> Result<EnqueueReport> {
        self.enqueue_batch_as(specs, "").await
    }

    /// [`Self::enqueue_batch`], naming `actor` (a token's name, `operator`) as who
    /// enqueued the jobs, in their history and the store's; empty for nobody.
    pub async fn enqueue_batch_as(&self, specs: Vec<JobSpec>, actor: &str) -> Result<EnqueueReport> {
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
        let mut specs = specs;
        for spec in specs.iter_mut() {
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
            let (priority, max_attempts, not_before) = (
                spec.priority.as_str(),
                spec.max_attempts,
                spec.not_before.unwrap_or(0),
            );
            let charge = crate::admission::Charge::of(spec).encode();
            let group_cap = spec.group_max_running;
            match groups.last_mut() {
                Some(g)
                    if (g.priority, g.max_attempts, g.not_before, g.fresh, g.group_cap)
                        == (priority, max_attempts, not_before, fresh, group_cap)
                        && g.charge == charge =>
                {
                    g.jobs.push((id.clone(), json))
                }
                _ => groups.push(Group {
                    priority,
                    max_attempts,
                    not_before,
                    fresh,
                    charge,
                    group_cap,
                    jobs: vec![(id.clone(), json)],
                }),
            }
            ids.push(id);
        }
        // A job that could never be admitted is refused here, not left waiting forever.
        // The check uses the configuration this process read last; the script refuses
        // the write if Redis holds another one by then, and the jobs are checked again
        // against that (one round trip per enqueue while the configuration stands still).
        // A refusal is only ever given from a configuration read for it.
        let mut tries = 0;
        let (reply, created) = loop {
            let (seen, just_read) = self.admission_seen().await?;
            let checked = specs.iter().try_for_each(|spec| {
                if let Some(config) = &seen.config {
                    config.check_admissible(spec)?;
                }
                Preemption::check_opt_out(seen.config.as_ref().map(|c| &c.preemption), spec)
            });
            if let Err(refusal) = checked {
                // A refusal is rare and final, so it comes from the configuration of
                // the moment: a copy read earlier is read again first.
                if just_read || tries >= MAX_STALE_TRIES {
                    return Err(refusal);
                }
                self.forget_admission();
                tries += 1;
                continue;
            }
            let (reply, acked) = self.run_enqueue(&groups, &seen.digest, actor).await?;
            let code = reply
                .first()
                .map(redis::from_redis_value_ref::<i64>)
                .transpose()?
                .unwrap_or(0);
            if code == STALE_ADMISSION {
                self.forget_admission();
                tries += 1;
                if tries >= MAX_STALE_TRIES {
                    return Err(crate::Error::Corrupt(format!(
                        "the admission configuration changed {tries} times during one enqueue; nothing was enqueued"
                    )));
                }
                continue;
            }
            let wanted = self.replica_acks();
            if code >= 0 && acked < wanted {
                return Err(crate::Error::Unreplicated { acked, wanted, ids });
            }
            break (reply, code);
        };
        if created < 0 {
            let backlog = reply
                .get(1)
                .map(redis::from_redis_value_ref)
                .transpose()?
                .unwrap_or(0);
            return Err(crate::Error::OutboxFull {
                backlog,
                limit: self.outbox_limit,
            });
        }
        let created = created as usize;
        let enqueued_at = reply
            .get(1)
            .map(redis::from_redis_value_ref::<u64>)
            .transpose()?
            .unwrap_or(0);
        let existing = reply[2.min(reply.len())..]
            .iter()
            .map(|v| {
                redis::from_redis_value_ref::<String>(v)
                    .map(|s| s.parse().expect("ids in Redis were validated"))
            })
            .collect::<Result<Vec<JobId>, _>>()?;
        Ok(EnqueueReport {
            ids,
            created,
            existing,
            enqueued_at,
        })
    }
}

/// How long an enqueue waits for its replicas' acknowledgement.
pub const REPLICA_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Gives every spec without an id one derived from the whole batch's text and the spec's
/// place in it, so that enqueueing the same input again, in chunks, after a failure part-way,
/// finds the jobs already enqueued (idempotent) and adds only the rest: nothing is skipped or
/// enqueued twice. Ids are UUIDv5 (name-based).
pub fn assign_batch_ids(input: &[u8], specs: &mut [JobSpec]) {
    let batch = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, input);
    for (i, spec) in specs.iter_mut().enumerate() {
        if spec.id.is_none() {
            let id = uuid::Uuid::new_v5(&batch, i.to_string().as_bytes()).to_string();
            spec.id = Some(id.parse().expect("a UUID is a valid job id"));
        }
    }
}

/// enqueue.lua's answer when the admission configuration is not the one the jobs were
/// checked against.
const STALE_ADMISSION: i64 = -2;
/// How many times an enqueue checks again after the configuration changed under it.
const MAX_STALE_TRIES: u32 = 10;

/// Jobs of a batch that share their settings, in batch order (see lua/enqueue.lua): a
/// typical batch is one group, with two values per job.
struct Group {
    priority: &'static str,
    max_attempts: u32,
    not_before: u64,
    fresh: bool,
    charge: String,
    group_cap: Option<u32>,
    jobs: Vec<(JobId, String)>,
}

impl RedisQueue {
    /// Runs enqueue.lua once over `groups`, checked against the admission configuration
    /// with `digest`. Returns its reply and how many replicas acknowledged it.
    async fn run_enqueue(
        &self,
        groups: &[Group],
        digest: &str,
        actor: &str,
    ) -> Result<(Vec<redis::Value>, u32)> {
        let mut invocation = scripts::ENQUEUE.prepare_invoke();
        invocation
            .key(self.keys.jobs())
            .arg(self.keys.prefix())
            .arg(self.outbox_limit)
            .arg(digest)
            .arg(groups.len());
        for g in groups {
            invocation
                .arg(g.priority)
                .arg(g.max_attempts)
                .arg(g.not_before)
                .arg(if g.fresh { "1" } else { "0" })
                .arg(&g.charge)
                .arg(g.group_cap.map(|c| c.to_string()).unwrap_or_default())
                .arg(actor)
                .arg(g.jobs.len());
            for (id, json) in &g.jobs {
                invocation.arg(id.as_str()).arg(json.as_str());
            }
        }
        // Behind Sentinel, the write and its WAIT go together on a connection of their
        // own: WAIT blocks the connection it is sent on, and covers only the writes made
        // on it (one pipeline, so a reconnect cannot come between them).
        let wanted = self.replica_acks();
        Ok(if wanted == 0 {
            let mut conn = self.conn().await?;
            (invocation.invoke_async(&mut conn).await?, 0)
        } else {
            let mut conn = self.durable_conn().await?;
            let mut pipe = redis::pipe();
            pipe.invoke_script(&invocation)
                .cmd("WAIT")
                .arg(wanted)
                .arg(REPLICA_ACK_TIMEOUT.as_millis() as u64);
            // A pipeline does not load a script the server lacks (a new primary has none):
            // load it then and send again, rather than send its 30 KB every time.
            match pipe.query_async(&mut conn).await {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    scripts::ENQUEUE.load_async(&mut conn).await?;
                    pipe.query_async(&mut conn).await?
                }
                sent => sent?,
            }
        })
    }
}
