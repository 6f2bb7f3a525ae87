//! The queue side of preemption (`lua/preempt.lua`, `lua/watch.lua`): start the
//! preemptions the configuration calls for, tell workers what to do with the jobs they
//! run, and record the checkpoints that bound what a preemption loses.

use super::{scripts, RedisQueue};
use crate::preemption::{Directive, Started};
use crate::{Error, JobId, Result};

/// The reason a worker gives when it hands back a victim it stopped (see
/// `lua/release.lua`): the attempt is not counted and the history names the preemptor.
pub const PREEMPTED: &str = "preempted";

impl RedisQueue {
    /// One preemption pass over every configured pool: for the most urgent job its quota
    /// admits but the pool's free capacity does not, chooses victims, reserves the pool
    /// for it and flags them, atomically. `scheduler serve` calls it every interval.
    pub async fn preempt(&self) -> Result<Vec<Started>> {
        let mut conn = self.conn().await?;
        let reply: Vec<String> = scripts::PREEMPT
            .arg(self.keys.prefix())
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        let mut rest = reply.as_slice();
        let bad = || Error::Corrupt(format!("preempt script answered {reply:?}"));
        while let [pool, preemptor, n, tail @ ..] = rest {
            let n: usize = n.parse().map_err(|_| bad())?;
            if tail.len() < n {
                return Err(bad());
            }
            let parse = |s: &String| s.parse::<JobId>().map_err(|_| bad());
            out.push(Started {
                pool: pool.clone(),
                preemptor: parse(preemptor)?,
                victims: tail[..n].iter().map(parse).collect::<Result<_>>()?,
            });
            rest = &tail[n..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(out)
    }

    /// What to do with each of these running jobs (with each one's own preemption grace
    /// from its spec, if any): go on, stop for a cancel, or stop as a preemption victim.
    /// A victim flag whose preemptor no longer holds the reservation is cleared here.
    pub async fn watch(&self, jobs: &[(JobId, Option<u64>)]) -> Result<Vec<Directive>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::WATCH.prepare_invoke();
        inv.arg(self.keys.prefix());
        for (id, _) in jobs {
            inv.arg(id.as_str());
        }
        let mut conn = self.conn().await?;
        let reply: Vec<String> = inv.invoke_async(&mut conn).await?;
        if reply.len() != jobs.len() {
            return Err(Error::Corrupt(format!(
                "watch script answered {} values for {} jobs",
                reply.len(),
                jobs.len()
            )));
        }
        Ok(reply
            .iter()
            .zip(jobs)
            .map(|(r, (_, grace))| Directive::from_script(r, *grace))
            .collect())
    }

    /// Records that the job just wrote a checkpoint (its progress line said so), at
    /// Redis's time: a preemption then loses only the GPU time since.
    pub async fn checkpointed(&self, id: &JobId) -> Result<()> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end \
                 local t = redis.call('TIME') \
                 redis.call('HSET', KEYS[1], 'checkpoint_at', t[1] * 1000 + math.floor(t[2] / 1000)) \
                 return 1",
            )
        });
        let mut conn = self.conn().await?;
        let _: i64 = SCRIPT.key(self.keys.job(id)).invoke_async(&mut conn).await?;
        Ok(())
    }
}

/// Preemptions so far, as `release.lua` counts them per pool, victim priority and reason.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreemptionCount {
    /// The pool.
    pub pool: String,
    /// The victims' priority (`p1`, `p2`).
    pub victim_priority: String,
    /// `priority` or `reclaim`.
    pub reason: String,
    /// Victims handed back.
    pub victims: u64,
    /// GPU milliseconds they lost (since their last checkpoint, or their start).
    pub lost_gpu_ms: u64,
}

impl RedisQueue {
    /// The preemption counters (monotonic; exported by `scheduler serve`).
    pub async fn preemption_counts(&self) -> Result<Vec<PreemptionCount>> {
        use redis::AsyncCommands;
        let mut conn = self.conn().await?;
        let flat: std::collections::HashMap<String, u64> = conn
            .hgetall(format!("{}:preemption_stats", self.keys.prefix()))
            .await?;
        let mut by: std::collections::BTreeMap<(String, String, String), PreemptionCount> =
            Default::default();
        for (field, v) in flat {
            let mut parts = field.splitn(4, '|');
            let (Some(kind), Some(pool), Some(pri), Some(reason)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let key = (pool.to_string(), pri.to_string(), reason.to_string());
            let c = by.entry(key).or_insert_with(|| PreemptionCount {
                pool: pool.into(),
                victim_priority: pri.into(),
                reason: reason.into(),
                ..PreemptionCount::default()
            });
            match kind {
                "n" => c.victims = v,
                "lost" => c.lost_gpu_ms = v,
                _ => {}
            }
        }
        Ok(by.into_values().collect())
    }
}
