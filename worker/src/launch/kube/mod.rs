//! Runs each attempt as a batch/v1 Job in a Kubernetes namespace (`worker --launcher kube`).
//!
//! One attempt is one Job, named from the job id and the attempt number
//! (`gpuq-<id prefix>-<hash>-a<attempt>`, see `names.rs`), with one pod that runs once:
//! retries belong to the queue. The launcher:
//!
//! 1. adopts a still-running Job of an earlier attempt of the same job, left by a worker
//!    that died or lost its lease (the queue counted that attempt, so the number went
//!    up), after waiting for any such Job that is being deleted to be gone;
//! 2. otherwise creates the Job; if it exists already (409), this attempt was redelivered
//!    and the Job is adopted; a quota refusal (403 "exceeded quota") hands the job back
//!    to the head of its queue without counting the attempt (the queue's own admission
//!    admitted it, so someone else holds the namespace's quota);
//! 3. follows the Job and its pod with watchers, streaming the pod's log into the job's
//!    output, until the Job ends;
//! 4. maps the end to a [`LaunchResult`] (see `outcome.rs`).
//!
//! | what happens                                  | result                                     |
//! |-----------------------------------------------|--------------------------------------------|
//! | Job `Complete`                                | `Exited(0)`                                |
//! | Job `Failed`, container exit code N           | `Exited(N)`, reason as a last output line  |
//! | Job `Failed`, `DeadlineExceeded`              | `Killed("DeadlineExceeded: ...")`          |
//! | image missing or invalid, image wants root, program not found, Job refused (422) | `Invalid(..)` (a Job stuck on its image is deleted) |
//! | create refused by a ResourceQuota (403)       | `Requeue(..)` after `create_retry`: handed back uncounted, the slot freed |
//! | unschedulable pod, image registry trouble     | keep waiting, up to `start_timeout`, then `Error(..)`, Job deleted |
//! | pod preempted, evicted, node lost             | Job deleted and created again within the same attempt (not counted), at most `max_replacements` times |
//! | `stop` (cancel, timeout, worker shutdown)     | Job deleted (foreground, waited for), `Killed("deleted")` |
//! | `stop` of a preemption victim                 | the same, with `gracePeriodSeconds` = the preemption grace |
//! | `stop` with `detach` (lease lost, or the worker fenced itself) | Job left running for the next attempt to adopt |
//! | API unreachable, RBAC refusal                 | `Error(..)`                                |
//!
//! The launcher does not return while a Job it started may still run, except when the
//! API does not answer its delete. If the worker is SIGKILLed, its Jobs keep running:
//! the queue redelivers the job after the heartbeat expires, and the next worker adopts
//! the running Job (step 1), so no second copy starts and no pod is left unaccounted for.
//! Finished Jobs stay for `ttlSecondsAfterFinished`, then Kubernetes removes them.
//!
//! Needs Kubernetes 1.27 or newer: pods are found by the `batch.kubernetes.io/job-name`
//! label, and disruptions are read from the `DisruptionTarget` pod condition.

mod config;
mod create;
mod logs;
mod names;
mod outcome;
mod spec;
mod watch;

#[cfg(test)]
mod tests;

pub use config::{CheckpointVolume, KubeArgs, KubeConfig};

use super::{AttemptContext, BoxFuture, LaunchResult, Launcher};
use create::Created;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::time::Instant;
use watch::End;

/// Runs attempts as Kubernetes Jobs.
#[derive(Clone)]
pub struct KubeLauncher {
    client: Client,
    config: KubeConfig,
}

impl std::fmt::Debug for KubeLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLauncher")
            .field("config", &self.config)
            .finish()
    }
}

impl KubeLauncher {
    /// A launcher that talks to the cluster through `client`.
    pub fn new(client: Client, config: KubeConfig) -> Self {
        KubeLauncher { client, config }
    }

    /// A launcher for the cluster the worker runs in (its service account), or the one of
    /// the current kubeconfig context when run elsewhere.
    pub async fn connect(config: KubeConfig) -> Result<Self, kube::Error> {
        Ok(Self::new(Client::try_default().await?, config))
    }

    /// Its settings.
    pub fn config(&self) -> &KubeConfig {
        &self.config
    }

