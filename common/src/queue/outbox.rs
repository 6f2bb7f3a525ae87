//! The outbox: every transition, as written by the scripts, until the job store has it,
//! and the entries the store refused.

use super::{scripts, RedisQueue};
use crate::{Error, JobId, JobState, Priority, Result};
use std::collections::HashMap;

/// One transition read from the outbox stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The transition's unique id, which keys its history row in the store: its stream
    /// entry's id (`ms-seq`), or `ms-seq#k` for the k-th job (from 0) of an enqueue
    /// entry that names many. Entry ids are the order of transitions.
    pub event_id: String,
    /// Milliseconds part of the entry id.
    pub ms: u64,
    /// Sequence part of the entry id.
    pub seq: u64,
    /// The stream entry that carries it (`ms-seq`): what is acknowledged.
    pub entry: String,
    /// How many transitions that entry carries: the jobs an enqueue entry names, else 1.
    pub entry_jobs: u32,
    /// The job.
    pub job: JobId,
    /// State before (absent for the enqueue).
    pub from: Option<JobState>,
    /// State after.
    pub to: JobState,
    /// When (ms since epoch).
    pub at: u64,
    /// Attempt number then.
    pub attempt: u32,
    /// Worker involved.
    pub worker: Option<String>,
    /// Why.
    pub detail: Option<String>,
    /// Spec JSON (entries written before enqueue stopped carrying it; the drainer reads
    /// the spec from the job hash otherwise).
    pub spec: Option<String>,
    /// Priority (older enqueue entries; the spec has it too).
    pub priority: Option<Priority>,
    /// New attempt limit (on enqueue and operator retry).
    pub limit: Option<u32>,
    /// Exit code (on the end of a failed attempt).
    pub code: Option<i32>,
    /// GPU milliseconds a preempted attempt lost since its last checkpoint (on the
    /// hand-back of a preemption victim only).
    pub lost_gpu_ms: Option<u64>,
}

impl OutboxEvent {
    /// The transitions of one stream entry: one, or one per job an enqueue entry names
    /// (`jobs`, ids separated by spaces; see lua/enqueue.lua), in that order.
    pub(crate) fn parse_entry(entry: String, mut f: HashMap<String, String>) -> Result<Vec<Self>> {
        let Some(jobs) = f.remove("jobs") else {
            return Ok(vec![Self::parse(entry, f)?]);
        };
        let ids: Vec<&str> = jobs.split(' ').filter(|id| !id.is_empty()).collect();
        let n = ids.len() as u32;
        ids.into_iter()
            .enumerate()
            .map(|(k, id)| {
                let mut fields = f.clone();
                fields.insert("job".into(), id.to_string());
                let mut e = Self::parse(format!("{entry}#{k}"), fields)?;
                e.entry.clone_from(&entry);
                e.entry_jobs = n;
                Ok(e)
            })
            .collect()
    }

    /// One transition, with its id (`ms-seq`, or `ms-seq#k` for one job of an enqueue
    /// entry; its entry is the part before `#`).
    pub(crate) fn parse(event_id: String, mut f: HashMap<String, String>) -> Result<Self> {
        let bad = |what: &str| Error::Corrupt(format!("outbox entry {event_id}: {what}"));
        let entry = event_id.split('#').next().unwrap_or_default().to_string();
        let (ms, seq) = entry
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| bad("id"))?;
        let mut take = |k: &str| f.remove(k).filter(|v| !v.is_empty());
        let job = take("job")
            .ok_or_else(|| bad("job"))?
            .parse()
            .map_err(|e: String| bad(&e))?;
        let to = take("to")
            .ok_or_else(|| bad("to"))?
            .parse()
            .map_err(|e: String| bad(&e))?;
        let from = take("from")
            .map(|s| s.parse())
            .transpose()
            .map_err(|e: String| bad(&e))?;
        let num = |v: Option<String>| v.and_then(|s| s.parse::<u64>().ok());
        // An enqueue names its actor as `by` (see lua/enqueue.lua).
        let enqueued_by = take("by")
            .filter(|b| !b.is_empty())
            .map(|b| format!("enqueued by {b}"));
        Ok(OutboxEvent {
            job,
            from,
            to,
            at: num(take("at")).ok_or_else(|| bad("at"))?,
            attempt: num(take("attempt")).unwrap_or(0) as u32,
            worker: take("worker"),
            detail: take("detail").or(enqueued_by),
            spec: take("spec"),
            priority: take("priority")
                .map(|s| s.parse())
                .transpose()
                .map_err(|e: String| bad(&e))?,
            limit: num(take("limit")).map(|v| v as u32),
            code: take("code").and_then(|c| c.parse().ok()),
            lost_gpu_ms: num(take("lost_ms")),
            event_id,
            ms,
            seq,
            entry,
            entry_jobs: 1,
        })
    }
}

