//! The manifests agree with the product (ports, env, grace periods, priorities) and with each
//! other (the KEDA alternative scales exactly like the HPA; the adapter serves what the HPA
//! reads).

use std::collections::BTreeSet;

use k8s::hpa::Hpa;
use k8s::manifest::{at, find, str_at};
use serde_yaml::Value;

use crate::quotas;

fn worker() -> Value {
    find("base/worker.yaml", "Deployment", "gpuq-worker").unwrap()
}

pub(crate) fn container(deployment: &Value) -> &Value {
    at(deployment, &["spec", "template", "spec", "containers", "0"]).expect("a container")
}

/// The literal value of an env var of a container.
pub(crate) fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let vars = at(container, &["env"])?.as_sequence()?;
    vars.iter()
        .find(|v| str_at(v, &["name"]) == Some(name))
        .and_then(|v| str_at(v, &["value"]))
}

/// The secret and key an env var of a container is read from.
fn secret_ref<'a>(container: &'a Value, name: &str) -> Option<(&'a str, &'a str)> {
    let vars = at(container, &["env"])?.as_sequence()?;
    let var = vars.iter().find(|v| str_at(v, &["name"]) == Some(name))?;
    Some((
        str_at(var, &["valueFrom", "secretKeyRef", "name"])?,
        str_at(var, &["valueFrom", "secretKeyRef", "key"])?,
    ))
}

/// Seconds in a Go-style duration as the worker's flags take it ("25s", "2m").
fn seconds(duration: &str) -> u64 {
    let (number, unit) = duration.split_at(duration.len() - 1);
    let n: u64 = number.parse().unwrap_or_else(|_| panic!("duration {duration:?}"));
    match unit {
        "s" => n,
        "m" => n * 60,
        _ => panic!("duration {duration:?}"),
    }
}

