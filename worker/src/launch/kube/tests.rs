//! Contract tests of the Kubernetes launcher at the HTTP boundary: a real `kube::Client`
//! talks to a fake API server ([`fake`]), and each test answers the launcher's requests
//! one by one and checks what it sent and what it returned.

mod fake;
pub(crate) mod fixtures;

use super::names::job_name;
use super::{KubeConfig, KubeLauncher};
use crate::launch::{AttemptContext, LaunchResult, Launcher};
use fake::{FakeApi, Kind, DEADLINE};
use fixtures::{complete, exited, failed, pod, running, unschedulable, waiting};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One attempt running against the fake API server.
struct Run {
    api: FakeApi,
    id: String,
    attempt: u32,
    stop: CancellationToken,
    detach: CancellationToken,
    preempt_grace: std::sync::Arc<std::sync::Mutex<Option<std::time::Duration>>>,
    output: mpsc::Receiver<String>,
    task: JoinHandle<LaunchResult>,
}

fn start(id: &str, attempt: u32, config: KubeConfig) -> Run {
    let (client, api) = FakeApi::new();
    let launcher = KubeLauncher::new(client, config);
    let job = fixtures::claimed(id, attempt);
    let (tx, output) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let stop_launcher = stop.clone();
    let detach = CancellationToken::new();
    let detach_launcher = detach.clone();
    let preempt_grace = std::sync::Arc::new(std::sync::Mutex::new(None));
    let preempt_grace_launcher = preempt_grace.clone();
    let task = tokio::spawn(async move {
        let ctx = AttemptContext {
            preempt_grace: preempt_grace_launcher,
            hurry: CancellationToken::new(),
            devices: None,
            job: &job,
            checkpoint_dir: PathBuf::from("/var/lib/gpuq/work")
                .join(job.id.as_str())
                .join("checkpoint"),
            output: tx,
            stop: stop_launcher,
            detach: detach_launcher,
        };
        launcher.run(ctx).await
    });
    Run {
        api,
        id: id.into(),
        attempt,
        stop,
        detach,
        preempt_grace,
        output,
        task,
    }
}

impl Run {
    fn name(&self) -> String {
        job_name(&self.id.parse().unwrap(), self.attempt)
    }

    fn job(&self, conditions: Value) -> Value {
        fixtures::job(&self.id, self.attempt, conditions)
    }

    fn pod(&self, status: Value) -> Value {
        pod(&format!("{}-x7k2p", self.name()), &self.name(), status)
    }

    /// Answers the create request; returns its body.
    async fn created(&mut self) -> Value {
        let call = self.api.next(Kind::CreateJob).await;
        let body = call.body.clone();
        call.json(201, self.job(json!([])));
        body
    }

    /// Answers the pod log request of the pod and returns its stream.
    async fn log(&mut self) -> fake::Stream {
        let call = self.api.next(Kind::Log).await;
        let pod = format!("{}-x7k2p", self.name());
        assert_eq!(call.path, format!("/api/v1/namespaces/gpuq/pods/{pod}/log"));
        assert_eq!(call.param("follow"), Some("true"));
        assert_eq!(call.param("container"), Some("trainer"));
        call.stream()
    }

    /// Answers the one-off read of the Job's pods after it ended.
    async fn final_pods(&mut self, pods: Vec<Value>) {
        let call = self.api.next(Kind::ListPods).await;
        let selector = format!("batch.kubernetes.io/job-name={}", self.name());
        assert_eq!(call.param("labelSelector"), Some(selector.as_str()));
        call.list(pods);
    }

    async fn result(&mut self) -> LaunchResult {
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("the launcher did not return")
            .expect("the launcher panicked")
    }

    fn lines(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.output.try_recv().ok()).collect()
    }
}

fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[tokio::test]
async fn creates_the_specified_job_and_succeeds() {
    let mut run = start("ft-3-seed1", 1, fixtures::config());
    let name = run.name();
    let call = run.api.next(Kind::CreateJob).await;
    assert_eq!(call.method, http::Method::POST);
    assert_eq!(call.path, "/apis/batch/v1/namespaces/gpuq/jobs");
    let job = call.body.clone();
    call.json(201, run.job(json!([])));

    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["name"], name.as_str());
    assert!(
        name.starts_with("gpuq-ft-3-seed1-") && name.ends_with("-a1"),
        "{name}"
    );
    let labels = json!({
        "app.kubernetes.io/name": "gpuq-training",
        "app.kubernetes.io/managed-by": "gpuq",
        "app.kubernetes.io/instance": name,
        "gpuq.io/job-id": "ft-3-seed1",
        "gpuq.io/attempt": "1",
        "gpuq.io/team": "vision",
        "gpuq.io/priority": "p0",
        "gpuq.io/model-type": "resnet50",
        "gpuq.io/name": "resnet50-ft",
    });
    assert_eq!(job["metadata"]["labels"], labels);
    assert_eq!(job["metadata"]["annotations"]["gpuq.io/job-id"], "ft-3-seed1");
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["activeDeadlineSeconds"], 6 * 3600);
    assert_eq!(spec["ttlSecondsAfterFinished"], 3600);
    assert_eq!(spec["template"]["metadata"]["labels"], labels);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["priorityClassName"], "gpuq-urgent");
    assert_eq!(
        pod["nodeSelector"],
        json!({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
    );
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], "trainer");
    assert_eq!(c["image"], "ghcr.io/example/train:1");
    assert_eq!(c["command"], json!(["python", "train.py"]));
    assert!(c.get("args").is_none());
    assert_eq!(
        c["resources"],
        json!({
            "requests": {"cpu": "8000m", "memory": "64Gi"},
            "limits": {"cpu": "8000m", "memory": "64Gi", "nvidia.com/gpu": "2"},
        })
    );
    assert_eq!(
        c["securityContext"],
        json!({
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("LR", "0.1"),
        ("GPUQ_JOB_ID", "ft-3-seed1"),
        ("GPUQ_ATTEMPT", "1"),
        ("GPUQ_EPOCHS", "10"),
        ("GPUQ_BATCH_SIZE", "64"),
        ("GPUQ_CHECKPOINT_DIR", "/gpuq/checkpoints"),
        ("GPUQ_PRIORITY", "p0"),
        ("GPUQ_TEAM", "vision"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    assert_eq!(env, expected);
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "checkpoints", "mountPath": "/gpuq/checkpoints", "subPath": "vision/ft-3-seed1"}])
    );
    assert_eq!(pod["volumes"], json!([{"name": "checkpoints", "emptyDir": {}}]));

    // The pod runs, its log streams into the job's output, and the Job completes.
    let (jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    pods.event("ADDED", run.pod(running()));
    let log = run.log().await;
    log.line("loading data");
    log.line(r#"{"epoch": 1, "epochs": 10, "loss": 0.4}"#);
    drop(log);
    jobs.event("MODIFIED", run.job(complete()));
    run.final_pods(vec![run.pod(exited(0, "Completed"))]).await;
    assert_eq!(run.result().await, LaunchResult::Exited(0));
    let lines = run.lines();
    assert_eq!(
        lines,
        vec!["loading data", r#"{"epoch": 1, "epochs": 10, "loss": 0.4}"#]
    );
    run.api.assert_none(&[Kind::CreateJob, Kind::DeleteJob]);
}

#[tokio::test]
async fn a_failed_container_gives_its_exit_code_and_reason() {
    let mut run = start("oom", 2, fixtures::config());
    // Attempt 2 first looks for a still-running Job of attempt 1: there is none.
    let find = run.api.next(Kind::FindJobs).await;
    assert_eq!(find.param("labelSelector"), Some("gpuq.io/job-id=oom"));
    find.list(vec![fixtures::job("oom", 1, failed("BackoffLimitExceeded"))]);
    run.created().await;
    let name = run.name();
    let (jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    pods.event("ADDED", run.pod(exited(137, "OOMKilled")));
    let log = run.log().await;
    log.line("allocating 80GiB");
    drop(log);
    jobs.event("MODIFIED", run.job(failed("BackoffLimitExceeded")));
    run.final_pods(vec![run.pod(exited(137, "OOMKilled"))]).await;
    assert_eq!(run.result().await, LaunchResult::Exited(137));
    let lines = run.lines();
    assert_eq!(
        lines,
        vec![
            "allocating 80GiB",
            "gpuq: the training container exited with code 137 (OOMKilled)"
        ]
    );
    // A failed Job is left for inspection until its TTL.
    run.api.assert_none(&[Kind::DeleteJob]);
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_fast_and_is_deleted() {
    let mut run = start("bad-image", 1, fixtures::config());
    run.created().await;
    let name = run.name();
    let (_jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    let message = "rpc error: failed to pull and unpack image \"ghcr.io/example/train:1\": not found";
    pods.event("ADDED", run.pod(waiting("ErrImagePull", message)));
    let delete = run.api.serve_delete(run.job(json!([]))).await;
    assert_eq!(delete, json!({"propagationPolicy": "Foreground"}));
    let result = run.result().await;
    let LaunchResult::Invalid(why) = &result else {
        panic!("{result:?}")
    };
    assert!(why.contains("ErrImagePull") && why.contains("not found"), "{why}");
}

#[tokio::test]
async fn an_unschedulable_pod_waits_without_ending_the_attempt() {
    let mut run = start("big", 1, fixtures::config());
    run.created().await;
    let name = run.name();
    let (jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    let why = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.";
    pods.event("ADDED", run.pod(unschedulable(why)));
    pods.event("MODIFIED", run.pod(unschedulable(why)));
    // Capacity frees up: the pod is scheduled and runs.
    pods.event("MODIFIED", run.pod(running()));
    let log = run.log().await;
    log.line("epoch 1");
    drop(log);
    jobs.event("MODIFIED", run.job(complete()));
    run.final_pods(vec![]).await;
    assert_eq!(run.result().await, LaunchResult::Exited(0));
    let lines = run.lines();
    let waiting: Vec<_> = lines.iter().filter(|l| l.contains("unschedulable")).collect();
    assert_eq!(waiting.len(), 1, "said once: {lines:?}");
    assert!(waiting[0].starts_with("gpuq: waiting for capacity:") && waiting[0].ends_with(why));
    run.api.assert_none(&[Kind::CreateJob, Kind::DeleteJob]);
}

#[tokio::test]
async fn a_quota_refusal_hands_the_job_back_uncounted_without_holding_the_slot() {
    // The queue admitted the job by its own quotas; the namespace's ResourceQuota is full
    // anyway (someone else used it). The attempt ends at once as a hand-back, instead of
    // waiting out the 30-minute start deadline with the slot held.
    let mut run = start("queued-behind-quota", 1, fixtures::config());
    let first = run.api.next(Kind::CreateJob).await;
    let quota = format!(
        "jobs.batch \"{}\" is forbidden: exceeded quota: gpuq-compute, requested: requests.nvidia.com/gpu=8, \
         used: requests.nvidia.com/gpu=12, limited: requests.nvidia.com/gpu=16",
        run.name()
    );
    first.status(403, "Forbidden", &quota);
    let result = run.result().await;
    let LaunchResult::Requeue(why) = &result else {
        panic!("{result:?}")
    };
    assert!(
        why.contains("ResourceQuota") && why.contains("exceeded quota"),
        "{why}"
    );
    run.api.assert_none(&[Kind::CreateJob, Kind::DeleteJob]);
    assert!(has_line(
        &run.lines(),
        "gpuq: the namespace's quota refused the Job; handing the job back"
    ));
}

#[tokio::test]
async fn waiting_for_capacity_has_a_ceiling() {
    let mut config = fixtures::config();
    config.start_timeout = Duration::from_millis(300);
    let mut run = start("never-fits", 1, config);
    run.created().await;
    let name = run.name();
    let (_jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    pods.event("ADDED", run.pod(unschedulable("0/4 nodes are available")));
    // Past the ceiling the Job is deleted, and the attempt ends with an error (retried).
    run.api.serve_delete(run.job(json!([]))).await;
    let result = run.result().await;
    let LaunchResult::Error(why) = &result else {
        panic!("{result:?}")
    };
    assert!(
        why.contains("did not start within 300ms") && why.contains("0/4 nodes"),
        "{why}"
    );
}

#[tokio::test]
async fn a_preempted_pod_is_replaced_within_the_attempt() {
    let mut run = start("background-sweep", 1, fixtures::config());
    run.created().await;
    let name = run.name();
    let (_jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    pods.event("ADDED", run.pod(running()));
    let log = run.log().await;
    log.line("epoch 1");
    let mut preempted = run.pod(running());
    preempted["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
        "reason": "PreemptionByScheduler", "message": "Preempted in order to admit critical pod"}]);
    pods.event("MODIFIED", preempted);
    run.api.serve_delete(run.job(json!([]))).await;
    // The same Job again, under the same name: the attempt is not used up.
    run.created().await;
    let (jobs, _pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    jobs.event("MODIFIED", run.job(complete()));
    run.final_pods(vec![]).await;
    assert_eq!(run.result().await, LaunchResult::Exited(0));
    let lines = run.lines();
    assert!(
        has_line(&lines, "PreemptionByScheduler") && has_line(&lines, "does not count as an attempt"),
        "{lines:?}"
    );
    drop(log);
}

#[tokio::test]
async fn an_evicted_pod_behind_a_failed_job_is_replaced() {
    let mut run = start("evicted", 1, fixtures::config());
    run.created().await;
    let name = run.name();
    let (jobs, _pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    jobs.event("MODIFIED", run.job(failed("BackoffLimitExceeded")));
    let mut evicted = run.pod(exited(137, "Error"));
    evicted["status"]["reason"] = json!("Evicted");
    evicted["status"]["message"] = json!("The node was low on resource: memory.");
    run.final_pods(vec![evicted]).await;
    run.api
        .serve_delete(run.job(failed("BackoffLimitExceeded")))
        .await;
    run.created().await;
    let (jobs, _pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    jobs.event("MODIFIED", run.job(complete()));
    run.final_pods(vec![]).await;
    assert_eq!(run.result().await, LaunchResult::Exited(0));
    assert!(has_line(&run.lines(), "Evicted: The node was low on resource"));
}

#[tokio::test]
async fn a_redelivered_attempt_adopts_its_job_on_conflict() {
    let mut run = start("redelivered", 1, fixtures::config());
    let name = run.name();
    run.api.next(Kind::CreateJob).await.status(
        409,
        "AlreadyExists",
        &format!("jobs.batch \"{name}\" already exists"),
    );
    let get = run.api.next(Kind::GetJob).await;
    assert_eq!(get.path, format!("/apis/batch/v1/namespaces/gpuq/jobs/{name}"));
    get.json(200, run.job(json!([])));
    let (jobs, pods) = run
        .api
        .serve_watchers(&name, run.job(json!([])), vec![run.pod(running())])
        .await;
    let log = run.log().await;
    drop(log);
    pods.event("MODIFIED", run.pod(exited(0, "Completed")));
    jobs.event("MODIFIED", run.job(complete()));
    run.final_pods(vec![run.pod(exited(0, "Completed"))]).await;
    assert_eq!(run.result().await, LaunchResult::Exited(0));
    assert!(has_line(
        &run.lines(),
        &format!("gpuq: adopting the existing Job {name}")
    ));
    run.api.assert_none(&[Kind::CreateJob, Kind::DeleteJob]);
}

#[tokio::test]
async fn a_conflict_with_a_job_being_deleted_waits_and_creates_again() {
    // A previous worker stopped this attempt and handed it back before its Job was gone.
    let mut run = start("handed-back", 1, fixtures::config());
    let name = run.name();
    run.api
        .next(Kind::CreateJob)
        .await
        .status(409, "AlreadyExists", "exists");
    let mut deleting = run.job(json!([]));
    deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    run.api.next(Kind::GetJob).await.json(200, deleting.clone());
    run.api.next(Kind::ListJob).await.list(vec![deleting.clone()]);
    run.api
        .next(Kind::WatchJob)
        .await
        .stream()
        .event("DELETED", deleting);
    run.created().await;
    let (jobs, _pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    jobs.event("MODIFIED", run.job(complete()));
    run.final_pods(vec![]).await;
    assert_eq!(run.result().await, LaunchResult::Exited(0));
    run.api.assert_none(&[Kind::DeleteJob]);
}

#[tokio::test]
async fn a_conflict_with_another_jobs_job_is_not_adopted() {
    let mut run = start("mine", 1, fixtures::config());
    run.api
        .next(Kind::CreateJob)
        .await
        .status(409, "AlreadyExists", "exists");
    let mut other = run.job(json!([]));
    other["metadata"]["annotations"]["gpuq.io/job-id"] = json!("someone-else");
    run.api.next(Kind::GetJob).await.json(200, other);
    let result = run.result().await;
    assert!(
        matches!(&result, LaunchResult::Error(m) if m.contains("belongs to job someone-else")),
        "{result:?}"
    );
    run.api.assert_none(&[Kind::DeleteJob, Kind::ListJob]);
}

#[tokio::test]
async fn a_still_running_job_of_an_earlier_attempt_is_adopted() {
    // The worker running attempt 2 was SIGKILLed; the queue counted it, so this is attempt 3.
    let mut run = start("survivor", 3, fixtures::config());
    let find = run.api.next(Kind::FindJobs).await;
    assert_eq!(find.param("labelSelector"), Some("gpuq.io/job-id=survivor"));
    find.list(vec![
        fixtures::job("survivor", 1, failed("BackoffLimitExceeded")),
        fixtures::job("survivor", 2, json!([])),
    ]);
    let older = job_name(&"survivor".parse().unwrap(), 2);
    let (jobs, _pods) = run
        .api
        .serve_watchers(&older, fixtures::job("survivor", 2, json!([])), vec![])
        .await;
    jobs.event("MODIFIED", fixtures::job("survivor", 2, complete()));
    let list = run.api.next(Kind::ListPods).await;
    assert_eq!(
        list.param("labelSelector"),
        Some(format!("batch.kubernetes.io/job-name={older}").as_str())
    );
    list.list(vec![]);
    assert_eq!(run.result().await, LaunchResult::Exited(0));
    assert!(has_line(&run.lines(), &format!("gpuq: adopting Job {older}")));
    run.api.assert_none(&[Kind::CreateJob]);
}

/// Starts `id`, lets its pod run, stops it (as a preemption victim with `grace`), and
/// returns the delete request's options and how the attempt ended.
async fn stop_a_running_job(id: &str, grace: Option<Duration>) -> (Value, LaunchResult) {
    let mut run = start(id, 1, fixtures::config());
    run.created().await;
    let name = run.name();
    let (_jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    pods.event("ADDED", run.pod(running()));
    let _log = run.log().await;
    *run.preempt_grace.lock().unwrap() = grace;
    run.stop.cancel();
    let delete = run.api.serve_delete(run.job(json!([]))).await;
    (delete, run.result().await)
}

#[tokio::test]
async fn stop_deletes_the_job_in_the_foreground_and_waits() {
    let (delete, result) = stop_a_running_job("cancelled", None).await;
    assert_eq!(delete, json!({"propagationPolicy": "Foreground"}));
    assert_eq!(result, LaunchResult::Killed("deleted".into()));
}

#[tokio::test]
async fn a_preemption_deletes_the_job_with_the_victims_grace_period() {
    let (delete, result) = stop_a_running_job("victim", Some(Duration::from_secs(45))).await;
    assert_eq!(
        delete,
        json!({"propagationPolicy": "Foreground", "gracePeriodSeconds": 45})
    );
    assert_eq!(result, LaunchResult::Killed("deleted".into()));
}

#[tokio::test]
async fn a_job_kubernetes_refuses_is_invalid() {
    let mut run = start("refused", 1, fixtures::config());
    run.api.next(Kind::CreateJob).await.status(
        422,
        "Invalid",
        "Job.batch \"x\" is invalid: spec.template.spec.containers[0].image: Required value",
    );
    let result = run.result().await;
    assert!(
        matches!(&result, LaunchResult::Invalid(m) if m.contains("422") && m.contains("Required value")),
        "{result:?}"
    );
}

#[tokio::test]
async fn other_create_errors_end_the_attempt_for_a_retry() {
    let mut run = start("forbidden", 1, fixtures::config());
    run.api.next(Kind::CreateJob).await.status(
        403,
        "Forbidden",
        "jobs.batch is forbidden: User \"system:serviceaccount:gpuq:default\" cannot create resource",
    );
    let result = run.result().await;
    assert!(
        matches!(&result, LaunchResult::Error(m) if m.contains("403")),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_worker_that_loses_its_lease_leaves_the_job_for_the_next_attempt_to_adopt() {
    // The worker running attempt 1 is cut off from Redis and fences itself: it detaches
    // from the Job instead of deleting it.
    let mut run = start("fenced", 1, fixtures::config());
    run.created().await;
    let name = run.name();
    let (_jobs, pods) = run.api.serve_watchers(&name, run.job(json!([])), vec![]).await;
    pods.event("ADDED", run.pod(running()));
    let _log = run.log().await;
    run.detach.cancel();
    run.stop.cancel();
    assert_eq!(
        run.result().await,
        LaunchResult::Killed(format!("detached from Job {name}"))
    );
    run.api.assert_none(&[Kind::DeleteJob]);

    // The job is recovered and redelivered as attempt 2, to another worker: it adopts the
    // running Job, so there is one Job, and one pod, all along.
    let mut next = start("fenced", 2, fixtures::config());
    let find = next.api.next(Kind::FindJobs).await;
    find.list(vec![fixtures::job("fenced", 1, json!([]))]);
    let (jobs, _pods) = next
        .api
        .serve_watchers(&name, fixtures::job("fenced", 1, json!([])), vec![])
        .await;
    jobs.event("MODIFIED", fixtures::job("fenced", 1, complete()));
    next.api.next(Kind::ListPods).await.list(vec![]);
    assert_eq!(next.result().await, LaunchResult::Exited(0));
    next.api.assert_none(&[Kind::CreateJob, Kind::DeleteJob]);
}

#[tokio::test]
async fn a_job_of_an_earlier_attempt_still_being_deleted_is_waited_for_before_creating() {
    let mut run = start("slow-delete", 2, fixtures::config());
    let mut deleting = fixtures::job("slow-delete", 1, json!([]));
    deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    deleting["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    run.api.next(Kind::FindJobs).await.list(vec![deleting.clone()]);
    // Its pod still runs: nothing may be created until the old Job is gone.
    let old = job_name(&"slow-delete".parse().unwrap(), 1);
    let list = run.api.next(Kind::ListJob).await;
    assert_eq!(
        list.param("fieldSelector"),
        Some(format!("metadata.name={old}").as_str())
    );
    list.list(vec![deleting.clone()]);
    let watch = run.api.next(Kind::WatchJob).await.stream();
    run.api.assert_none(&[Kind::CreateJob]);
    watch.event("DELETED", deleting);
    // Gone: the search runs again, finds nothing, and this attempt creates its own Job.
    run.api.next(Kind::FindJobs).await.list(vec![]);
    run.created().await;
    assert!(has_line(
        &run.lines(),
        &format!("waiting for Job {old} of an earlier attempt to be gone")
    ));
}
