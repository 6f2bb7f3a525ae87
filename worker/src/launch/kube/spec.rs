//! Builds the batch/v1 Job of one attempt from the job's spec, from typed `k8s_openapi`
//! structs.
//!
//! The Job runs one pod, once: `backoffLimit: 0` and `restartPolicy: Never`, because
//! retries belong to the queue, which counts them. The pod carries the job's identity as
//! labels, its priority as a PriorityClass, its resources as requests and limits (equal,
//! so a training pod is never the first to be squeezed), and a restricted security context.

use super::config::{CheckpointVolume, KubeConfig};
use super::names::{self, annotations, keys};
use crate::launch::{job_environment, AttemptContext};
use common::{Priority, Resources};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// The extended resource of the NVIDIA device plugin.
pub(crate) const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Name of the training container, whose log is the job's output.
pub(crate) const CONTAINER: &str = "trainer";
const CHECKPOINT_VOLUME: &str = "checkpoints";

/// The PriorityClass of `k8s/base/priorityclasses.yaml` for a priority.
pub(crate) fn priority_class(p: Priority) -> &'static str {
    match p {
        Priority::Urgent => "gpuq-urgent",
        Priority::Normal => "gpuq-normal",
        Priority::Background => "gpuq-background",
    }
}

/// The Job named `name` for this attempt, or why none can be built.
pub(crate) fn build_job(ctx: &AttemptContext<'_>, name: &str, config: &KubeConfig) -> Result<Job, String> {
    let job = ctx.job;
    let spec = &job.spec;
    let image = spec
        .image
        .clone()
        .or_else(|| config.default_image.clone())
        .ok_or("the job names no image and the worker has no default image (--kube-default-image)")?;
    let team_ok = spec
        .team
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !spec.secret_env.is_empty() && !team_ok {
        return Err(format!(
            "team {:?} cannot name Kubernetes secrets: their names (gpuq.TEAM.SECRET) take lowercase letters, digits and '-'",
            spec.team
        ));
    }
    let labels = labels(ctx, name);
    let annotations = BTreeMap::from([
        (annotations::JOB_ID.to_string(), job.id.to_string()),
        (annotations::NAME.to_string(), spec.name.clone()),
    ]);
    let meta = ObjectMeta {
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..ObjectMeta::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(config.namespace.clone()),
            ..meta.clone()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::try_from(spec.timeout_secs).unwrap_or(i64::MAX)),
            ttl_seconds_after_finished: Some(config.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(meta),
                spec: Some(pod_spec(ctx, image, config)),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

fn labels(ctx: &AttemptContext<'_>, name: &str) -> BTreeMap<String, String> {
    let job = ctx.job;
    let mut labels = BTreeMap::from([
        (keys::APP_NAME.to_string(), keys::APP_NAME_VALUE.to_string()),
        (keys::MANAGED_BY.to_string(), keys::MANAGED_BY_VALUE.to_string()),
        (keys::INSTANCE.to_string(), name.to_string()),
        (keys::JOB_ID.to_string(), names::job_id_label(&job.id)),
        (keys::ATTEMPT.to_string(), job.attempt.to_string()),
        (keys::PRIORITY.to_string(), job.priority.as_str().to_string()),
    ]);
    for (key, text) in [
        (keys::TEAM, &job.spec.team),
        (keys::MODEL_TYPE, &job.spec.model_type),
        (keys::NAME, &job.spec.name),
    ] {
        let value = names::label_value(text, 63);
        if !value.is_empty() {
            labels.insert(key.to_string(), value);
        }
    }
    labels
}

fn pod_spec(ctx: &AttemptContext<'_>, image: String, config: &KubeConfig) -> PodSpec {
    let resources = &ctx.job.spec.resources;
    let gpus = resources.gpus > 0;
    let node_selector = resources
        .gpu_type
        .as_ref()
        .map(|t| BTreeMap::from([(config.gpu_type_label.clone(), t.clone())]));
    let volume = match &config.checkpoint {
        CheckpointVolume::EmptyDir => Volume {
            name: CHECKPOINT_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        CheckpointVolume::Claim(claim) => Volume {
            name: CHECKPOINT_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Volume::default()
        },
    };
    PodSpec {
        restart_policy: Some("Never".into()),
        priority_class_name: Some(priority_class(ctx.job.priority).into()),
        service_account_name: config.service_account.clone(),
        automount_service_account_token: config.service_account.is_none().then_some(false),
        enable_service_links: Some(false),
        node_selector,
        tolerations: gpus.then(|| {
            vec![Toleration {
                key: Some(GPU_RESOURCE.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }]
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: config.run_as_user,
            run_as_group: config.run_as_user,
            fs_group: config.run_as_user,
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: CONTAINER.into(),
            image: Some(image),
            command: (!ctx.job.spec.command.is_empty()).then(|| ctx.job.spec.command.clone()),
            env: Some(environment(ctx, config)),
            resources: Some(resource_requirements(resources)),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                seccomp_profile: Some(runtime_default()),
                ..SecurityContext::default()
            }),
            // Only the job's own directory of the claim, under its team's: a pod can
            // neither read nor overwrite another job's (or team's) checkpoints.
            volume_mounts: Some(vec![VolumeMount {
                name: CHECKPOINT_VOLUME.into(),
                mount_path: config.checkpoint_mount.clone(),
                sub_path: Some(checkpoint_sub_path(ctx)),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        }],
        volumes: Some(vec![volume]),
        ..PodSpec::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// Where the job's checkpoints live in the claim: `TEAM/JOB`, each made a safe path
/// segment (never `..`). The same for every attempt, so a resumed job finds them.
fn checkpoint_sub_path(ctx: &AttemptContext<'_>) -> String {
    format!(
        "{}/{}",
        names::path_segment(&ctx.job.spec.team),
        names::checkpoint_dir_name(&ctx.job.id)
    )
}

/// The job's own variables, then gpuq's (which win on a clash, as with the local
/// launcher), with the checkpoint directory moved to the mount of its sub-path.
fn environment(ctx: &AttemptContext<'_>, config: &KubeConfig) -> Vec<EnvVar> {
    let checkpoint_dir = config.checkpoint_mount.trim_end_matches('/').to_string();
    let ours: Vec<(String, String)> = job_environment(ctx)
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "GPUQ_CHECKPOINT_DIR" {
                checkpoint_dir.clone()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let theirs: Vec<(String, String)> = ctx
        .job
        .spec
        .env
        .iter()
        .filter(|(k, _)| !ours.iter().any(|(o, _)| o == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let team = &ctx.job.spec.team;
    let secrets: Vec<EnvVar> = ctx
        .job
        .spec
        .secret_env
        .iter()
        .filter(|(k, _)| !ours.iter().any(|(o, _)| o == *k))
        .map(|(name, r)| EnvVar {
            name: name.clone(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(team, r),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect();
    theirs
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .chain(secrets)
        .chain(ours.into_iter().map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        }))
        .collect()
}

/// The Secret a job's reference names: `gpuq.TEAM.SECRET`, so a job can only reach its own
/// team's secrets (neither a usable team nor a secret has a dot, so the name is never
/// ambiguous; `build_job` refuses a team whose name a Secret's cannot hold).
pub(crate) fn secret_name(team: &str, r: &common::SecretRef) -> String {
    format!("gpuq.{team}.{}", r.secret)
}

/// CPU and memory as both requests and limits; GPUs as a limit (the request of an
/// extended resource defaults to its limit), and not at all when the job needs none.
pub(crate) fn resource_requirements(r: &Resources) -> ResourceRequirements {
    let mut amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(millicores(r.cpu))),
        ("memory".to_string(), Quantity(r.memory.to_string())),
    ]);
    let requests = amounts.clone();
    if r.gpus > 0 {
        amounts.insert(GPU_RESOURCE.into(), Quantity(r.gpus.to_string()));
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(amounts),
        claims: None,
    }
}

/// Cores as a millicore quantity (`1.5` -> `1500m`), at least `1m`.
pub(crate) fn millicores(cores: f64) -> String {
    let m = (cores * 1000.0).round().max(1.0) as u64;
    format!("{m}m")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::kube::tests::fixtures;
    use common::Memory;

    #[test]
    fn quantities() {
        assert_eq!(millicores(8.0), "8000m");
        assert_eq!(millicores(0.5), "500m");
        assert_eq!(millicores(0.0001), "1m");
        let r = Resources {
            gpus: 0,
            gpu_type: None,
            cpu: 2.0,
            memory: Memory(512 << 20),
        };
        let req = resource_requirements(&r);
        assert_eq!(req.requests, req.limits);
        assert_eq!(req.limits.unwrap()["memory"], Quantity("512Mi".into()));
    }

    #[test]
    fn priorities_map_to_the_manifests_classes() {
        assert_eq!(priority_class(Priority::Urgent), "gpuq-urgent");
        assert_eq!(priority_class(Priority::Normal), "gpuq-normal");
        assert_eq!(priority_class(Priority::Background), "gpuq-background");
    }

    #[test]
    fn a_cpu_job_has_no_gpu_limit_toleration_or_selector() {
        let mut claimed = fixtures::claimed("cpu-only", 1);
        claimed.spec.resources.gpus = 0;
        claimed.spec.resources.gpu_type = None;
        let (ctx, _out) = fixtures::context(&claimed);
        let job = build_job(&ctx, "n", &fixtures::config()).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert!(pod.tolerations.is_none());
        assert!(pod.node_selector.is_none());
        let limits = pod.containers[0].resources.clone().unwrap().limits.unwrap();
        assert!(!limits.contains_key(GPU_RESOURCE));
    }

    #[test]
    fn image_falls_back_to_the_default_or_is_refused() {
        let mut claimed = fixtures::claimed("no-image", 1);
        claimed.spec.image = None;
        let (ctx, _out) = fixtures::context(&claimed);
        let mut config = fixtures::config();
        config.default_image = None;
        assert!(build_job(&ctx, "n", &config).unwrap_err().contains("no image"));
        config.default_image = Some("registry.example/train:1".into());
        let job = build_job(&ctx, "n", &config).unwrap();
        let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.example/train:1"));
    }

    #[test]
    fn gpuq_variables_win_over_the_jobs_own() {
        let mut claimed = fixtures::claimed("env", 1);
        claimed.spec.env.insert("GPUQ_ATTEMPT".into(), "99".into());
        claimed.spec.env.insert("LR".into(), "0.1".into());
        let (ctx, _out) = fixtures::context(&claimed);
        let env = environment(&ctx, &fixtures::config());
        let get = |k: &str| {
            let found: Vec<_> = env.iter().filter(|e| e.name == k).collect();
            assert_eq!(found.len(), 1, "{k}: {env:?}");
            found[0].value.clone().unwrap()
        };
        assert_eq!(get("GPUQ_ATTEMPT"), "1");
        assert_eq!(get("LR"), "0.1");
        assert_eq!(get("GPUQ_CHECKPOINT_DIR"), "/gpuq/checkpoints");
    }

    #[test]
    fn secret_references_become_secret_key_refs_of_the_teams_own_secrets() {
        let mut claimed = fixtures::claimed("sec", 1);
        claimed.spec.team = "vision".into();
        claimed.spec.secret_env.insert(
            "WANDB_API_KEY".into(),
            "wandb/api-key".to_string().try_into().unwrap(),
        );
        let (ctx, _out) = fixtures::context(&claimed);
        let env = environment(&ctx, &fixtures::config());
        let var = env.iter().find(|e| e.name == "WANDB_API_KEY").unwrap();
        assert_eq!(var.value, None, "the value never enters the Job");
        let r = var.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str(), r.optional),
            ("gpuq.vision.wandb", "api-key", Some(false))
        );
        // A team a Secret's name cannot hold is refused, not folded into another's.
        claimed.spec.team = "Vision".into();
        let (ctx, _out) = fixtures::context(&claimed);
        let e = build_job(&ctx, "n", &fixtures::config()).unwrap_err();
        assert!(e.contains("cannot name Kubernetes secrets"), "{e}");
    }

    /// The pod spec of the Job built for `ctx`.
    fn pod_of(ctx: &AttemptContext<'_>, config: &KubeConfig) -> k8s_openapi::api::core::v1::PodSpec {
        build_job(ctx, "n", config)
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    #[test]
    fn a_pod_mounts_only_its_own_checkpoint_directory_under_its_team() {
        let mut claimed = fixtures::claimed("ckpt-job", 2);
        claimed.spec.team = "vision".into();
        let (ctx, _out) = fixtures::context(&claimed);
        let mut config = fixtures::config();
        config.checkpoint = CheckpointVolume::Claim("ckpt".into());
        let pod = pod_of(&ctx, &config);
        let mount = pod.containers[0].volume_mounts.clone().unwrap().remove(0);
        assert_eq!(mount.sub_path.as_deref(), Some("vision/ckpt-job"));
        assert_eq!(mount.mount_path, "/gpuq/checkpoints");
        // A team named like a path step cannot climb out of the claim.
        claimed.spec.team = "..".into();
        let (ctx, _out) = fixtures::context(&claimed);
        let pod = pod_of(&ctx, &config);
        let sub = pod.containers[0].volume_mounts.clone().unwrap()[0]
            .sub_path
            .clone()
            .unwrap();
        assert!(!sub.split('/').any(|s| s == ".." || s == "."), "{sub}");
    }

    #[test]
    fn a_service_account_brings_its_token() {
        let claimed = fixtures::claimed("sa", 1);
        let (ctx, _out) = fixtures::context(&claimed);
        let mut config = fixtures::config();
        config.service_account = Some("trainer".into());
        config.checkpoint = CheckpointVolume::Claim("ckpt".into());
        let pod = pod_of(&ctx, &config);
        assert_eq!(pod.service_account_name.as_deref(), Some("trainer"));
        assert_eq!(pod.automount_service_account_token, None);
        let claim = pod.volumes.unwrap()[0].persistent_volume_claim.clone().unwrap();
        assert_eq!(claim.claim_name, "ckpt");
    }
}