/// A stream entry as Redis returns it: its id and its fields.
type StreamEntry = (String, HashMap<String, String>);

/// Adds to an ack.lua call the distinct entries of `events`, each with the transitions it
/// carries past the first.
fn push_entries(inv: &mut redis::ScriptInvocation<'_>, events: &[OutboxEvent]) {
    let mut seen = std::collections::HashSet::new();
    for e in events {
        if seen.insert(e.entry.as_str()) {
            inv.arg(e.entry.as_str()).arg(e.entry_jobs.saturating_sub(1));
        }
    }
}

/// Adds to `pipe` the move of entry `id` from stream `from` to the end of stream `to`,
/// with `fields` (in a stable order), as an XADD then an XDEL: callers make the pipe
/// atomic, so the entry is in exactly one of the two streams at any time.
fn move_entry(pipe: &mut redis::Pipeline, from: &str, id: &str, to: &str, fields: HashMap<String, String>) {
    let mut fields: Vec<(String, String)> = fields.into_iter().collect();
    fields.sort();
    pipe.cmd("XADD").arg(to).arg("*");
    for (k, v) in &fields {
        pipe.arg(k).arg(v);
    }
    pipe.ignore();
    pipe.cmd("XDEL").arg(from).arg(id).ignore();
}

/// An outbox entry the job store refused, set aside with its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEntry {
    /// The entry's id in `{ns}:outbox:dead`.
    pub dead_id: String,
    /// The transition, with its original outbox id (so replaying it keeps its order).
    pub event: OutboxEvent,
    /// What the store said.
    pub error: String,
}

/// Most entries one outbox read asks for: an enqueue entry can name 1,000 jobs, so reads
/// grow page by page rather than fetch many such entries to use one.
const OUTBOX_PAGE: usize = 128;

impl RedisQueue {
    /// The oldest transitions not yet acknowledged by the store: whole entries, until
    /// they hold at least `count` transitions (or the outbox ends). An enqueue entry
    /// carries many, so a read can hold up to one entry's worth (1,000) more.
    pub async fn read_outbox(&self, count: usize) -> Result<Vec<OutboxEvent>> {
        let key = self.keys.outbox();
        let mut conn = self.conn().await?;
        let mut events = Vec::new();
        let (mut entries, mut after) = (0usize, None::<String>);
        // The first page is one entry: its size says how many more the next may take.
        let mut page = 1;
        while events.len() < count {
            let start = after
                .as_ref()
                .map_or_else(|| "-".to_string(), |id| format!("({id}"));
            let got: Vec<StreamEntry> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(page)
                .query_async(&mut conn)
                .await?;
            let short = got.len() < page;
            for (id, fields) in got {
                after = Some(id.clone());
                entries += 1;
                events.extend(OutboxEvent::parse_entry(id, fields)?);
                if events.len() >= count {
                    break;
                }
            }
            if short {
                break;
            }
            let per_entry = events.len().div_ceil(entries).max(1);
            page = (count.saturating_sub(events.len()))
                .div_ceil(per_entry)
                .clamp(1, OUTBOX_PAGE);
        }
        Ok(events)
    }

    /// Removes the entries of transitions the store has committed (pass every
    /// transition of an entry: the entry goes as a whole).
    pub async fn ack_outbox(&self, events: &[OutboxEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut inv = scripts::ACK.prepare_invoke();
        inv.key(self.keys.outbox())
            .key(self.keys.outbox_batched())
            .key(self.keys.outbox_dead())
            .arg(0);
        push_entries(&mut inv, events);
        let _: usize = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Transitions waiting for the store: the outbox's entries, and the jobs past the
    /// first that its enqueue entries name.
    pub async fn outbox_len(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        let (entries, batched): (u64, Option<u64>) = redis::pipe()
            .cmd("XLEN")
            .arg(self.keys.outbox())
            .get(self.keys.outbox_batched())
            .query_async(&mut conn)
            .await?;
        Ok(entries + batched.unwrap_or(0))
    }

    /// The oldest `count` entries of a stream, as id and fields.
    async fn stream_head(&self, key: &str, count: usize) -> Result<Vec<StreamEntry>> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?)
    }

