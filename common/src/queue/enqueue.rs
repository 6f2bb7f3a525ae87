//! Enqueueing: one script call per batch, so a batch lands all-or-nothing.

use super::{scripts, RedisQueue};
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
}

impl RedisQueue {
    /// Enqueues validated specs atomically. Specs without an id get a generated one;
    /// ids that already exist are left unchanged and reported (enqueue is idempotent).
    pub async fn enqueue_batch(&self, specs: Vec<JobSpec>) -> Result<EnqueueReport> {
        for spec in &specs {
            spec.validate()?;
        }
        let mut invocation = scripts::ENQUEUE.prepare_invoke();
        invocation
            .key(self.keys.jobs())
            .arg(self.keys.prefix())
            .arg(specs.len());
        let mut ids = Vec::with_capacity(specs.len());
        for mut spec in specs {
            let id = spec.id.get_or_insert_with(JobId::generate).clone();
            let json = serde_json::to_string(&spec).expect("a JobSpec always serializes");
            invocation
                .arg(id.as_str())
                .arg(spec.priority.as_str())
                .arg(json)
                .arg(spec.max_attempts)
                .arg(spec.not_before.unwrap_or(0));
            ids.push(id);
        }
        let mut conn = self.conn().await?;
        let reply: Vec<redis::Value> = invocation.invoke_async(&mut conn).await?;
        let created: usize = reply
            .first()
            .map(redis::from_redis_value_ref)
            .transpose()?
            .unwrap_or(0);
        let existing = reply[1..]
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
        })
    }
}
