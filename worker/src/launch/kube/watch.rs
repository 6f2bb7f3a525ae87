//! Follows one Job and its pod to the end with two watchers, one on the Job (by name, a
//! field selector) and one on its pods (by the `batch.kubernetes.io/job-name` label).
//! Nothing polls: the loop wakes on a watch event, on `stop`, or on the start deadline.

use super::logs::Followers;
use super::names::keys;
use super::outcome::{self, JobView, PodView, Verdict};
use super::Attempt;
use crate::launch::LaunchResult;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use tokio::time::Instant;

/// Consecutive watch errors (each after the watcher's backoff) before the attempt gives up.
const MAX_WATCH_ERRORS: u32 = 10;

/// How following a Job ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The Job reached its end (or can never start); it is left to its TTL.
    Finished(Verdict),
    /// `stop` fired.
    Stopped,
    /// The pod was preempted, evicted or lost its node: replace the Job.
    Disrupted(String),
    /// Give up on the Job: delete it, then return this.
    Abandon(LaunchResult),
}

/// An event of either watcher (boxed: Job and Pod objects are large).
enum Event {
    Job(Box<watcher::Result<watcher::Event<Job>>>),
    Pod(Box<watcher::Result<watcher::Event<Pod>>>),
}

/// Follows the Job `name` until one of the [`End`]s.
pub(crate) async fn follow(att: &mut Attempt<'_>, name: &str) -> End {
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let by_job = watcher::Config::default().labels(&format!("{}={name}", keys::POD_JOB_NAME));
    let jobs = watcher(att.jobs.clone(), by_name)
        .default_backoff()
        .map(|e| Event::Job(Box::new(e)));
    let pods = watcher(att.pods.clone(), by_job)
        .default_backoff()
        .map(|e| Event::Pod(Box::new(e)));
    let mut events = Box::pin(futures::stream::select(jobs, pods));
    let mut follow = Follow {
        name,
        followers: Followers::new(att.pods.clone(), att.ctx.output.clone()),
        job_listed: false,
        errors: 0,
    };
    let end = loop {
        tokio::select! {
            _ = att.ctx.stop.cancelled() => break End::Stopped,
            _ = until(att.start_deadline) => break End::Abandon(att.start_timed_out()),
            event = events.next() => {
                // The watchers retry forever; an ended stream is a bug, not a state.
                let Some(event) = event else {
                    break End::Abandon(LaunchResult::Error(format!("the watch of Job {name} ended")));
                };
                if let Some(end) = follow.step(att, event).await {
                    break end;
                }
            }
        }
    };
    drop(events);
    match &end {
        End::Finished(_) => follow.followers.drain(att.config.log_drain).await,
        _ => follow.followers.stop().await,
    }
    end
}

pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct Follow<'n> {
    name: &'n str,
    followers: Followers,
    /// Whether the current (re)list of the Job watcher has returned the Job.
    job_listed: bool,
    errors: u32,
}

impl Follow<'_> {
    async fn step(&mut self, att: &mut Attempt<'_>, event: Event) -> Option<End> {
        let result = match event {
            Event::Job(e) => match *e {
                Ok(e) => self.on_job(att, e).await,
                Err(e) => return self.on_error(e),
            },
            Event::Pod(e) => match *e {
                Ok(e) => self.on_pod(att, e).await,
                Err(e) => return self.on_error(e),
            },
        };
        self.errors = 0;
        result
    }

    fn on_error(&mut self, e: watcher::Error) -> Option<End> {
        self.errors += 1;
        tracing::warn!(job = self.name, error = %e, errors = self.errors, "watch error");
        (self.errors >= MAX_WATCH_ERRORS).then(|| {
            End::Abandon(LaunchResult::Error(format!(
                "lost the watch of Job {}: {e}",
                self.name
            )))
        })
    }

    async fn on_job(&mut self, att: &mut Attempt<'_>, event: watcher::Event<Job>) -> Option<End> {
        match event {
            watcher::Event::Init => {
                self.job_listed = false;
                None
            }
            watcher::Event::InitApply(job) | watcher::Event::Apply(job) => {
                self.job_listed = true;
                self.on_job_state(att, &job).await
            }
            watcher::Event::InitDone if self.job_listed => None,
            watcher::Event::InitDone | watcher::Event::Delete(_) => Some(End::Finished(Verdict {
                result: LaunchResult::Killed(format!("Job {} was deleted outside gpuq", self.name)),
                note: None,
            })),
        }
    }

    async fn on_job_state(&mut self, att: &mut Attempt<'_>, job: &Job) -> Option<End> {
        if job.metadata.deletion_timestamp.is_some() {
            return Some(End::Abandon(LaunchResult::Killed(format!(
                "Job {} was deleted outside gpuq",
                self.name
            ))));
        }
        let view = outcome::view_job(job);
        if view == JobView::Active {
            return None;
        }
        // The pod watcher may lag behind the Job's: read the pods' final state, and make
        // sure the log of a pod that ran in between is shipped.
        let pods = self.current_pods(att).await;
        for (name, pod) in &pods {
            if matches!(pod, PodView::Running | PodView::Terminated(_)) {
                self.followers.follow(name);
            }
        }
        let JobView::Failed { reason, message } = view else {
            return Some(End::Finished(Verdict {
                result: LaunchResult::Exited(0),
                note: None,
            }));
        };
        let views: Vec<PodView> = pods.into_iter().map(|(_, v)| v).collect();
        Some(match outcome::failed_job(&reason, &message, &views) {
            Ok(verdict) => End::Finished(verdict),
            Err(disruption) => End::Disrupted(disruption),
        })
    }

    async fn current_pods(&self, att: &Attempt<'_>) -> Vec<(String, PodView)> {
        let params = ListParams::default().labels(&format!("{}={}", keys::POD_JOB_NAME, self.name));
        match att.pods.list(&params).await {
            Ok(list) => list
                .items
                .iter()
                .map(|p| (p.name_any(), outcome::view_pod(p)))
                .collect(),
            Err(e) => {
                tracing::warn!(job = self.name, error = %e, "cannot list the Job's pods");
                Vec::new()
            }
        }
    }

    async fn on_pod(&mut self, att: &mut Attempt<'_>, event: watcher::Event<Pod>) -> Option<End> {
        let pod = match event {
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => pod,
            watcher::Event::Init | watcher::Event::InitDone | watcher::Event::Delete(_) => return None,
        };
        let name = pod.name_any();
        match outcome::view_pod(&pod) {
            PodView::Pending { unschedulable: None } | PodView::Starting | PodView::Failed(_) => None,
            PodView::Pending {
                unschedulable: Some(why),
            } => {
                att.waiting(format!(
                    "waiting for capacity: pod {name} is unschedulable: {why}"
                ))
                .await;
                None
            }
            PodView::PullTrouble(why) => {
                att.waiting(format!("waiting for the image of pod {name}: {why}"))
                    .await;
                None
            }
            PodView::Running | PodView::Terminated(_) => {
                att.start_deadline = None;
                self.followers.follow(&name);
                None
            }
            PodView::Broken(why) => Some(End::Abandon(LaunchResult::Invalid(format!(
                "pod {name} cannot run: {why}"
            )))),
            PodView::Disrupted(why) => Some(End::Disrupted(format!("pod {name}: {why}"))),
        }
    }
}