pub(crate) fn number(value: Option<&Value>) -> f64 {
    match value {
        Some(Value::Number(n)) => n.as_f64().unwrap(),
        Some(Value::String(s)) => s.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

#[test]
fn the_worker_is_killed_only_after_its_graceful_shutdown() {
    let deployment = worker();
    let worker = container(&deployment);
    let grace = seconds(env(worker, "GPUQ_GRACE_PERIOD").unwrap());
    let kill_grace = seconds(env(worker, "GPUQ_KILL_GRACE").unwrap());
    let termination = at(
        &deployment,
        &["spec", "template", "spec", "terminationGracePeriodSeconds"],
    );
    let termination = termination.and_then(Value::as_u64).unwrap();
    assert_eq!((grace, kill_grace), (25, 5));
    // A margin for the hand-back to reach Redis: at least 5 s.
    assert!(
        termination >= grace + kill_grace + 5,
        "{termination} s for {grace} + {kill_grace} s of shutdown"
    );
}

#[test]
fn the_worker_is_configured_as_the_product_expects() {
    let deployment = worker();
    let worker = container(&deployment);
    assert_eq!(secret_ref(worker, "REDIS_URL"), Some(("gpuq-redis", "url")));
    assert_eq!(env(worker, "GPUQ_NAMESPACE"), Some("gpuq"));
    assert_eq!(env(worker, "GPUQ_LAUNCHER"), Some("kube"));
    assert_eq!(env(worker, "GPUQ_LOG_FORMAT"), Some("json"));
    assert_eq!(env(worker, "GPUQ_HEARTBEAT_INTERVAL").map(seconds), Some(10));
    assert_eq!(env(worker, "GPUQ_HEARTBEAT_TTL").map(seconds), Some(120));
    assert_eq!(env(worker, "GPUQ_METRICS_ADDR"), Some("0.0.0.0:9091"));
    assert_eq!(
        str_at(&deployment, &["spec", "template", "spec", "serviceAccountName"]),
        Some("gpuq-worker")
    );
}

#[test]
fn the_worker_probes_its_metrics_port() {
    let deployment = worker();
    let worker = container(&deployment);
    assert_eq!(str_at(worker, &["ports", "0", "name"]), Some("metrics"));
    assert_eq!(
        at(worker, &["ports", "0", "containerPort"]).and_then(Value::as_u64),
        Some(9091)
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(str_at(worker, &[probe, "httpGet", "path"]), Some(path), "{probe}");
        assert_eq!(
            str_at(worker, &[probe, "httpGet", "port"]),
            Some("metrics"),
            "{probe}"
        );
    }
}

#[test]
fn the_scheduler_serves_http_on_8080() {
    let deployment = find("base/scheduler.yaml", "Deployment", "gpuq-scheduler").unwrap();
    let scheduler = container(&deployment);
    assert_eq!(at(scheduler, &["args"]), Some(&Value::from(vec!["serve"])));
    assert_eq!(secret_ref(scheduler, "REDIS_URL"), Some(("gpuq-redis", "url")));
    assert_eq!(str_at(scheduler, &["ports", "0", "name"]), Some("http"));
    assert_eq!(
        at(scheduler, &["ports", "0", "containerPort"]).and_then(Value::as_u64),
        Some(8080)
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(
            str_at(scheduler, &[probe, "httpGet", "path"]),
            Some(path),
            "{probe}"
        );
    }
    let service = find("base/scheduler.yaml", "Service", "gpuq-scheduler").unwrap();
    assert_eq!(str_at(&service, &["spec", "ports", "0", "name"]), Some("http"));
    assert_eq!(
        at(&service, &["spec", "ports", "0", "port"]).and_then(Value::as_u64),
        Some(8080)
    );
    assert_eq!(
        at(&service, &["spec", "selector"]),
        at(&deployment, &["spec", "selector", "matchLabels"]),
        "the Service selects the scheduler's pods"
    );
}

#[test]
fn the_hpa_owns_the_worker_replica_count() {
    let hpa = find("base/hpa.yaml", "HorizontalPodAutoscaler", "gpuq-worker").unwrap();
    assert_eq!(
        str_at(&hpa, &["spec", "scaleTargetRef", "kind"]),
        Some("Deployment")
    );
    assert_eq!(
        str_at(&hpa, &["spec", "scaleTargetRef", "name"]),
        Some("gpuq-worker")
    );
    // A replicas field would reset the pool on every `kubectl apply`.
    assert_eq!(at(&worker(), &["spec", "replicas"]), None);
}

#[test]
fn priority_classes_follow_the_job_priorities() {
    let expected = [
        ("gpuq-urgent", 1000, "Never"),
        ("gpuq-normal", 100, "Never"),
        ("gpuq-background", 10, "Never"),
    ];
    for (name, value, preemption) in expected {
        let class = find("base/priorityclasses.yaml", "PriorityClass", name).unwrap();
        assert_eq!(
            at(&class, &["value"]).and_then(Value::as_u64),
            Some(value),
            "{name}"
        );
        assert_eq!(str_at(&class, &["preemptionPolicy"]), Some(preemption), "{name}");
        assert_eq!(
            at(&class, &["globalDefault"]).and_then(Value::as_bool),
            Some(false),
            "{name}"
        );
    }
    // gpuq's own pods outrank every training pod, so training never preempts its supervisor.
    let control = find("base/priorityclasses.yaml", "PriorityClass", "gpuq-control").unwrap();
    assert!(at(&control, &["value"]).and_then(Value::as_u64).unwrap() > 1000);
}

#[test]
fn the_quota_caps_gpus_cpu_memory_and_pods() {
    let quota = find("base/quota.yaml", "ResourceQuota", "gpuq-compute").unwrap();
    for resource in [
        "requests.nvidia.com/gpu",
        "requests.cpu",
        "requests.memory",
        "pods",
    ] {
        assert!(at(&quota, &["spec", "hard", resource]).is_some(), "{resource}");
    }
    let limits = find("base/quota.yaml", "LimitRange", "gpuq-container-defaults").unwrap();
    let container = at(&limits, &["spec", "limits", "0"]).unwrap();
    assert_eq!(str_at(container, &["type"]), Some("Container"));
    for default in ["default", "defaultRequest"] {
        for resource in ["cpu", "memory"] {
            assert!(
                at(container, &[default, resource]).is_some(),
                "{default}.{resource}"
            );
        }
    }
}

#[test]
fn the_keda_scaled_object_scales_like_the_hpa() {
    let hpa = find("base/hpa.yaml", "HorizontalPodAutoscaler", "gpuq-worker").unwrap();
    let model = Hpa::worker().unwrap();
    let so = find("components/keda/scaledobject.yaml", "ScaledObject", "gpuq-worker").unwrap();
    let spec = at(&so, &["spec"]).unwrap();

    assert_eq!(str_at(spec, &["scaleTargetRef", "name"]), Some("gpuq-worker"));
    assert_eq!(
        at(spec, &["minReplicaCount"]).and_then(Value::as_u64),
        Some(model.min_replicas.into())
    );
    assert_eq!(
        at(spec, &["maxReplicaCount"]).and_then(Value::as_u64),
        Some(model.max_replicas.into())
    );
    assert_eq!(
        at(spec, &["advanced", "horizontalPodAutoscalerConfig", "behavior"]),
        at(&hpa, &["spec", "behavior"]),
        "the same scaling behaviour"
    );

    // One trigger per list of admissible jobs (per priority and pool), summed into one
    // metric with the HPA's per-worker target.
    let worker = worker();
    let namespace = env(container(&worker), "GPUQ_NAMESPACE").unwrap();
    let triggers = at(spec, &["triggers"]).and_then(Value::as_sequence).unwrap();
    let mut names = Vec::new();
    for trigger in triggers {
        let name = str_at(trigger, &["name"]).expect("a trigger name, for the formula");
        assert_eq!(str_at(trigger, &["type"]), Some("redis"), "{name}");
        assert_eq!(
            number(at(trigger, &["metadata", "listLength"])),
            model.target_average_value,
            "{name}"
        );
        assert_eq!(
            str_at(trigger, &["authenticationRef", "name"]),
            Some("gpuq-redis"),
            "{name}"
        );
        // A variable of the formula: an identifier.
        assert!(
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "trigger name {name:?} is not a formula variable"
        );
        assert!(!names.contains(&name), "two triggers named {name}");
        names.push(name);
    }
    // Every pool of the base's quota ConfigMap, and the default pool.
    let config_map = find("base/gpu-quotas.yaml", "ConfigMap", quotas::CONFIG_MAP).unwrap();
    let config = quotas::admission(&config_map, "base");
    assert_triggers_cover(spec, &quotas::queue_lists(namespace, &config), "components/keda");
    let modifiers = at(spec, &["advanced", "scalingModifiers"]).unwrap();
    assert_eq!(str_at(modifiers, &["formula"]), Some(names.join(" + ").as_str()));
    assert_eq!(number(at(modifiers, &["target"])), model.target_average_value);
    assert_eq!(str_at(modifiers, &["metricType"]), Some("AverageValue"));

    // The credentials come from the Secret the worker reads its REDIS_URL from.
    let auth = find(
        "components/keda/triggerauthentication.yaml",
        "TriggerAuthentication",
        "gpuq-redis",
    )
    .unwrap();
    let refs = at(&auth, &["spec", "secretTargetRef"])
        .and_then(Value::as_sequence)
        .unwrap();
    let (secret, _) = secret_ref(container(&worker), "REDIS_URL").unwrap();
    assert!(refs.iter().all(|r| str_at(r, &["name"]) == Some(secret)));
    assert!(refs.iter().any(|r| str_at(r, &["parameter"]) == Some("address")));
}

/// A ScaledObject has exactly one redis trigger per list in `lists`: none missing (its jobs
/// would not scale the workers), none left over (a pool removed from the ConfigMap).
fn assert_triggers_cover(spec: &Value, lists: &BTreeSet<String>, what: &str) {
    let triggers = at(spec, &["triggers"]).and_then(Value::as_sequence).unwrap();
    let listed: Vec<&str> = triggers
        .iter()
        .filter_map(|t| str_at(t, &["metadata", "listName"]))
        .collect();
    let unique: BTreeSet<String> = listed.iter().map(|l| l.to_string()).collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "{what}: a list has two triggers: {listed:?}"
    );
    let missing: Vec<&String> = lists.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "{what}: no trigger for {missing:?}: one per priority and pool of the ConfigMap {}",
        quotas::CONFIG_MAP
    );
    let extra: Vec<&String> = unique.difference(lists).collect();
    assert!(
        extra.is_empty(),
        "{what}: triggers for lists of no pool of the ConfigMap {}: {extra:?}",
        quotas::CONFIG_MAP
    );
}

