//! Redis key names. This is the only place that knows them.
//!
//! Every key starts with the namespace in braces (`{gpuq}`): a Redis Cluster hash tag,
//! so all keys of one namespace live in one slot and the multi-key Lua scripts are valid
//! on a cluster. Several independent queues can share one Redis under different namespaces.
//!
//! | key                         | type   | holds                                              |
//! |-----------------------------|--------|----------------------------------------------------|
//! | `{ns}:queue:p0` .. `p2`     | list   | queued job ids of the default pool, head first     |
//! | `{ns}:queue:<p>:<pool>`     | list   | queued job ids of another pool                     |
//! | `{ns}:parked:<p>:<pool>`    | set    | parked lanes of a priority and pool, `team:group`  |
//! | `{ns}:parked:<p>:<pool>:<team>:<group>` | list | a parked lane: queued jobs held up |
//! |                             |        | by their team, group or pool (admission.lua)       |
//! | `{ns}:pools`                | set    | pools other than `default` that jobs named         |
//! | `{ns}:admission`            | string | pools, quotas and caps, as JSON (`quota apply`)    |
//! | `{ns}:usage`                | hash   | running jobs and GPUs per pool, team, group: the   |
//! |                             |        | sum of the leases' charges                         |
//! | `{ns}:groups`               | hash   | group -> most jobs it runs at once                 |
//! | `{ns}:devices:<pool>`       | hash   | worker -> GPUs it adds to the pool's capacity      |
//! | `{ns}:worker_pools`         | hash   | worker -> pools it advertised devices in           |
//! | `{ns}:reserve:<pool>`       | string | `job id|priority` holding the pool's reservation   |
//! | `{ns}:job:<id>`             | hash   | spec JSON, state, attempt, timestamps, outcome;    |
//! |                             |        | history as `h:<outbox entry id>` fields            |
//! | `{ns}:events:<id>`          | list   | history as earlier versions kept it (read only)    |
//! | `{ns}:log:<id>`             | list   | last lines of the job's output                     |
//! | `{ns}:jobs`                 | list   | every job id in enqueue order (oldest at the head) |
//! | `{ns}:delayed`              | zset   | jobs waiting out a retry backoff, scored by due ms |
//! | `{ns}:dead`                 | list   | dead-lettered job ids                              |
//! | `{ns}:inflight:<worker>`    | hash   | job id -> `seq:attempt:claim token|charge`: leases |
//! | `{ns}:claims`               | string | claim counter (orders leases for recovery)         |
//! | `{ns}:workers`              | set    | workers that may hold leases (for the reaper)      |
//! | `{ns}:worker:<worker>`      | string | heartbeat JSON, with a TTL                         |
//! | `{ns}:beats`                | hash   | worker -> ms it needs to heartbeat and stop what   |
//! |                             |        | it lost (sizes the hold after a Redis restart)     |
//! | `{ns}:epoch`                | hash   | Redis run id last seen, and the hold it started    |
//! | `{ns}:wake`                 | list   | at most one token that wakes an idle worker        |
//! | `{ns}:outbox`               | stream | every transition, until drained into the job store |
//! | `{ns}:outbox:batched`       | string | transitions past the first of enqueue entries      |
//! | `{ns}:outbox:dead`          | stream | entries the store refused, with the error          |
//! | `{ns}:retired`              | zset   | client-chosen ids retention removed, by end time   |
//! | `{ns}:identity`             | string | this namespace's identity, which the store records |
//! | `{ns}:finished`             | zset   | ended jobs by end time (ms), for retention         |

use crate::{Error, Priority, Result};
use std::fmt;

