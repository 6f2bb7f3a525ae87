//! Reads Job and pod status and API errors, and says what they mean for the attempt.
//! Pure functions: the watch loop feeds them objects and acts on the answers.

use super::spec::CONTAINER;
use crate::launch::LaunchResult;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What a pod says about the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodView {
    /// Not on a node yet; with the scheduler's message when no node has room for it.
    Pending { unschedulable: Option<String> },
    /// On a node, the container not started yet (pulling the image, creating it).
    Starting,
    /// The image cannot be pulled for a reason that may pass (registry down, rate limit);
    /// the kubelet keeps trying.
    PullTrouble(String),
    /// The container runs: its log can be followed.
    Running,
    /// The container ended by itself.
    Terminated(Termination),
    /// The pod failed with no container result (e.g. its own deadline).
    Failed(String),
    /// The pod cannot run, and no retry will change that (missing or invalid image, an
    /// image that wants root, a program that does not exist).
    Broken(String),
    /// Preempted, evicted, or lost with its node: not the job's fault.
    Disrupted(String),
}

/// How the training container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Termination {
    pub(crate) exit_code: i32,
    pub(crate) reason: Option<String>,
    pub(crate) message: Option<String>,
}

impl Termination {
    /// One line for the job's output, e.g. `exited with code 137 (OOMKilled)`.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("exited with code {}", self.exit_code);
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(&format!(" ({r})"));
        }
        if let Some(m) = self.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {m}"));
        }
        s
    }
}

/// Pod status reasons of disruptions that predate (or bypass) the `DisruptionTarget`
/// condition. `OutOf<resource>` and `UnexpectedAdmissionError` are a node refusing a pod
/// the scheduler placed on it (a race for devices), which is also not the job's fault.
const DISRUPTION_REASONS: &[&str] = &[
    "Evicted",
    "Preempted",
    "NodeLost",
    "NodeShutdown",
    "Shutdown",
    "Terminated",
    "UnexpectedAdmissionError",
    "NodeAffinity",
];

/// Waiting reasons of a container that will never start.
const BROKEN_WAITING: &[&str] = &["InvalidImageName", "CreateContainerConfigError"];
/// Terminated reasons of a container whose program could not be started at all.
const START_FAILURES: &[&str] = &["StartError", "ContainerCannotRun"];
/// Pull error messages that may pass by themselves.
const TRANSIENT_PULL: &[&str] = &[
    "timeout",
    "deadline exceeded",
    "i/o timeout",
    "connection refused",
    "connection reset",
    "toomanyrequests",
    "too many requests",
    "429",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
    "tls handshake",
    "no such host",
    "temporary failure",
];

pub(crate) fn view_pod(pod: &Pod) -> PodView {
    let Some(status) = &pod.status else {
        return PodView::Pending { unschedulable: None };
    };
    let condition = |t: &str| status.conditions.iter().flatten().find(|c| c.type_ == t);
    // A pod that succeeded has done its work, whatever happens to its node afterwards.
    if status.phase.as_deref() == Some("Succeeded") {
        return trainer_status(pod)
            .and_then(view_container)
            .unwrap_or(PodView::Terminated(Termination {
                exit_code: 0,
                reason: None,
                message: None,
            }));
    }
    if let Some(c) = condition("DisruptionTarget").filter(|c| c.status == "True") {
        return PodView::Disrupted(join(c.reason.as_deref(), c.message.as_deref()));
    }
    let reason = status.reason.as_deref().unwrap_or("");
    if DISRUPTION_REASONS.contains(&reason) || reason.starts_with("OutOf") {
        return PodView::Disrupted(join(Some(reason), status.message.as_deref()));
    }
    if let Some(view) = trainer_status(pod).and_then(view_container) {
        return view;
    }
    if status.phase.as_deref() == Some("Failed") {
        return PodView::Failed(join(Some(reason), status.message.as_deref()));
    }
    match condition("PodScheduled") {
        Some(c) if c.status == "True" => PodView::Starting,
        Some(c) if c.reason.as_deref() == Some("Unschedulable") => PodView::Pending {
            unschedulable: Some(c.message.clone().unwrap_or_else(|| "Unschedulable".into())),
        },
        _ => PodView::Pending { unschedulable: None },
    }
}

fn trainer_status(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|s| s.name == CONTAINER)
        .or_else(|| statuses.first())
}

