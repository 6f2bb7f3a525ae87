//! The GPU admission that `scheduler serve` applies (the ConfigMap gpuq-quotas, key
//! quotas.toml, read through GPUQ_QUOTAS) fits the namespace it runs in. The queue admits
//! GPUs before a pod exists, so it must never admit more than the ResourceQuota lets the
//! training pods request: every pool declares its capacity, the capacities add up to at most
//! requests.nvidia.com/gpu, and each pool's nominal quotas to at most its capacity. Checked
//! as rendered, for the base and every overlay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s::manifest::{at, root, str_at};
use serde::Deserialize;
use serde_yaml::Value;

use crate::manifests::{container, env, number, render_dir};

/// The ConfigMap and its key.
pub(crate) const CONFIG_MAP: &str = "gpuq-quotas";
pub(crate) const KEY: &str = "quotas.toml";
/// The pool of jobs that name no gpu_type (`common::admission::DEFAULT_POOL`).
pub(crate) const DEFAULT_POOL: &str = "default";

/// The quota file, shaped like `common::admission::AdmissionConfig` and as strict (unknown
/// fields are errors), so that a misspelt key fails here as it would stop `serve` at start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admission {
    pub(crate) max_running: Option<u32>,
    pub(crate) allowed_teams: Option<BTreeSet<String>>,
    #[serde(default)]
    pub(crate) teams: BTreeMap<String, TeamLimits>,
    #[serde(default)]
    pub(crate) pools: BTreeMap<String, Pool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TeamLimits {
    pub(crate) max_running: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pool {
    pub(crate) capacity: Option<u32>,
    pub(crate) max_running: Option<u32>,
    // Parsed for their shape only, as serve parses them.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) strategy: Strategy,
    #[allow(dead_code)]
    pub(crate) reserve_after_secs: Option<u64>,
    #[serde(default)]
    pub(crate) quotas: BTreeMap<String, Quota>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Strategy {
    Strict,
    #[default]
    BestEffort,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Quota {
    pub(crate) nominal: u32,
    pub(crate) borrowing_limit: Option<u32>,
    pub(crate) lending_limit: Option<u32>,
    pub(crate) cohort: Option<String>,
}

/// The quota file inside a gpuq-quotas ConfigMap, parsed.
pub(crate) fn admission(config_map: &Value, what: &str) -> Admission {
    let text =
        str_at(config_map, &["data", KEY]).unwrap_or_else(|| panic!("{what}: {CONFIG_MAP} has no key {KEY}"));
    toml::from_str(text).unwrap_or_else(|e| panic!("{what}: {CONFIG_MAP}/{KEY} does not parse: {e}"))
}

/// The Redis list a pool's queued jobs of one priority wait in (`Keys::queue_in`): the
/// default pool's is the plain priority list.
pub(crate) fn queue_list(namespace: &str, priority: &str, pool: &str) -> String {
    if pool == DEFAULT_POOL {
        format!("{{{namespace}}}:queue:{priority}")
    } else {
        format!("{{{namespace}}}:queue:{priority}:{pool}")
    }
}

/// Every list of admissible queued jobs under a configuration: per priority, the default
/// pool's and every configured pool's.
pub(crate) fn queue_lists(namespace: &str, config: &Admission) -> BTreeSet<String> {
    let mut pools: BTreeSet<&str> = config.pools.keys().map(String::as_str).collect();
    pools.insert(DEFAULT_POOL);
    pools
        .iter()
        .flat_map(|pool| ["p0", "p1", "p2"].map(|p| queue_list(namespace, p, pool)))
        .collect()
}

/// The document of `kind` named `name` among rendered ones.
pub(crate) fn rendered<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| str_at(d, &["kind"]) == Some(kind) && str_at(d, &["metadata", "name"]) == Some(name))
}

/// What `kubectl kustomize` renders: the base and every overlay (the overlays/ folder, so a
/// new overlay is checked without being listed here).
pub(crate) fn targets() -> Vec<(String, Vec<Value>)> {
    let mut dirs = vec!["base".to_string()];
    let mut overlays: Vec<String> = std::fs::read_dir(root().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .map(|p| format!("overlays/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    overlays.sort();
    dirs.extend(overlays);
    dirs.into_iter()
        .map(|dir| {
            let docs = render_dir(&dir);
            (dir, docs)
        })
        .collect()
}

/// A whole number of a ResourceQuota's `hard` entry (GPUs and pods are plain counts).
fn count(quota: &Value, resource: &str, what: &str) -> u64 {
    let value =
        at(quota, &["spec", "hard", resource]).unwrap_or_else(|| panic!("{what}: no quota on {resource}"));
    let n = number(Some(value));
    assert!(
        n >= 0.0 && n.fract() == 0.0,
        "{what}: {resource} {value:?} is not a plain count"
    );
    n as u64
}

/// Most pods gpuq's own workloads run at once: Deployments at their replicas, or at the
/// autoscaler's maximum when one drives them; StatefulSets at their replicas.
fn own_pods(docs: &[Value], what: &str) -> u64 {
    let autoscaled = |name: &str| {
        docs.iter().find_map(|d| match str_at(d, &["kind"]) {
            Some("HorizontalPodAutoscaler")
                if str_at(d, &["spec", "scaleTargetRef", "name"]) == Some(name) =>
            {
                at(d, &["spec", "maxReplicas"]).and_then(Value::as_u64)
            }
            Some("ScaledObject") if str_at(d, &["spec", "scaleTargetRef", "name"]) == Some(name) => {
                at(d, &["spec", "maxReplicaCount"]).and_then(Value::as_u64)
            }
            _ => None,
        })
    };
    let mut pods = 0;
    for doc in docs {
        let kind = str_at(doc, &["kind"]).unwrap_or_default();
        if kind != "Deployment" && kind != "StatefulSet" {
            continue;
        }
        let name = str_at(doc, &["metadata", "name"]).unwrap();
        let replicas = autoscaled(name)
            .or_else(|| at(doc, &["spec", "replicas"]).and_then(Value::as_u64))
            .unwrap_or(1);
        assert!(replicas > 0, "{what}: {kind} {name} has no replicas");
        pods += replicas;
    }
    pods
}

/// A name the admission accepts (`check_name` in common::admission): 1 to 63 letters,
/// digits, '-', '_' or '.'. Pool names are also Redis key parts and Prometheus label values.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[test]
fn the_quota_config_map_fits_the_resource_quota_as_rendered() {
    let targets = targets();
    assert!(
        targets.len() >= 4,
        "the base and the overlays: {:?}",
        targets.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for (what, docs) in &targets {
        let Some(config_map) = rendered(docs, "ConfigMap", CONFIG_MAP) else {
            // A target without the scheduler needs no quota file; one with it must ship it.
            assert!(
                rendered(docs, "Deployment", "gpuq-scheduler").is_none(),
                "{what}: the scheduler is rendered without the ConfigMap {CONFIG_MAP}"
            );
            continue;
        };
        let config = admission(config_map, what);
        let quota = rendered(docs, "ResourceQuota", "gpuq-compute")
            .unwrap_or_else(|| panic!("{what}: no ResourceQuota"));
        let gpus = count(quota, "requests.nvidia.com/gpu", what);

        // The default pool is declared: undeclared, it would admit GPU jobs without limit.
        assert!(
            config.pools.contains_key(DEFAULT_POOL),
            "{what}: pool {DEFAULT_POOL} is not declared, so its GPU jobs are admitted without limit"
        );
        let mut total = 0u64;
        for (name, pool) in &config.pools {
            assert!(valid_name(name), "{what}: pool name {name:?}");
            // Kubernetes workers advertise no devices: a pool without a declared capacity
            // would wait for devices that never come.
            let capacity = pool
                .capacity
                .unwrap_or_else(|| panic!("{what}: pool {name} declares no capacity"));
            total += u64::from(capacity);
            let nominal: u32 = pool.quotas.values().map(|q| q.nominal).sum();
            assert!(
                nominal <= capacity,
                "{what}: pool {name}: nominal quotas add up to {nominal} GPUs, more than its capacity {capacity}"
            );
            if let Some(m) = pool.max_running {
                assert!(m > 0, "{what}: pool {name}: max_running 0 admits nothing");
            }
            for (team, q) in &pool.quotas {
                assert!(valid_name(team), "{what}: pool {name}: team name {team:?}");
                assert!(
                    q.cohort.as_deref().is_none_or(valid_name),
                    "{what}: pool {name}, team {team}: cohort"
                );
                // As `AdmissionConfig::validate` requires.
                assert!(
                    q.lending_limit.is_none_or(|l| l <= q.nominal),
                    "{what}: pool {name}, team {team}: lending_limit is more than its nominal {}",
                    q.nominal
                );
                // A job larger than the pool is refused at enqueue anyway; a limit past the
                // capacity is a typo.
                assert!(
                    q.borrowing_limit.is_none_or(|b| q.nominal + b <= capacity),
                    "{what}: pool {name}, team {team}: nominal + borrowing_limit is more than the capacity {capacity}"
                );
            }
        }
        assert!(
            total <= gpus,
            "{what}: the pools hold {total} GPUs, more than the ResourceQuota's requests.nvidia.com/gpu {gpus}: \
             the queue would admit jobs whose pods the API server refuses"
        );

        // Teams named anywhere are allowed, when there is an allow-list.
        if let Some(allowed) = &config.allowed_teams {
            let named = config
                .teams
                .keys()
                .chain(config.pools.values().flat_map(|p| p.quotas.keys()));
            for team in named {
                assert!(
                    allowed.contains(team),
                    "{what}: team {team} is not in allowed_teams"
                );
            }
        }
        for (team, limits) in &config.teams {
            assert!(valid_name(team), "{what}: team name {team:?}");
            assert!(
                limits.max_running != Some(0),
                "{what}: team {team}: max_running 0 admits nothing"
            );
        }

        // One pod per running job, next to gpuq's own pods, within the pod quota. (Rollout
        // surges may still meet it; a refused training pod is handed back, uncounted.)
        if let Some(max_running) = config.max_running {
            let pods = count(quota, "pods", what);
            let own = own_pods(docs, what);
            assert!(
                u64::from(max_running) + own <= pods,
                "{what}: max_running {max_running} + {own} pods of gpuq's own is more than the ResourceQuota's {pods} pods"
            );
        }
    }
}

#[test]
fn the_scheduler_reads_the_quota_file_from_the_config_map_as_rendered() {
    for (what, docs) in &targets() {
        let Some(deployment) = rendered(docs, "Deployment", "gpuq-scheduler") else {
            continue;
        };
        let scheduler = container(deployment);
        let file = env(scheduler, "GPUQ_QUOTAS")
            .unwrap_or_else(|| panic!("{what}: the scheduler has no GPUQ_QUOTAS"));
        let file = Path::new(file);
        let mounts = at(scheduler, &["volumeMounts"])
            .and_then(Value::as_sequence)
            .unwrap();
        let mount = mounts
            .iter()
            .find(|m| str_at(m, &["mountPath"]).is_some_and(|p| file.parent() == Some(Path::new(p))))
            .unwrap_or_else(|| panic!("{what}: {} is not in a mounted folder", file.display()));
        // A subPath mount is a copy taken at start: the file would never change, and serve
        // would never see an edit of the ConfigMap.
        assert!(
            at(mount, &["subPath"]).is_none(),
            "{what}: the quota file is mounted with subPath"
        );
        assert_eq!(
            at(mount, &["readOnly"]).and_then(Value::as_bool),
            Some(true),
            "{what}: the quota mount is not read-only"
        );
        let volume_name = str_at(mount, &["name"]).unwrap();
        let volumes = at(deployment, &["spec", "template", "spec", "volumes"])
            .and_then(Value::as_sequence)
            .unwrap();
        let volume = volumes
            .iter()
            .find(|v| str_at(v, &["name"]) == Some(volume_name))
            .unwrap_or_else(|| panic!("{what}: no volume {volume_name}"));
        assert_eq!(str_at(volume, &["configMap", "name"]), Some(CONFIG_MAP), "{what}");
        let file_name = file.file_name().unwrap().to_str().unwrap();
        match at(volume, &["configMap", "items"]).and_then(Value::as_sequence) {
            Some(items) => assert!(
                items
                    .iter()
                    .any(|i| str_at(i, &["key"]) == Some(KEY) && str_at(i, &["path"]) == Some(file_name)),
                "{what}: the volume does not project {KEY} as {file_name}"
            ),
            None => assert_eq!(file_name, KEY, "{what}"),
        }
        assert!(
            rendered(docs, "ConfigMap", CONFIG_MAP).is_some(),
            "{what}: the ConfigMap {CONFIG_MAP} is not rendered"
        );
    }
}
