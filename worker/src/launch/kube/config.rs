//! What the Kubernetes launcher needs to know about its cluster, with the command-line
//! flags that set it.

use std::path::Path;
use std::time::Duration;

/// Where the namespace of an in-cluster service account is mounted.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// The namespace of `k8s/base`, used when nothing else says.
pub(crate) const DEFAULT_NAMESPACE: &str = "gpuq";
/// Node label whose value names the GPU model, as NVIDIA GPU Feature Discovery publishes
/// it (e.g. `NVIDIA-A100-SXM4-80GB`).
pub(crate) const DEFAULT_GPU_TYPE_LABEL: &str = "nvidia.com/gpu.product";

/// The volume that holds checkpoints, mounted at [`KubeConfig::checkpoint_mount`]. Each
/// job gets its own directory in it (`GPUQ_CHECKPOINT_DIR=<mount>/<job id>`), which the
/// training code creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointVolume {
    /// An `emptyDir`: checkpoints live as long as the pod, so a retried attempt starts
    /// over. Enough for jobs that do not resume.
    EmptyDir,
    /// A PersistentVolumeClaim in the launcher's namespace, shared by all jobs, so a
    /// retried attempt resumes from the last checkpoint. It must be `ReadWriteMany` unless
    /// every training pod lands on one node.
    Claim(String),
}

/// Settings of the Kubernetes launcher. [`KubeConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Namespace of the training Jobs.
    pub namespace: String,
    /// Image of jobs whose spec names none. A job with neither is invalid.
    pub default_image: Option<String>,
    /// Where checkpoints are kept.
    pub checkpoint: CheckpointVolume,
    /// Mount path of the checkpoint volume in the training container.
    pub checkpoint_mount: String,
    /// `ttlSecondsAfterFinished` of the Jobs: how long a finished Job and its pod (and log)
    /// stay for inspection.
    pub ttl_seconds_after_finished: i32,
    /// Service account of the training pods. Without one, the pods get the namespace's
    /// default account with no API token mounted: training code has no business with the
    /// Kubernetes API.
    pub service_account: Option<String>,
    /// Node label that selects the GPU model (`resources.gpu_type` is its value).
    pub gpu_type_label: String,
    /// User (and group, and fsGroup) the training container runs as. Without it the image's
    /// own user is used, and an image that runs as root is refused (`runAsNonRoot`).
    pub run_as_user: Option<i64>,
    /// Longest time an attempt waits for its training container to start: for quota on
    /// create, for a node with room (an unschedulable pod), for an image registry in
    /// trouble. The wait does not count as an attempt; when it runs out, the Job is deleted
    /// and the attempt ends with an error, which counts it and retries it after a backoff.
    /// The attempt's own `timeout_secs` runs meanwhile, so it bounds this wait too.
    pub start_timeout: Duration,
    /// First delay between create retries while a quota refuses the Job; it doubles up to
    /// eight times this.
    pub create_retry: Duration,
    /// How long a deleted Job may take to disappear (its pods stop first).
    pub delete_wait: Duration,
    /// How long the rest of a pod's log may take to arrive after the Job has finished.
    pub log_drain: Duration,
    /// Disrupted pods (preempted, evicted, node lost) replaced within one attempt before the
    /// attempt gives up with an error.
    pub max_replacements: u32,
}

impl KubeConfig {
    /// The defaults, in `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        KubeConfig {
            namespace: namespace.into(),
            default_image: None,
            checkpoint: CheckpointVolume::EmptyDir,
            checkpoint_mount: "/gpuq/checkpoints".into(),
            ttl_seconds_after_finished: 3600,
            service_account: None,
            gpu_type_label: DEFAULT_GPU_TYPE_LABEL.into(),
            run_as_user: None,
            start_timeout: Duration::from_secs(30 * 60),
            create_retry: Duration::from_secs(15),
            delete_wait: Duration::from_secs(60),
            log_drain: Duration::from_secs(10),
            max_replacements: 5,
        }
    }

    /// The namespace to use when none is configured: the service account's when running
    /// in a cluster, else `gpuq`.
    pub fn default_namespace() -> String {
        namespace_from(Path::new(SERVICE_ACCOUNT_NAMESPACE))
    }
}

