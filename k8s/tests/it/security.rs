//! Least privilege: no cluster-wide rights, the worker's Role and nothing more, no API access
//! for the scheduler, and every gpuq container under the "restricted" Pod Security profile.

use std::path::{Path, PathBuf};

use k8s::manifest::{at, documents, find, root, str_at};
use serde_yaml::Value;

/// Every YAML file under `k8s/`, as a path relative to it.
fn yaml_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.ends_with("target") {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root(), &mut files);
    files.sort();
    files
        .iter()
        .map(|p| p.strip_prefix(root()).unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn nothing_is_granted_cluster_wide() {
    let files = yaml_files();
    assert!(files.len() > 10, "found the manifests: {files:?}");
    for file in files {
        for doc in documents(&file).unwrap() {
            let kind = str_at(&doc, &["kind"]).unwrap_or_default();
            assert!(!kind.starts_with("ClusterRole"), "{file}: a {kind}");
        }
    }
}

#[test]
fn the_worker_may_only_run_jobs_and_read_their_pods() {
    let role = find("base/rbac.yaml", "Role", "gpuq-worker").unwrap();
    let mut granted = Vec::new();
    for rule in at(&role, &["rules"]).and_then(Value::as_sequence).unwrap() {
        let list = |key: &str| -> Vec<String> {
            let items = at(rule, &[key]).and_then(Value::as_sequence).unwrap();
            items.iter().map(|v| v.as_str().unwrap().to_string()).collect()
        };
        assert!(at(rule, &["resourceNames"]).is_none() && at(rule, &["nonResourceURLs"]).is_none());
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    granted.push(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    granted.sort();
    let mut expected = [
        "batch/jobs:create",
        "batch/jobs:get",
        "batch/jobs:list",
        "batch/jobs:watch",
        "batch/jobs:delete",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/pods/log:get",
    ];
    expected.sort();
    assert_eq!(granted, expected);

    let binding = find("base/rbac.yaml", "RoleBinding", "gpuq-worker").unwrap();
    assert_eq!(str_at(&binding, &["roleRef", "kind"]), Some("Role"));
    assert_eq!(str_at(&binding, &["subjects", "0", "name"]), Some("gpuq-worker"));
    assert_eq!(
        at(&binding, &["subjects"])
            .and_then(Value::as_sequence)
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn the_scheduler_has_no_api_access() {
    let account = find("base/serviceaccounts.yaml", "ServiceAccount", "gpuq-scheduler").unwrap();
    assert_eq!(
        at(&account, &["automountServiceAccountToken"]).and_then(Value::as_bool),
        Some(false)
    );
    let deployment = find("base/scheduler.yaml", "Deployment", "gpuq-scheduler").unwrap();
    let pod = at(&deployment, &["spec", "template", "spec"]).unwrap();
    assert_eq!(str_at(pod, &["serviceAccountName"]), Some("gpuq-scheduler"));
    assert_eq!(
        at(pod, &["automountServiceAccountToken"]).and_then(Value::as_bool),
        Some(false)
    );
    for doc in documents("base/rbac.yaml").unwrap() {
        let subjects = at(&doc, &["subjects"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        assert!(subjects
            .iter()
            .all(|s| str_at(s, &["name"]) != Some("gpuq-scheduler")));
    }
}

/// Every pod template of gpuq's own workloads: (file, name, pod spec).
fn pod_specs() -> Vec<(String, String, Value)> {
    let mut pods = Vec::new();
    for file in yaml_files()
        .into_iter()
        .filter(|f| f.starts_with("base/") || f.starts_with("redis/"))
    {
        for doc in documents(&file).unwrap() {
            if let Some(pod) = at(&doc, &["spec", "template", "spec"]) {
                let name = str_at(&doc, &["metadata", "name"]).unwrap().to_string();
                pods.push((file.clone(), name, pod.clone()));
            }
        }
    }
    pods
}

#[test]
fn every_container_meets_the_restricted_profile_and_states_its_resources() {
    let pods = pod_specs();
    let names: Vec<&str> = pods.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names, ["gpuq-scheduler", "gpuq-worker", "gpuq-redis"]);
    for (file, name, pod) in &pods {
        let containers = at(pod, &["containers"]).and_then(Value::as_sequence).unwrap();
        for container in containers {
            let what = format!("{file}: {name}/{}", str_at(container, &["name"]).unwrap());
            // Pod-level settings apply to every container that does not override them.
            let setting = |path: &[&str]| {
                let mut in_container = vec!["securityContext"];
                in_container.extend_from_slice(path);
                at(container, &in_container)
                    .or_else(|| at(pod, &in_container))
                    .cloned()
            };
            assert_eq!(
                setting(&["runAsNonRoot"]),
                Some(Value::Bool(true)),
                "{what}: runAsNonRoot"
            );
            assert_eq!(
                setting(&["seccompProfile", "type"]),
                Some(Value::from("RuntimeDefault")),
                "{what}: seccompProfile"
            );
            let sc = at(container, &["securityContext"]).unwrap_or_else(|| panic!("{what}: securityContext"));
            assert_eq!(
                at(sc, &["allowPrivilegeEscalation"]),
                Some(&Value::Bool(false)),
                "{what}"
            );
            assert_eq!(
                at(sc, &["readOnlyRootFilesystem"]),
                Some(&Value::Bool(true)),
                "{what}"
            );
            assert_eq!(
                at(sc, &["capabilities", "drop"]),
                Some(&Value::from(vec!["ALL"])),
                "{what}"
            );
            assert!(
                at(sc, &["capabilities", "add"]).is_none(),
                "{what}: adds capabilities"
            );
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        at(container, &["resources", kind, resource]).is_some(),
                        "{what}: {kind}.{resource}"
                    );
                }
            }
        }
        assert!(
            at(pod, &["hostNetwork"]).is_none() && at(pod, &["hostPID"]).is_none(),
            "{file}: {name}"
        );
    }
}
