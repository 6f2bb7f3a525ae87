//! Enqueueing: one script call per batch, so a batch lands all-or-nothing.

use super::prepared::{encode, Group, Prepared, Resume};
use super::{scripts, RedisQueue};
use crate::preemption::Preemption;
use crate::{JobId, JobSpec, Result};
use serde::Serialize;
use std::sync::Arc;

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
        self.submit(Prepared::new(specs, &actor.into())?).await
    }

    /// Enqueues any number of specs as atomic chunks of at most `chunk` (up to
    /// [`MAX_ATOMIC_BATCH`]), in order: each chunk lands all-or-nothing, and the next is
    /// validated and encoded while Redis runs the one before. Stops at the first chunk
    /// that fails; the answer says what landed before it. To pick up after such a
    /// failure, see [`Self::enqueue_resumable_as`].
    pub async fn enqueue_chunked_as(&self, specs: Vec<JobSpec>, actor: &str, chunk: usize) -> ChunkedEnqueue {
        self.chunked(specs, actor, chunk, None).await
    }

    /// [`Self::enqueue_chunked_as`] of a batch that can be picked up where it stopped:
    /// Redis records which of the batch's jobs have landed under `key` (for
    /// [`RESUMABLE_FOR`]), and the same call again reports those as existing and adds
    /// only the rest. Its jobs get generated ids (fresh, so no chunk has to look for
    /// them first), unless a spec names its own. Two runs of one batch at once cannot
    /// both add a chunk: the one behind stops with [`crate::Error::BatchRace`].
    pub async fn enqueue_resumable_as(
        &self,
        specs: Vec<JobSpec>,
        actor: &str,
        chunk: usize,
        key: &BatchKey,
    ) -> ChunkedEnqueue {
        self.chunked(specs, actor, chunk, Some(key)).await
    }

    async fn chunked(
        &self,
        specs: Vec<JobSpec>,
        actor: &str,
        chunk: usize,
        key: Option<&BatchKey>,
    ) -> ChunkedEnqueue {
        let chunk = chunk.clamp(1, MAX_ATOMIC_BATCH);
        let actor: Arc<str> = actor.into();
        let mut landed = ChunkedEnqueue {
            report: EnqueueReport {
                ids: Vec::with_capacity(specs.len()),
                created: 0,
                existing: Vec::new(),
                enqueued_at: 0,
            },
            chunks: specs.len().div_ceil(chunk),
            chunks_landed: 0,
            failure: None,
        };
        let record = key.map(|k| self.keys.resume(k.as_str()));
        // What earlier runs of the batch landed is skipped.
        let mut at = 0;
        if let Some(record) = &record {
            match self.resumed(record, specs.len()).await {
                Ok(done) => {
                    at = done.len();
                    landed.chunks_landed = at.div_ceil(chunk);
                    landed.chunks = landed.chunks_landed + (specs.len() - at).div_ceil(chunk);
                    landed.report.existing = done.clone();
                    landed.report.ids = done;
                }
                Err(e) => {
                    landed.failure = Some(e);
                    return landed;
                }
            }
        }
        let mut in_flight: Option<tokio::task::JoinHandle<Result<EnqueueReport>>> = None;
        let mut specs = specs.into_iter().skip(at).peekable();
        while specs.peek().is_some() {
            let next: Vec<JobSpec> = specs.by_ref().take(chunk).collect();
            let n = next.len();
            let prepared = Prepared::new(next, &actor).map(|mut p| {
                p.resume = record.clone().map(|record| Resume { record, at });
                p
            });
            at += n;
            if let Some(previous) = in_flight.take() {
                if !landed.take(previous.await) {
                    return landed;
                }
            }
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    landed.failure = Some(e);
                    return landed;
                }
            };
            let queue = self.clone();
            in_flight = Some(tokio::spawn(async move { queue.submit(prepared).await }));
        }
        if let Some(last) = in_flight {
            landed.take(last.await);
        }
        landed
    }

    /// The ids of a resumable batch's landed jobs, in order, from its `record`.
    async fn resumed(&self, record: &str, batch: usize) -> Result<Vec<JobId>> {
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(record)
            .query_async(&mut self.conn().await?)
            .await?;
        let Some(n) = fields.get("n") else {
            return Ok(Vec::new());
        };
        let corrupt =
            |why: &str| crate::Error::Corrupt(format!("the resumable batch record {record}: {why}"));
        let n: usize = n.parse().map_err(|_| corrupt("its count is not a number"))?;
        let mut chunks: Vec<(usize, &String)> = fields
            .iter()
            .filter(|(k, _)| k.as_str() != "n")
            .map(|(k, v)| {
                Ok((
                    k.parse()
                        .map_err(|_| corrupt("a chunk's position is not a number"))?,
                    v,
                ))
            })
            .collect::<Result<_>>()?;
        chunks.sort_unstable_by_key(|(at, _)| *at);
        let mut ids = Vec::with_capacity(n);
        for (at, chunk) in chunks {
            if at != ids.len() {
                return Err(corrupt("its chunks leave a gap"));
            }
            for id in chunk.split(' ') {
                ids.push(
                    id.parse()
                        .map_err(|_| corrupt("it holds an id that is not one"))?,
                );
            }
        }
        if ids.len() != n || n > batch {
            return Err(corrupt(&format!(
                "it counts {n} jobs and holds {} ids, for a batch of {batch}",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// Enqueues one prepared batch: checks it for admission and runs enqueue.lua.
    async fn submit(&self, prepared: Prepared) -> Result<EnqueueReport> {
        let Prepared {
            specs,
            groups,
            ids,
            resume,
        } = prepared;
        // A job that could never be admitted is refused here, not left waiting forever.
        // The check uses the configuration this process read last; the script refuses
        // the write if Redis holds another one by then, and the jobs are checked again
        // against that (one round trip per enqueue while the configuration stands still).
        // A refusal is only ever given from a configuration read for it.
        let mut tries = 0;
        let (reply, created) = loop {
            let (seen, just_read) = self.admission_seen().await?;
            let checked = specs.iter().try_for_each(|spec| admissible(&seen, spec));
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
            let (reply, acked) = self
                .run_enqueue(groups.iter(), &seen.digest, resume.as_ref())
                .await?;
            let code = answer_code(&reply)?;
            if code == RESUME_RACE {
                let landed = reply
                    .get(1)
                    .map(redis::from_redis_value_ref)
                    .transpose()?
                    .unwrap_or(0);
                return Err(crate::Error::BatchRace { landed });
            }
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
            return Err(self.outbox_full(&reply)?);
        }
        let (enqueued_at, existing) = parse_created(&reply)?;
        Ok(EnqueueReport {
            ids,
            created: created as usize,
            existing,
            enqueued_at,
        })
    }

    /// Independent single enqueues in one script call: what a busy API does with the
    /// requests that arrive together (a group commit). Each job is validated and checked
    /// for admission on its own, and a refusal answers its own request only; the others
    /// land together, atomically, each as its own group with its own actor. The answer
    /// has one report or refusal per job, in order. An `Err` is a fault of the whole call
    /// (Redis is gone or timed out, say): then nothing is known of any job (the call may
    /// have been written). At most [`MAX_ATOMIC_BATCH`] jobs. Client-chosen ids twice in
    /// one call: the later ones wait for the earlier and go on their own, so that each
    /// answer says which job it created.
    pub async fn enqueue_each(&self, jobs: Vec<(JobSpec, String)>) -> Result<Vec<Result<EnqueueReport>>> {
        if jobs.len() > MAX_ATOMIC_BATCH {
            return Err(crate::Error::InvalidInput(format!(
                "{} enqueues are more than the {MAX_ATOMIC_BATCH} one script call takes",
                jobs.len()
            )));
        }
        let mut answers: Vec<Option<Result<EnqueueReport>>> = jobs.iter().map(|_| None).collect();
        let mut pending: Vec<(usize, JobSpec, Group)> = Vec::with_capacity(jobs.len());
        let mut later: Vec<(usize, JobSpec, String)> = Vec::new();
        let mut chosen = std::collections::HashSet::new();
        for (i, (mut spec, actor)) in jobs.into_iter().enumerate() {
            if let Some(id) = &spec.id {
                if !chosen.insert(id.clone()) {
                    later.push((i, spec, actor));
                    continue;
                }
            }
            let encoded = spec
                .validate()
                .map_err(Into::into)
                .and_then(|_| encode(&mut spec, &actor.into()));
            match encoded {
                Ok((settings, id, json)) => pending.push((i, spec, Group::of(settings, id, json))),
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        let mut tries = 0;
        while !pending.is_empty() {
            let (seen, just_read) = self.admission_seen().await?;
            // As in enqueue_batch_as: a refusal comes from a configuration read for it.
            let mut refusals = Vec::new();
            for (n, (_, spec, _)) in pending.iter().enumerate() {
                if let Err(refusal) = admissible(&seen, spec) {
                    refusals.push((n, refusal));
                }
            }
            if !refusals.is_empty() && !just_read && tries < MAX_STALE_TRIES {
                self.forget_admission();
                tries += 1;
                continue;
            }
            for (n, refusal) in refusals.into_iter().rev() {
                let (i, _, _) = pending.remove(n);
                answers[i] = Some(Err(refusal));
            }
            if pending.is_empty() {
                break;
            }
            let (reply, acked) = self
                .run_enqueue(pending.iter().map(|(_, _, g)| g), &seen.digest, None)
                .await?;
            let code = answer_code(&reply)?;
            if code == STALE_ADMISSION {
                self.forget_admission();
                tries += 1;
                if tries < MAX_STALE_TRIES {
                    continue;
                }
            }
            let wanted = self.replica_acks();
            let created = (code >= 0 && acked >= wanted)
                .then(|| parse_created(&reply))
                .transpose()?;
            for (i, _, g) in pending.drain(..) {
                let id = g.jobs[0].0.clone();
                answers[i] = Some(match &created {
                    Some((enqueued_at, existing)) => {
                        let existing: Vec<JobId> = existing.iter().filter(|e| **e == id).cloned().collect();
                        Ok(EnqueueReport {
                            created: usize::from(existing.is_empty()),
                            existing,
                            ids: vec![id],
                            enqueued_at: *enqueued_at,
                        })
                    }
                    None if code == STALE_ADMISSION => Err(crate::Error::Corrupt(format!(
                        "the admission configuration changed {tries} times during one enqueue; nothing was enqueued"
                    ))),
                    None if code < 0 => Err(self.outbox_full(&reply)?),
                    None => Err(crate::Error::Unreplicated {
                        acked,
                        wanted,
                        ids: vec![id],
                    }),
                });
            }
        }
        for (i, spec, actor) in later {
            answers[i] = Some(self.enqueue_batch_as(vec![spec], &actor).await);
        }
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every job has its answer"))
            .collect())
    }
}

/// How long an enqueue waits for its replicas' acknowledgement.
pub const REPLICA_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long Redis remembers what landed of a resumable batch: a run of the same batch
/// within this picks up where the last stopped; after it, the batch is new again.
pub const RESUMABLE_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Names a resumable batch ([`RedisQueue::enqueue_resumable_as`]): the same input from the
/// same actor, enqueued the same way, has the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey(String);

impl BatchKey {
    /// The key of `input` (the batch's text) from `actor`, enqueued with `options` (those
    /// that change its jobs, such as a group put on all of them).
    pub fn of(actor: &str, options: &str, input: &[u8]) -> Self {
        let mut named = Vec::with_capacity(actor.len() + options.len() + input.len() + 2);
        for part in [actor.as_bytes(), b"\0", options.as_bytes(), b"\0", input] {
            named.extend_from_slice(part);
        }
        BatchKey(
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &named)
                .simple()
                .to_string(),
        )
    }

    /// The key as Redis holds it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// enqueue.lua's answer when a resumable batch's chunk does not start where its landed
/// jobs end.
const RESUME_RACE: i64 = -3;

/// enqueue.lua's answer when the admission configuration is not the one the jobs were
/// checked against.
const STALE_ADMISSION: i64 = -2;
/// How many times an enqueue checks again after the configuration changed under it.
const MAX_STALE_TRIES: u32 = 10;

/// What [`RedisQueue::enqueue_chunked_as`] did.
#[derive(Debug)]
pub struct ChunkedEnqueue {
    /// The chunks that landed, together.
    pub report: EnqueueReport,
    /// How many chunks the specs made.
    pub chunks: usize,
    /// How many landed, in order from the first.
    pub chunks_landed: usize,
    /// Why the chunk after those failed (`None` when all landed). Nothing after it was
    /// sent.
    pub failure: Option<crate::Error>,
}

impl ChunkedEnqueue {
    /// Adds a chunk's answer; false when it failed.
    fn take(&mut self, answer: std::result::Result<Result<EnqueueReport>, tokio::task::JoinError>) -> bool {
        let answer = answer.unwrap_or_else(|e| {
            Err(crate::Error::Corrupt(format!(
                "an enqueue task ended without an answer: {e}"
            )))
        });
        match answer {
            Ok(r) => {
                self.report.ids.extend(r.ids);
                self.report.created += r.created;
                self.report.existing.extend(r.existing);
                self.report.enqueued_at = self.report.enqueued_at.max(r.enqueued_at);
                self.chunks_landed += 1;
                true
            }
            Err(e) => {
                self.failure = Some(e);
                false
            }
        }
    }
}

/// Whether `spec` could ever be admitted under the configuration `seen` (none: always).
fn admissible(seen: &super::quota::AdmissionSeen, spec: &JobSpec) -> Result<()> {
    if let Some(config) = &seen.config {
        config.check_admissible(spec)?;
    }
    Preemption::check_opt_out(seen.config.as_ref().map(|c| &c.preemption), spec)
}

/// enqueue.lua's answer code: the number created, or `-1` (outbox full) or `-2` (stale
/// admission configuration).
fn answer_code(reply: &[redis::Value]) -> Result<i64> {
    Ok(reply
        .first()
        .map(redis::from_redis_value_ref::<i64>)
        .transpose()?
        .unwrap_or(0))
}

/// enqueue.lua's answer past its code: when the new jobs were enqueued, and the ids that
/// already existed.
fn parse_created(reply: &[redis::Value]) -> Result<(u64, Vec<JobId>)> {
    let enqueued_at = reply
        .get(1)
        .map(redis::from_redis_value_ref::<u64>)
        .transpose()?
        .unwrap_or(0);
    let existing = reply[2.min(reply.len())..]
        .iter()
        .map(|v| {
            redis::from_redis_value_ref::<String>(v).map(|s| s.parse().expect("ids in Redis were validated"))
        })
        .collect::<Result<Vec<JobId>, _>>()?;
    Ok((enqueued_at, existing))
}

impl RedisQueue {
    /// The refusal enqueue.lua gave (`{ -1, backlog }`) as an error.
    fn outbox_full(&self, reply: &[redis::Value]) -> Result<crate::Error> {
        let backlog = reply
            .get(1)
            .map(redis::from_redis_value_ref)
            .transpose()?
            .unwrap_or(0);
        Ok(crate::Error::OutboxFull {
            backlog,
            limit: self.outbox_limit,
        })
    }

    /// Runs enqueue.lua once over `groups`, checked against the admission configuration
    /// with `digest`. Returns its reply and how many replicas acknowledged it.
    async fn run_enqueue<'a>(
        &self,
        groups: impl ExactSizeIterator<Item = &'a Group> + Clone,
        digest: &str,
        resume: Option<&Resume>,
    ) -> Result<(Vec<redis::Value>, u32)> {
        let staged = groups.clone().any(Group::staged);
        // A staged group's records go first, in a MULTI with the script, which is sent
        // whole (EVAL): a script the server lacks cannot fail there after the records.
        let mut script = if staged {
            let mut c = redis::cmd("EVAL");
            c.arg(scripts::ENQUEUE_SOURCE);
            c
        } else {
            let mut c = redis::cmd("EVALSHA");
            c.arg(scripts::ENQUEUE.get_hash());
            c
        };
        script
            .arg(if resume.is_some() { 2 } else { 1 })
            .arg(self.keys.jobs());
        if let Some(r) = resume {
            script.arg(&r.record);
        }
        script
            .arg(self.keys.prefix())
            .arg(self.outbox_limit)
            .arg(digest)
            .arg(resume.map(|r| r.at.to_string()).unwrap_or_default())
            .arg(RESUMABLE_FOR.as_secs())
            .arg(groups.len());
        let mut records = redis::cmd("HSET");
        records.arg(self.keys.pending());
        for group in groups.clone() {
            let Group {
                settings: g,
                token,
                jobs,
            } = group;
            let its_records_staged = group.staged();
            let fresh = match (its_records_staged, g.fresh) {
                (true, _) => "s",
                (false, true) => "1",
                (false, false) => "0",
            };
            script
                .arg(g.priority)
                .arg(g.max_attempts)
                .arg(g.not_before)
                .arg(fresh)
                .arg(&g.charge)
                .arg(g.group_cap.map(|c| c.to_string()).unwrap_or_default())
                .arg(&*g.actor)
                .arg(token)
                .arg(jobs.len());
            for (id, json) in jobs {
                script.arg(id.as_str());
                if its_records_staged {
                    records.arg(id.as_str()).arg(json.as_str());
                } else {
                    script.arg(json.as_str());
                }
            }
        }
        // Behind Sentinel, the write and its WAIT go together on a connection of their
        // own: WAIT blocks the connection it is sent on, and covers only the writes made
        // on it (one pipeline, so a reconnect cannot come between them).
        let wanted = self.replica_acks();
        let mut pipe = redis::pipe();
        if staged {
            pipe.cmd("MULTI").ignore().add_command(records).ignore();
            pipe.add_command(script).ignore().cmd("EXEC");
        } else {
            pipe.add_command(script);
        }
        if wanted > 0 {
            pipe.cmd("WAIT")
                .arg(wanted)
                .arg(REPLICA_ACK_TIMEOUT.as_millis() as u64);
        }
        let mut conn = if wanted == 0 {
            self.conn().await?
        } else {
            self.durable_conn().await?
        };
        // A server that lacks the script (a restarted or new primary) gets it loaded, and
        // the call again: once, rather than its 30 KB every time.
        let answers: Vec<redis::Value> = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                scripts::ENQUEUE.load_async(&mut conn).await?;
                pipe.query_async(&mut conn).await?
            }
            sent => sent?,
        };
        let mut answers = answers.into_iter();
        let reply = match answers.next() {
            // EXEC's answer: the HSET's, then the script's.
            Some(redis::Value::Array(exec)) if staged => match exec.into_iter().nth(1) {
                // The script failed part-way (Redis does not undo a script): the records
                // stay, as the jobs it queued need theirs; one it did not queue is known
                // to no one (its id is fresh).
                Some(redis::Value::ServerError(e)) => return Err(redis::RedisError::from(e).into()),
                reply => reply,
            },
            reply => reply,
        };
        let reply = redis::from_redis_value::<Vec<redis::Value>>(reply.unwrap_or(redis::Value::Nil))?;
        let acked = match answers.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => 0,
        };
        Ok((reply, acked))
    }
}