/// Key builder for one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys for `namespace` (letters, digits, `-`, `_`, `.`). The braces are added here.
    pub fn new(namespace: &str) -> Result<Self> {
        let ok = !namespace.is_empty()
            && namespace.len() <= 64
            && namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(Error::InvalidInput(format!(
                "namespace {namespace:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Keys {
            prefix: format!("{{{namespace}}}"),
        })
    }

    /// The hash-tagged prefix every key starts with; passed to the Lua scripts.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The list of queued job ids of one priority in the default pool.
    pub fn queue(&self, p: Priority) -> String {
        format!("{}:queue:{}", self.prefix, p.as_str())
    }

    /// The list of queued job ids of one priority and pool.
    pub fn queue_in(&self, p: Priority, pool: &str) -> String {
        if pool == crate::admission::DEFAULT_POOL {
            return self.queue(p);
        }
        format!("{}:queue:{}:{pool}", self.prefix, p.as_str())
    }

    /// The parked lanes of one priority and pool (members `team:group`).
    pub fn lanes(&self, p: Priority, pool: &str) -> String {
        format!("{}:parked:{}:{pool}", self.prefix, p.as_str())
    }

    /// One parked lane, named by its index's member (`team:group`).
    pub fn lane(&self, p: Priority, pool: &str, member: &str) -> String {
        format!("{}:parked:{}:{pool}:{member}", self.prefix, p.as_str())
    }

    /// Pools other than the default that jobs have named.
    pub fn pools(&self) -> String {
        format!("{}:pools", self.prefix)
    }

    /// A counter bumped whenever a setting kept in the job store changes (a token
    /// revoked, a budget set): processes that cache those settings drop their copies
    /// when it moves.
    pub fn settings_epoch(&self) -> String {
        format!("{}:settings", self.prefix)
    }

    /// A web dashboard session, by the SHA-256 of its cookie (see `queue/sessions.rs`).
    pub fn ui_session(&self, hash: &str) -> String {
        format!("{}:ui:session:{hash}", self.prefix)
    }

    /// The admission configuration (JSON).
    pub fn admission(&self) -> String {
        format!("{}:admission", self.prefix)
    }

    /// Usage counters: the sum of the leases' charges.
    pub fn usage(&self) -> String {
        format!("{}:usage", self.prefix)
    }

    /// Group caps on running jobs.
    pub fn groups(&self) -> String {
        format!("{}:groups", self.prefix)
    }

    /// Per worker, the devices it adds to a pool's capacity.
    pub fn devices(&self, pool: &str) -> String {
        format!("{}:devices:{pool}", self.prefix)
    }

    /// Per worker, the pools it advertised devices in.
    pub fn worker_pools(&self) -> String {
        format!("{}:worker_pools", self.prefix)
    }

    /// The job holding a pool's reservation.
    pub fn reserve(&self, pool: &str) -> String {
        format!("{}:reserve:{pool}", self.prefix)
    }

    /// A job's record.
    pub fn job(&self, id: impl fmt::Display) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    /// The pending records of queued jobs a batch enqueued, by id (`lua/lib.lua`): such
    /// a job has no hash of its own until a script first changes it.
    pub fn pending(&self) -> String {
        format!("{}:pending", self.prefix)
    }

    /// The heads that pending records share, by token, and how many records use each
    /// (`TOKEN#`).
    pub fn pending_heads(&self) -> String {
        format!("{}:pending:heads", self.prefix)
    }

    /// A job's transition history.
    pub fn events(&self, id: impl fmt::Display) -> String {
        format!("{}:events:{id}", self.prefix)
    }

    /// The tail of a job's output.
    pub fn log(&self, id: impl fmt::Display) -> String {
        format!("{}:log:{id}", self.prefix)
    }

    /// Index of all jobs, in enqueue order.
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// Jobs waiting out a retry backoff.
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.prefix)
    }

    /// The dead-letter list.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// A worker's in-flight jobs (its leases).
    pub fn inflight(&self, w: impl fmt::Display) -> String {
        format!("{}:inflight:{w}", self.prefix)
    }

    /// Workers that may hold leases.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// A worker's heartbeat.
    pub fn heartbeat(&self, w: impl fmt::Display) -> String {
        format!("{}:worker:{w}", self.prefix)
    }

    /// Stream of transitions waiting to be written to the job store.
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.prefix)
    }

    /// Transitions the outbox holds past the first of each enqueue entry that names many
    /// jobs: the outbox's length in transitions is its XLEN plus this.
    pub fn outbox_batched(&self) -> String {
        format!("{}:outbox:batched", self.prefix)
    }

    /// Ended jobs scored by end time, for retention.
    pub fn finished(&self) -> String {
        format!("{}:finished", self.prefix)
    }

    /// Per worker, the ms it needs to heartbeat and stop what it lost.
    pub fn beats(&self) -> String {
        format!("{}:beats", self.prefix)
    }

    /// The Redis run id last seen and the hold after a restart.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// Outbox entries the job store refused.
    pub fn outbox_dead(&self) -> String {
        format!("{}:outbox:dead", self.prefix)
    }

    /// What has landed of a resumable batch (enqueue.lua), under its [`BatchKey`]'s text.
    ///
    /// [`BatchKey`]: super::BatchKey
    pub fn resume(&self, key: &str) -> String {
        format!("{}:resume:{key}", self.prefix)
    }

    /// Client-chosen ids of jobs retention removed while the store keeps them.
    pub fn retired(&self) -> String {
        format!("{}:retired", self.prefix)
    }

    /// The identity of this queue (namespace on its Redis), recorded by the job store.
    pub fn identity(&self) -> String {
        format!("{}:identity", self.prefix)
    }

    /// Wake-up token list for idle workers.
    pub fn wake(&self) -> String {
        format!("{}:wake", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobId, WorkerId};

    #[test]
    fn every_key_carries_the_hash_tag() {
        let k = Keys::new("gpuq").unwrap();
        let id: JobId = "j1".parse().unwrap();
        let w = WorkerId::from_raw("w1");
        let all = [
            k.queue(Priority::Urgent),
            k.job(&id),
            k.events(&id),
            k.log(&id),
            k.jobs(),
            k.delayed(),
            k.dead(),
            k.inflight(&w),
            k.workers(),
            k.heartbeat(&w),
            k.wake(),
            k.outbox(),
            k.outbox_batched(),
            k.finished(),
            k.beats(),
            k.epoch(),
            k.outbox_dead(),
            k.retired(),
            k.identity(),
            k.queue_in(Priority::Normal, "a100"),
            k.lanes(Priority::Normal, "a100"),
            k.lane(Priority::Normal, "a100", "vision:"),
            k.pools(),
            k.admission(),
            k.usage(),
            k.groups(),
            k.devices("a100"),
            k.worker_pools(),
            k.reserve("a100"),
        ];
        for key in all {
            assert!(key.starts_with("{gpuq}:"), "{key}");
        }
    }

    #[test]
    fn rejects_namespaces_that_would_break_the_tag() {
        assert!(Keys::new("a}b").is_err());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("team-a.prod").is_ok());
    }
}