    async fn run_attempt(&self, ctx: AttemptContext<'_>) -> LaunchResult {
        let name = names::job_name(&ctx.job.id, ctx.job.attempt);
        let job = match spec::build_job(&ctx, &name, &self.config) {
            Ok(job) => job,
            Err(why) => return LaunchResult::Invalid(why),
        };
        let mut att = Attempt {
            ctx,
            config: &self.config,
            jobs: Api::namespaced(self.client.clone(), &self.config.namespace),
            pods: Api::namespaced(self.client.clone(), &self.config.namespace),
            start_deadline: Some(Instant::now() + self.config.start_timeout),
            last_wait: None,
        };
        let mut adopted = match att.older_active_job().await {
            Ok(older) => older,
            Err(result) => return result,
        };
        let mut replacements = 0;
        loop {
            let following = match adopted.take() {
                Some(older) => {
                    att.note(format!(
                        "adopting Job {older}, left running by an earlier attempt"
                    ))
                    .await;
                    older
                }
                // After a replacement, `stop` may have fired during the deletion.
                None if att.ctx.stop.is_cancelled() => return att.stop(&name).await,
                None => match att.create(&job).await {
                    Created::Ready => name.clone(),
                    Created::Stopped => return att.stop(&name).await,
                    Created::Failed(result) => return result,
                },
            };
            match watch::follow(&mut att, &following).await {
                End::Finished(verdict) => {
                    if let Some(note) = verdict.note {
                        att.note(note).await;
                    }
                    return verdict.result;
                }
                End::Stopped => return att.stop(&following).await,
                End::Abandon(result) => {
                    att.delete(&following).await;
                    return result;
                }
                End::Disrupted(why) => {
                    replacements += 1;
                    if let Some(result) = att.replace(&following, &why, replacements).await {
                        return result;
                    }
                }
            }
        }
    }
}

impl Launcher for KubeLauncher {
    fn name(&self) -> &'static str {
        "kube"
    }

    fn adoptable(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: AttemptContext<'a>) -> BoxFuture<'a, LaunchResult> {
        Box::pin(self.run_attempt(ctx))
    }
}

/// One attempt in progress: what the create, watch and delete steps share.
pub(crate) struct Attempt<'a> {
    ctx: AttemptContext<'a>,
    config: &'a KubeConfig,
    jobs: Api<Job>,
    pods: Api<Pod>,
    /// Until the container starts, the attempt may wait for capacity until this instant.
    start_deadline: Option<Instant>,
    /// What the attempt is waiting for, last said.
    last_wait: Option<String>,
}

impl Attempt<'_> {
    /// A line in the job's output, from gpuq rather than from the job.
    async fn note(&self, line: String) {
        tracing::info!(job_id = %self.ctx.job.id, "{line}");
        let _ = self.ctx.output.send(format!("gpuq: {line}")).await;
    }

    /// Says what the attempt waits for, once per change.
    async fn waiting(&mut self, why: String) {
        if self.last_wait.as_ref() != Some(&why) {
            self.note(why.clone()).await;
            self.last_wait = Some(why);
        }
    }

    fn start_timed_out(&self) -> LaunchResult {
        let limit = humantime::format_duration(self.config.start_timeout);
        let why = self
            .last_wait
            .as_deref()
            .unwrap_or("no pod was created (is a ResourceQuota full?)");
        LaunchResult::Error(format!(
            "the training container did not start within {limit}: {why}"
        ))
    }

    /// Deletes the Job after `stop` and reports how the attempt ended. When the worker
    /// lost (or is about to lose) the lease, the Job is left alone instead: the job's
    /// next attempt adopts it, so the training goes on and no second pod starts.
    async fn stop(&self, name: &str) -> LaunchResult {
        if self.ctx.detach.is_cancelled() {
            self.note(format!(
                "leaving Job {name} running for the job's next attempt to adopt (lease at stake)"
            ))
            .await;
            return LaunchResult::Killed(format!("detached from Job {name}"));
        }
        if self.delete_with_grace(name, self.ctx.preempt_grace()).await {
            LaunchResult::Killed("deleted".into())
        } else {
            tracing::error!(
                job = name,
                "the Job may still run: its deletion was not confirmed"
            );
            LaunchResult::Killed(format!("deletion of Job {name} requested, not confirmed"))
        }
    }

    /// Deletes a Job whose pod was disrupted so that it can be created again; `Some` when
    /// the attempt must end instead.
    async fn replace(&mut self, name: &str, why: &str, replacements: u32) -> Option<LaunchResult> {
        let limit = self.config.max_replacements;
        if replacements > limit {
            self.delete(name).await;
            return Some(LaunchResult::Error(format!(
                "disrupted {replacements} times (limit {limit}), last: {why}"
            )));
        }
        self.note(format!(
            "{why}; starting it again (this does not count as an attempt)"
        ))
        .await;
        if !self.delete(name).await {
            return Some(LaunchResult::Error(format!(
                "cannot start the disrupted Job {name} again: its deletion was not confirmed"
            )));
        }
        self.start_deadline = Some(Instant::now() + self.config.start_timeout);
        self.last_wait = None;
        None
    }
}