#[test]
fn the_keda_triggers_cover_every_pool_of_the_quota_config_map_as_rendered() {
    let mut checked = 0;
    for (what, docs) in quotas::targets() {
        let Some(so) = quotas::rendered(&docs, "ScaledObject", "gpuq-worker") else {
            continue;
        };
        let config_map = quotas::rendered(&docs, "ConfigMap", quotas::CONFIG_MAP)
            .unwrap_or_else(|| panic!("{what}: no ConfigMap {}", quotas::CONFIG_MAP));
        let config = quotas::admission(config_map, &what);
        let worker = quotas::rendered(&docs, "Deployment", "gpuq-worker").unwrap();
        let namespace = env(container(worker), "GPUQ_NAMESPACE").unwrap();
        let spec = at(so, &["spec"]).unwrap();
        assert_triggers_cover(spec, &quotas::queue_lists(namespace, &config), &what);
        checked += 1;
    }
    assert!(checked > 0, "no overlay renders the KEDA ScaledObject");
}

#[test]
fn the_adapter_rule_serves_the_metric_the_hpa_reads() {
    let model = Hpa::worker().unwrap();
    let config_map = find(
        "prometheus-adapter/configmap.yaml",
        "ConfigMap",
        "prometheus-adapter",
    )
    .unwrap();
    let config: Value = serde_yaml::from_str(str_at(&config_map, &["data", "config.yaml"]).unwrap()).unwrap();
    let rules = at(&config, &["externalRules"])
        .and_then(Value::as_sequence)
        .unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(str_at(rule, &["name", "as"]), Some(model.metric_name.as_str()));
    assert!(str_at(rule, &["seriesQuery"])
        .unwrap()
        .starts_with(&model.metric_name));
    let query = str_at(rule, &["metricsQuery"]).unwrap();
    assert!(
        query.starts_with("sum by (namespace)"),
        "sums over the priorities: {query}"
    );
    assert!(
        query.contains("max by (namespace, priority)"),
        "de-duplicates scheduler replicas: {query}"
    );
}

