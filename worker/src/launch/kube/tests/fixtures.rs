//! Test data: a claimed job, its attempt context, the launcher's settings, and the JSON
//! of the Kubernetes objects the fake API server hands back.

use crate::launch::kube::{names, KubeConfig};
use crate::launch::AttemptContext;
use common::queue::ClaimedJob;
use common::{JobSpec, Memory, Priority};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) const NAMESPACE: &str = "gpuq";

/// A GPU training job like the README's example, at `attempt`.
pub(crate) fn claimed(id: &str, attempt: u32) -> ClaimedJob {
    let mut spec = JobSpec::new("resnet50-ft", "vision", vec!["python".into(), "train.py".into()]);
    spec.id = Some(id.parse().unwrap());
    spec.model_type = "resnet50".into();
    spec.priority = Priority::Urgent;
    spec.image = Some("ghcr.io/example/train:1".into());
    spec.env.insert("LR".into(), "0.1".into());
    spec.resources.gpus = 2;
    spec.resources.gpu_type = Some("NVIDIA-A100-SXM4-80GB".into());
    spec.resources.cpu = 8.0;
    spec.resources.memory = Memory(64 << 30);
    spec.epochs = 10;
    spec.batch_size = 64;
    spec.timeout_secs = 6 * 3600;
    ClaimedJob {
        id: id.parse().unwrap(),
        priority: spec.priority,
        spec,
        attempt,
        attempt_limit: 3,
        enqueued_at: 0,
        claim_token: "1".into(),
    }
}

/// The context of an attempt of `job`, and the receiving end of its output.
pub(crate) fn context(job: &ClaimedJob) -> (AttemptContext<'_>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel(1024);
    let ctx = AttemptContext {
        preempt_grace: Default::default(),
        hurry: CancellationToken::new(),
        devices: None,
        job,
        checkpoint_dir: PathBuf::from("/var/lib/gpuq/work")
            .join(job.id.as_str())
            .join("checkpoint"),
        output: tx,
        stop: CancellationToken::new(),
        detach: CancellationToken::new(),
    };
    (ctx, rx)
}

/// The defaults, with waits short enough for tests that exercise them.
pub(crate) fn config() -> KubeConfig {
    let mut c = KubeConfig::new(NAMESPACE);
    c.create_retry = Duration::from_millis(5);
    c.delete_wait = Duration::from_secs(10);
    c.log_drain = Duration::from_secs(10);
    c
}

/// The Job of attempt `attempt` of `id` as the API server returns it, with `conditions`.
pub(crate) fn job(id: &str, attempt: u32, conditions: Value) -> Value {
    let job_id = id.parse().unwrap();
    let name = names::job_name(&job_id, attempt);
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("uid-{name}"),
            "resourceVersion": "10",
            "labels": {
                "app.kubernetes.io/managed-by": "gpuq",
                "gpuq.io/job-id": names::job_id_label(&job_id),
                "gpuq.io/attempt": attempt.to_string(),
            },
            "annotations": {"gpuq.io/job-id": id},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "trainer"}]}}},
        "status": {"conditions": conditions},
    })
}

pub(crate) fn complete() -> Value {
    json!([{"type": "Complete", "status": "True"}])
}

pub(crate) fn failed(reason: &str) -> Value {
    json!([{"type": "Failed", "status": "True", "reason": reason, "message": "see the pod"}])
}

/// The pod `pod` of Job `job` with `status`.
pub(crate) fn pod(pod: &str, job: &str, status: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": NAMESPACE,
            "uid": format!("uid-{pod}"),
            "resourceVersion": "20",
            "labels": {"batch.kubernetes.io/job-name": job},
        },
        "spec": {"containers": [{"name": "trainer"}]},
        "status": status,
    })
}

fn container(state: Value) -> Value {
    json!({"phase": if state.get("terminated").is_some() { "Failed" } else { "Running" },
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": true,
            "restartCount": 0, "state": state}]})
}

pub(crate) fn running() -> Value {
    container(json!({"running": {}}))
}

pub(crate) fn exited(code: i32, reason: &str) -> Value {
    let mut s = container(json!({"terminated": {"exitCode": code, "reason": reason}}));
    if code == 0 {
        s["phase"] = json!("Succeeded");
    }
    s
}

pub(crate) fn waiting(reason: &str, message: &str) -> Value {
    let mut s = container(json!({"waiting": {"reason": reason, "message": message}}));
    s["phase"] = json!("Pending");
    s
}

pub(crate) fn unschedulable(message: &str) -> Value {
    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": message}]})
}