fn view_container(s: &ContainerStatus) -> Option<PodView> {
    let state = s.state.as_ref()?;
    if let Some(t) = &state.terminated {
        let reason = t.reason.as_deref().unwrap_or("");
        if START_FAILURES.contains(&reason) {
            return Some(PodView::Broken(join(Some(reason), t.message.as_deref())));
        }
        return Some(PodView::Terminated(Termination {
            exit_code: t.exit_code,
            reason: t.reason.clone(),
            message: t.message.clone(),
        }));
    }
    if state.running.is_some() {
        return Some(PodView::Running);
    }
    let w = state.waiting.as_ref()?;
    let reason = w.reason.as_deref().unwrap_or("");
    let what = join(Some(reason), w.message.as_deref());
    Some(match reason {
        r if BROKEN_WAITING.contains(&r) => PodView::Broken(what),
        "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" => {
            let message = w.message.as_deref().unwrap_or("").to_ascii_lowercase();
            if TRANSIENT_PULL.iter().any(|t| message.contains(t)) {
                PodView::PullTrouble(what)
            } else {
                PodView::Broken(what)
            }
        }
        _ => PodView::Starting,
    })
}

/// What a Job's conditions say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobView {
    Active,
    Complete,
    Failed { reason: String, message: String },
}

pub(crate) fn view_job(job: &Job) -> JobView {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return JobView::Complete,
            "Failed" => {
                return JobView::Failed {
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                }
            }
            _ => {}
        }
    }
    JobView::Active
}

/// What a failed Job means, given what its pods say now. `Err` is a disruption: the Job
/// is replaced within the same attempt.
pub(crate) fn failed_job(reason: &str, message: &str, pods: &[PodView]) -> Result<Verdict, String> {
    if let Some(why) = pods.iter().find_map(|p| match p {
        PodView::Disrupted(why) => Some(why.clone()),
        _ => None,
    }) {
        return Err(why);
    }
    if reason == "DeadlineExceeded" {
        return Ok(Verdict::new(LaunchResult::Killed(join(
            Some(reason),
            Some(message),
        ))));
    }
    for pod in pods {
        match pod {
            PodView::Terminated(t) if t.exit_code != 0 => {
                return Ok(Verdict {
                    result: LaunchResult::Exited(t.exit_code),
                    note: Some(format!("the training container {}", t.describe())),
                })
            }
            PodView::Broken(why) => return Ok(Verdict::new(LaunchResult::Invalid(why.clone()))),
            _ => {}
        }
    }
    Ok(Verdict::new(LaunchResult::Error(format!(
        "the Job failed: {}",
        join(Some(reason), Some(message))
    ))))
}

/// An attempt's result, with a last line for the job's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) result: LaunchResult,
    pub(crate) note: Option<String>,
}

impl Verdict {
    fn new(result: LaunchResult) -> Self {
        Verdict { result, note: None }
    }
}

/// Why creating the Job failed, and so what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CreateFailure {
    /// 409: a Job of that name exists (this attempt, redelivered): adopt it.
    Exists,
    /// 403 from a ResourceQuota: the job goes back to its queue, uncounted.
    Quota(String),
    /// 422 or 400: the Job itself is invalid; retrying will not help.
    Invalid(String),
    /// Anything else (RBAC, API down): fail the attempt so the queue retries it.
    Other(String),
}

pub(crate) fn create_failure(e: &kube::Error) -> CreateFailure {
    let kube::Error::Api(s) = e else {
        return CreateFailure::Other(e.to_string());
    };
    let message = format!("{} ({}): {}", s.code, s.reason, s.message);
    match s.code {
        409 => CreateFailure::Exists,
        403 if s.message.contains("exceeded quota") => CreateFailure::Quota(s.message.clone()),
        400 | 422 => CreateFailure::Invalid(format!("Kubernetes refused the Job: {message}")),
        _ => CreateFailure::Other(format!("cannot create the Job: {message}")),
    }
}