    async fn stream_len(&self, key: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("XLEN").arg(key).query_async(&mut conn).await?)
    }

    /// Time (ms) of the oldest undrained transition, if any.
    pub async fn outbox_oldest_ms(&self) -> Result<Option<u64>> {
        Ok(self.read_outbox(1).await?.first().map(|e| e.ms))
    }

    /// Moves transitions the store refused to `{ns}:outbox:dead`, each with its original
    /// id and the error, and takes their entries off the outbox, in one atomic step, so
    /// the drain goes on. One job of an enqueue entry is set aside on its own, as a
    /// one-job entry: pass the entry's other transitions only once the store has them.
    pub async fn set_aside_outbox(&self, refused: &[(OutboxEvent, String)]) -> Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut entries: Vec<&str> = refused.iter().map(|(e, _)| e.entry.as_str()).collect();
        entries.dedup();
        let raw: HashMap<String, HashMap<String, String>> = {
            let mut pipe = redis::pipe();
            for id in &entries {
                pipe.cmd("XRANGE").arg(self.keys.outbox()).arg(*id).arg(*id);
            }
            let per: Vec<Vec<StreamEntry>> = pipe.query_async(&mut conn).await?;
            per.into_iter().flatten().collect()
        };
        let mut inv = scripts::ACK.prepare_invoke();
        inv.key(self.keys.outbox())
            .key(self.keys.outbox_batched())
            .key(self.keys.outbox_dead());
        // Entries another drainer took off meanwhile are not set aside twice.
        let kept: Vec<&(OutboxEvent, String)> = refused
            .iter()
            .filter(|(e, _)| raw.contains_key(&e.entry))
            .collect();
        inv.arg(kept.len());
        for (e, why) in kept {
            let mut fields = raw[&e.entry].clone();
            if fields.remove("jobs").is_some() {
                fields.insert("job".into(), e.job.to_string());
            }
            fields.insert("origin".into(), e.event_id.clone());
            fields.insert("error".into(), why.clone());
            let mut fields: Vec<(String, String)> = fields.into_iter().collect();
            fields.sort();
            inv.arg(fields.len() * 2);
            for (k, v) in fields {
                inv.arg(k).arg(v);
            }
        }
        let events: Vec<OutboxEvent> = refused.iter().map(|(e, _)| e.clone()).collect();
        push_entries(&mut inv, &events);
        let _: usize = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// The entries the store refused, oldest first (at most `count`).
    pub async fn refused_entries(&self, count: usize) -> Result<Vec<RefusedEntry>> {
        self.stream_head(&self.keys.outbox_dead(), count)
            .await?
            .into_iter()
            .map(|(dead_id, mut fields)| {
                let origin = fields
                    .remove("origin")
                    .ok_or_else(|| Error::Corrupt(format!("refused entry {dead_id}: no origin")))?;
                let error = fields.remove("error").unwrap_or_default();
                Ok(RefusedEntry {
                    event: OutboxEvent::parse(origin, fields)?,
                    dead_id,
                    error,
                })
            })
            .collect()
    }

    /// Number of entries the store refused.
    pub async fn refused_len(&self) -> Result<u64> {
        self.stream_len(&self.keys.outbox_dead()).await
    }

    /// Removes refused entries once the store has taken them after all.
    pub async fn drop_refused(&self, dead_ids: &[&str]) -> Result<()> {
        if dead_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let _: usize = redis::cmd("XDEL")
            .arg(self.keys.outbox_dead())
            .arg(dead_ids)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Records a new error for a refused entry that was replayed and refused again.
    pub async fn update_refused(&self, entry: &RefusedEntry, error: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let fields: Vec<StreamEntry> = redis::cmd("XRANGE")
            .arg(self.keys.outbox_dead())
            .arg(&entry.dead_id)
            .arg(&entry.dead_id)
            .query_async(&mut conn)
            .await?;
        let Some((_, mut f)) = fields.into_iter().next() else {
            return Ok(());
        };
        f.insert("error".into(), error.to_string());
        let dead = self.keys.outbox_dead();
        let mut pipe = redis::pipe();
        pipe.atomic();
        move_entry(&mut pipe, &dead, &entry.dead_id, &dead, f);
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}