#[test]
fn the_hpa_scales_on_a_per_priority_gauge_that_serve_exports() {
    // monitoring/metrics.txt lists what `scheduler serve` and the workers export; the adapter
    // rule needs a gauge with a priority label (it takes the max per priority, then sums).
    let model = Hpa::worker().unwrap();
    let path = k8s::manifest::root().join("monitoring/metrics.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .map(str::split_whitespace)
        .map(Iterator::collect::<Vec<_>>)
        .find(|fields| fields.first() == Some(&model.metric_name.as_str()))
        .unwrap_or_else(|| panic!("{} is not in monitoring/metrics.txt", model.metric_name));
    assert_eq!(line[1..], ["gauge", "priority"], "{}", model.metric_name);
}

/// The kubectl that validate.sh uses (KUBECTL, its venv's, else the one on PATH).
fn kubectl() -> std::path::PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return k.into();
    }
    let venv = std::env::var_os("GPUQ_K8S_VENV")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/gpuq-k8s-venv"))
        });
    match venv.map(|v| v.join("bin/kubectl")).filter(|k| k.exists()) {
        Some(k) => k,
        None => "kubectl".into(),
    }
}

/// Every document `kubectl kustomize` renders for an overlay: what `kubectl apply -k` sends.
fn render(overlay: &str) -> Vec<Value> {
    render_dir(&format!("overlays/{overlay}"))
}