/// `reason: message`, or whichever of them exists.
fn join(reason: Option<&str>, message: Option<&str>) -> String {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let message = message.map(str::trim).filter(|m| !m.is_empty());
    match (reason, message) {
        (Some(r), Some(m)) => format!("{r}: {m}"),
        (Some(r), None) => r.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => "no reason given".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}]}))
    }

    fn terminated(code: i32, reason: &str) -> Pod {
        pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}}}]}))
    }

    #[test]
    fn pending_pods() {
        let p = pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}));
        assert_eq!(
            view_pod(&p),
            PodView::Pending {
                unschedulable: Some("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into())
            }
        );
        assert_eq!(
            view_pod(&pod(json!({"phase": "Pending"}))),
            PodView::Pending { unschedulable: None }
        );
        let scheduled =
            pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}));
        assert_eq!(view_pod(&scheduled), PodView::Starting);
        assert_eq!(view_pod(&waiting("ContainerCreating", "")), PodView::Starting);
    }

    #[test]
    fn image_errors_fail_fast_unless_they_may_pass() {
        for reason in ["ErrImagePull", "ImagePullBackOff"] {
            let p = waiting(
                reason,
                "manifest for ghcr.io/x/y:nope not found: manifest unknown",
            );
            assert!(matches!(view_pod(&p), PodView::Broken(m) if m.contains("manifest unknown")));
            let p = waiting(reason, "429 Too Many Requests - toomanyrequests: rate limit");
            assert!(matches!(view_pod(&p), PodView::PullTrouble(_)));
        }
        let p = waiting("InvalidImageName", "couldn't parse image name \"UPPER\"");
        assert!(matches!(view_pod(&p), PodView::Broken(m) if m.starts_with("InvalidImageName")));
        let p = waiting(
            "CreateContainerConfigError",
            "container has runAsNonRoot and image will run as root",
        );
        assert!(matches!(view_pod(&p), PodView::Broken(_)));
    }

    #[test]
    fn terminations() {
        let t = view_pod(&terminated(137, "OOMKilled"));
        let PodView::Terminated(t) = t else {
            panic!("{t:?}")
        };
        assert_eq!(t.describe(), "exited with code 137 (OOMKilled)");
        assert!(matches!(
            view_pod(&terminated(128, "StartError")),
            PodView::Broken(_)
        ));
        let failed = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded", "message": "too long"}));
        assert_eq!(
            view_pod(&failed),
            PodView::Failed("DeadlineExceeded: too long".into())
        );
    }

    #[test]
    fn disruptions() {
        let preempted = pod(
            json!({"phase": "Running", "conditions": [{"type": "DisruptionTarget",
            "status": "True", "reason": "PreemptionByScheduler", "message": "Preempted by gpuq/urgent"}]}),
        );
        assert_eq!(
            view_pod(&preempted),
            PodView::Disrupted("PreemptionByScheduler: Preempted by gpuq/urgent".into())
        );
        for reason in ["Evicted", "NodeLost", "OutOfnvidia.com/gpu"] {
            let p = pod(json!({"phase": "Failed", "reason": reason, "message": "m"}));
            assert!(matches!(view_pod(&p), PodView::Disrupted(_)), "{reason}");
        }
        // An evicted pod's container was killed too; the eviction is what counts.
        let mut p = terminated(137, "Error");
        p.status.as_mut().unwrap().reason = Some("Evicted".into());
        assert!(matches!(view_pod(&p), PodView::Disrupted(_)));
    }

    #[test]
    fn job_conditions() {
        let job = |conditions: serde_json::Value| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}))
                .unwrap()
        };
        assert_eq!(view_job(&job(json!([]))), JobView::Active);
        assert_eq!(
            view_job(&job(json!([{"type": "Complete", "status": "True"}]))),
            JobView::Complete
        );
        assert_eq!(
            view_job(&job(
                json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit"}])
            )),
            JobView::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into()
            }
        );
        assert_eq!(
            view_job(&job(json!([{"type": "Failed", "status": "False"}]))),
            JobView::Active
        );
    }

    #[test]
    fn failed_jobs() {
        let exit = PodView::Terminated(Termination {
            exit_code: 3,
            reason: Some("Error".into()),
            message: None,
        });
        let v = failed_job("BackoffLimitExceeded", "m", std::slice::from_ref(&exit)).unwrap();
        assert_eq!(v.result, LaunchResult::Exited(3));
        assert_eq!(
            v.note.as_deref(),
            Some("the training container exited with code 3 (Error)")
        );
        let v = failed_job(
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            &[exit],
        )
        .unwrap();
        assert_eq!(
            v.result,
            LaunchResult::Killed("DeadlineExceeded: Job was active longer than specified deadline".into())
        );
        let disrupted = PodView::Disrupted("Evicted".into());
        assert_eq!(
            failed_job("BackoffLimitExceeded", "", &[disrupted]),
            Err("Evicted".into())
        );
        let v = failed_job("BackoffLimitExceeded", "", &[]).unwrap();
        assert!(matches!(v.result, LaunchResult::Error(m) if m.contains("BackoffLimitExceeded")));
    }

    #[test]
    fn create_errors() {
        let api = |code: u16, reason: &str, message: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                message: message.into(),
                ..kube::core::Status::failure(message, reason)
            }))
        };
        assert_eq!(
            create_failure(&api(409, "AlreadyExists", "exists")),
            CreateFailure::Exists
        );
        let quota = "jobs.batch \"x\" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1";
        assert_eq!(
            create_failure(&api(403, "Forbidden", quota)),
            CreateFailure::Quota(quota.into())
        );
        assert!(matches!(
            create_failure(&api(403, "Forbidden", "User cannot create jobs")),
            CreateFailure::Other(_)
        ));
        assert!(matches!(
            create_failure(&api(422, "Invalid", "spec.template: bad")),
            CreateFailure::Invalid(_)
        ));
    }
}
