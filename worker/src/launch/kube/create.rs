//! Creating, adopting and deleting an attempt's Job.
//!
//! Creation is idempotent by name: the name is a function of the job id and the attempt,
//! so a redelivered attempt that finds its Job (409) adopts it instead of starting a
//! second copy. Deletion is foreground: the Job disappears only after its pods have, so
//! "deleted" means the training has stopped.

use super::names::{self, annotations, keys};
use super::outcome::{self, CreateFailure, JobView};
use super::Attempt;
use crate::launch::LaunchResult;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::ResourceExt;
use std::time::Duration;

/// How creating the Job ended.
#[derive(Debug)]
pub(crate) enum Created {
    /// The Job exists (created now, or adopted): follow it.
    Ready,
    /// `stop` fired while waiting for quota.
    Stopped,
    /// The attempt ends here.
    Failed(LaunchResult),
}

/// What is behind a 409 on create.
enum Existing {
    /// This attempt's Job, alive: adopt it.
    Ours,
    /// Gone since (finished and collected): create again.
    Gone,
    /// Being deleted (a previous stop whose wait ran out): wait, then create again.
    Deleting(Option<String>),
}

impl Attempt<'_> {
    /// The newest still-active Job of an earlier attempt of this job, if any.
    ///
    /// When a worker dies, the queue counts the lost attempt, so the attempt redelivered
    /// to the next worker has a higher number than the Job the dead worker left running.
    /// Adopting that Job, instead of starting a second copy, keeps one training run per
    /// job. A Job that has finished is not adopted: its result belonged to the lost attempt.
    pub(crate) async fn older_active_job(&self) -> Result<Option<String>, LaunchResult> {
        let job = self.ctx.job;
        if job.attempt <= 1 {
            return Ok(None);
        }
        // A Job of an earlier attempt that is being deleted still has its pod: wait for
        // it to go before starting this attempt's, so two pods of one job never run.
        let older = loop {
            let older = self.older_jobs().await?;
            let Some(old) = older.iter().find(|j| j.metadata.deletion_timestamp.is_some()) else {
                break older;
            };
            let name = old.name_any();
            self.note(format!("waiting for Job {name} of an earlier attempt to be gone"))
                .await;
            tokio::select! {
                _ = self.ctx.stop.cancelled() => return Ok(None),
                _ = self.wait_gone(&name, old.metadata.uid.clone(), Duration::ZERO) => {}
            }
        };
        let older = older
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none() && outcome::view_job(j) == JobView::Active)
            .filter_map(|j| {
                let attempt: u32 = j.labels().get(keys::ATTEMPT)?.parse().ok()?;
                (attempt < job.attempt).then(|| (attempt, j.name_any()))
            })
            .max();
        Ok(older.map(|(_, name)| name))
    }

    /// The Jobs of earlier attempts of this job.
    async fn older_jobs(&self) -> Result<Vec<Job>, LaunchResult> {
        let job = self.ctx.job;
        let selector = format!("{}={}", keys::JOB_ID, names::job_id_label(&job.id));
        let list = self
            .jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| LaunchResult::Error(format!("cannot look for earlier Jobs of this job: {e}")))?;
        Ok(list
            .items
            .into_iter()
            .filter(|j| j.annotations().get(annotations::JOB_ID).map(String::as_str) == Some(job.id.as_str()))
            .filter(|j| {
                j.labels()
                    .get(keys::ATTEMPT)
                    .and_then(|a| a.parse::<u32>().ok())
                    .is_some_and(|a| a < job.attempt)
            })
            .collect())
    }

    /// Creates the Job, waiting out quota refusals until the start deadline, and adopts
    /// this attempt's Job if it already exists.
    pub(crate) async fn create(&mut self, job: &Job) -> Created {
        let name = job.name_any();
        let delay = self.config.create_retry;
        loop {
            let err = match self.jobs.create(&PostParams::default(), job).await {
                Ok(_) => return Created::Ready,
                Err(e) => e,
            };
            match outcome::create_failure(&err) {
                CreateFailure::Exists => match self.existing(&name).await {
                    Ok(Existing::Ours) => {
                        self.note(format!("adopting the existing Job {name}")).await;
                        return Created::Ready;
                    }
                    Ok(Existing::Gone) => {}
                    Ok(Existing::Deleting(uid)) => {
                        self.wait_gone(&name, uid, Duration::ZERO).await;
                    }
                    Err(result) => return Created::Failed(result),
                },
                CreateFailure::Quota(why) => {
                    // The queue admitted this job by its own quotas, so something else
                    // holds the namespace's: hand the job back to the head of its queue,
                    // uncounted, after a pause (so a full namespace is not hammered), and
                    // free the slot instead of holding it until the start deadline.
                    self.note(format!(
                        "the namespace's quota refused the Job; handing the job back: {why}"
                    ))
                    .await;
                    tokio::select! {
                        _ = self.ctx.stop.cancelled() => return Created::Stopped,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    return Created::Failed(LaunchResult::Requeue(format!(
                        "the namespace's ResourceQuota refused the Job: {why}"
                    )));
                }
                CreateFailure::Invalid(why) => return Created::Failed(LaunchResult::Invalid(why)),
                CreateFailure::Other(why) => return Created::Failed(LaunchResult::Error(why)),
            }
        }
    }

    async fn existing(&self, name: &str) -> Result<Existing, LaunchResult> {
        let found = self
            .jobs
            .get_opt(name)
            .await
            .map_err(|e| LaunchResult::Error(format!("cannot read the existing Job {name}: {e}")))?;
        let Some(job) = found else {
            return Ok(Existing::Gone);
        };
        let owner = job.annotations().get(annotations::JOB_ID);
        if owner.map(String::as_str) != Some(self.ctx.job.id.as_str()) {
            return Err(LaunchResult::Error(format!(
                "a Job named {name} exists but belongs to job {}",
                owner.map(String::as_str).unwrap_or("(none)")
            )));
        }
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Existing::Deleting(job.metadata.uid));
        }
        Ok(Existing::Ours)
    }

    /// Deletes the Job with foreground propagation and waits (within `delete_wait`) until
    /// it is gone, which is after its pods are. Returns whether it is known to be gone.
    pub(crate) async fn delete(&self, name: &str) -> bool {
        self.delete_with_grace(name, None).await
    }

    /// Deletes the Job as [`delete`](Self::delete) does; with `grace`, its pods get that
    /// long between SIGTERM and SIGKILL (`gracePeriodSeconds`, a preemption victim's time
    /// to checkpoint), and the wait for it to be gone is that much longer.
    pub(crate) async fn delete_with_grace(&self, name: &str, grace: Option<Duration>) -> bool {
        let mut params = DeleteParams::foreground();
        if let Some(g) = grace {
            params = params.grace_period(u32::try_from(g.as_secs()).unwrap_or(u32::MAX));
        }
        match self.jobs.delete(name, &params).await {
            Ok(deleted) => {
                let uid = deleted.either(|job| job.metadata.uid, |status| status.details.map(|d| d.uid));
                self.wait_gone(name, uid, grace.unwrap_or_default()).await
            }
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => {
                tracing::warn!(job = name, error = %e, "cannot delete the Job");
                false
            }
        }
    }

    async fn wait_gone(&self, name: &str, uid: Option<String>, grace: Duration) -> bool {
        let wait = async {
            match uid.as_deref() {
                // A Job recreated under the same name meanwhile has another uid.
                Some(uid) => await_condition(self.jobs.clone(), name, conditions::is_deleted(uid)).await,
                None => await_condition(self.jobs.clone(), name, |j: Option<&Job>| j.is_none()).await,
            }
        };
        match tokio::time::timeout(self.config.delete_wait + grace, wait).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(job = name, error = %e, "cannot watch the Job's deletion");
                false
            }
            Err(_) => {
                tracing::warn!(job = name, wait = ?self.config.delete_wait, "the Job is still being deleted");
                false
            }
        }
    }
}