fn namespace_from(file: &Path) -> String {
    std::fs::read_to_string(file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// Command-line flags of the Kubernetes launcher, to `#[command(flatten)]` into the
/// worker's configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Namespace of the training Jobs (default: the service account's, else gpuq).
    #[arg(id = "kube_namespace", long = "kube-namespace", env = "GPUQ_KUBE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of jobs whose spec names none.
    #[arg(long = "kube-default-image", env = "GPUQ_KUBE_DEFAULT_IMAGE")]
    pub default_image: Option<String>,
    /// PersistentVolumeClaim for checkpoints (default: an emptyDir, lost with the pod).
    #[arg(long = "kube-checkpoint-claim", env = "GPUQ_KUBE_CHECKPOINT_CLAIM")]
    pub checkpoint_claim: Option<String>,
    /// How long finished Jobs are kept.
    #[arg(long = "kube-job-ttl", env = "GPUQ_KUBE_JOB_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub job_ttl: Duration,
    /// Service account of the training pods (default: none, and no API token).
    #[arg(long = "kube-service-account", env = "GPUQ_KUBE_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Node label whose value is the job's gpu_type.
    #[arg(long = "kube-gpu-type-label", env = "GPUQ_KUBE_GPU_TYPE_LABEL", default_value = DEFAULT_GPU_TYPE_LABEL)]
    pub gpu_type_label: String,
    /// User id of the training containers (default: the image's, which must not be root).
    #[arg(long = "kube-run-as-user", env = "GPUQ_KUBE_RUN_AS_USER")]
    pub run_as_user: Option<i64>,
    /// Longest wait for the training container to start (quota, capacity, image pulls).
    #[arg(long = "kube-start-timeout", env = "GPUQ_KUBE_START_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
}

impl KubeArgs {
    /// The launcher's settings from the flags (the namespace resolved if not given).
    pub fn to_config(&self) -> KubeConfig {
        let mut c = KubeConfig::new(
            self.namespace
                .clone()
                .unwrap_or_else(KubeConfig::default_namespace),
        );
        c.default_image = self.default_image.clone();
        if let Some(claim) = &self.checkpoint_claim {
            c.checkpoint = CheckpointVolume::Claim(claim.clone());
        }
        c.ttl_seconds_after_finished = i32::try_from(self.job_ttl.as_secs()).unwrap_or(i32::MAX);
        c.service_account = self.service_account.clone();
        c.gpu_type_label = self.gpu_type_label.clone();
        c.run_as_user = self.run_as_user;
        c.start_timeout = self.start_timeout;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kube: KubeArgs,
    }

    #[test]
    fn namespace_falls_back_to_gpuq() {
        assert_eq!(namespace_from(Path::new("/nonexistent/namespace")), "gpuq");
        let dir = std::env::temp_dir().join(format!("gpuq-kube-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("namespace");
        std::fs::write(&file, "training\n").unwrap();
        assert_eq!(namespace_from(&file), "training");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_map_to_the_config() {
        let cli = Cli::parse_from([
            "worker",
            "--kube-namespace=ml",
            "--kube-checkpoint-claim=ckpt",
            "--kube-job-ttl=2h",
            "--kube-run-as-user=1000",
        ]);
        let c = cli.kube.to_config();
        assert_eq!(c.namespace, "ml");
        assert_eq!(c.checkpoint, CheckpointVolume::Claim("ckpt".into()));
        assert_eq!(c.ttl_seconds_after_finished, 7200);
        assert_eq!(c.gpu_type_label, DEFAULT_GPU_TYPE_LABEL);
        assert_eq!(c.run_as_user, Some(1000));
        assert_eq!(c.start_timeout, Duration::from_secs(1800));
    }
}