/// Every document `kubectl kustomize` renders for a kustomization under `k8s/` ("base",
/// "overlays/prod").
pub(crate) fn render_dir(relative: &str) -> Vec<Value> {
    use serde::Deserialize;
    let dir = k8s::manifest::root().join(relative);
    let out = std::process::Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl with kustomize (k8s/validate.sh installs one)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|de| Value::deserialize(de).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn every_container_gets_the_environment_it_needs_as_rendered() {
    for overlay in ["dev", "prod", "prod-keda"] {
        let docs = render(overlay);
        let deployment = |name: &str| {
            docs.iter()
                .find(|d| {
                    str_at(d, &["kind"]) == Some("Deployment")
                        && str_at(d, &["metadata", "name"]) == Some(name)
                })
                .unwrap_or_else(|| panic!("{overlay}: no Deployment {name}"))
        };
        let given = |c: &Value, name: &str| {
            at(c, &["env"])
                .and_then(Value::as_sequence)
                .and_then(|vars| vars.iter().find(|v| str_at(v, &["name"]) == Some(name)))
                .is_some_and(|v| at(v, &["value"]).is_some() || at(v, &["valueFrom"]).is_some())
        };
        let scheduler = deployment("gpuq-scheduler");
        let s = container(scheduler);
        for name in ["REDIS_URL", "DATABASE_URL", "GPUQ_NAMESPACE"] {
            assert!(given(s, name), "{overlay}: the scheduler has no {name}");
        }
        // A file store must live on a volume: the root filesystem is read-only.
        if let Some(url) = env(s, "DATABASE_URL") {
            let dir = url
                .strip_prefix("sqlite://")
                .and_then(|p| std::path::Path::new(p).parent())
                .unwrap_or_else(|| panic!("{overlay}: DATABASE_URL {url} is neither a Secret nor SQLite"));
            let mounts: Vec<&str> = at(s, &["volumeMounts"])
                .and_then(Value::as_sequence)
                .map(|m| m.iter().filter_map(|v| str_at(v, &["mountPath"])).collect())
                .unwrap_or_default();
            assert!(
                mounts.iter().any(|m| dir.starts_with(m)),
                "{overlay}: {url} is not on a mounted volume ({mounts:?})"
            );
            assert_eq!(
                number(at(scheduler, &["spec", "replicas"])),
                1.0,
                "{overlay}: SQLite has one writer"
            );
        } else {
            assert_eq!(
                secret_ref(s, "DATABASE_URL"),
                Some(("gpuq-store", "url")),
                "{overlay}"
            );
        }
        let w = container(deployment("gpuq-worker"));
        for name in [
            "REDIS_URL",
            "GPUQ_NAMESPACE",
            "GPUQ_LAUNCHER",
            "GPUQ_HEARTBEAT_TTL",
        ] {
            assert!(given(w, name), "{overlay}: the worker has no {name}");
        }
        // Every Secret a container reads is generated by the overlay or named in its
        // instructions for the operator (prod creates gpuq-redis and gpuq-store itself).
        let generated: Vec<&str> = docs
            .iter()
            .filter(|d| str_at(d, &["kind"]) == Some("Secret"))
            .filter_map(|d| str_at(d, &["metadata", "name"]))
            .collect();
        let read = |o: &str| {
            std::fs::read_to_string(
                k8s::manifest::root()
                    .join("overlays")
                    .join(o)
                    .join("kustomization.yaml"),
            )
            .unwrap()
        };
        let mut instructions = read(overlay);
        if instructions.contains("../prod") {
            // An overlay built on prod carries prod's instructions.
            instructions.push_str(&read("prod"));
        }
        for c in [s, w] {
            for var in at(c, &["env"]).and_then(Value::as_sequence).into_iter().flatten() {
                if let Some(secret) = str_at(var, &["valueFrom", "secretKeyRef", "name"]) {
                    assert!(
                        generated.iter().any(|g| g.starts_with(secret)) || instructions.contains(secret),
                        "{overlay}: Secret {secret} is neither generated nor documented"
                    );
                }
            }
        }
    }
}
