//! The monitoring manifests agree with what they monitor: the monitors select the scheduler's
//! Service and the worker pods, on the ports that serve /metrics; the PrometheusRule carries
//! exactly the rules file that promtool tests; every alert says how bad it is and what to do;
//! and the dashboard ships in a ConfigMap that Grafana's sidecar loads. PromQL itself is
//! checked by promtool, in validate.sh.

use k8s::manifest::{at, documents, find, root, str_at};
use serde_yaml::Value;

const RULES: &str = "monitoring/rules/gpuq.rules.yaml";
const PROMETHEUS_RULE: &str = "monitoring/prometheusrule.yaml";

fn sequence<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("a list at {path:?}"))
}

/// Whether every `matchLabels` pair of a selector is among `labels` (gpuq's monitors use
/// matchLabels only).
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(
        at(selector, &["matchExpressions"]).is_none(),
        "not modelled: matchExpressions"
    );
    let wanted = at(selector, &["matchLabels"])
        .and_then(Value::as_mapping)
        .expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The rules of the plain rules file, by group.
fn rule_groups() -> Vec<Value> {
    let docs = documents(RULES).unwrap();
    assert_eq!(docs.len(), 1, "{RULES} is one document");
    sequence(&docs[0], &["groups"]).to_vec()
}

#[test]
fn the_prometheus_rule_carries_exactly_the_rules_file() {
    let rule = find(PROMETHEUS_RULE, "PrometheusRule", "gpuq").unwrap();
    let embedded = sequence(&rule, &["spec", "groups"]);
    let file = rule_groups();
    let fix = "run python3 k8s/tools/monitoring.py sync";
    assert_eq!(
        embedded.len(),
        file.len(),
        "{PROMETHEUS_RULE}: number of groups; {fix}"
    );
    for (ours, theirs) in embedded.iter().zip(&file) {
        let group = str_at(theirs, &["name"]).unwrap_or("?");
        let (a, b) = (sequence(ours, &["rules"]), sequence(theirs, &["rules"]));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let name = str_at(y, &["alert"]).or(str_at(y, &["record"])).unwrap_or("?");
            assert!(
                x == y,
                "{PROMETHEUS_RULE}: group {group}, rule {i} ({name}) differs from {RULES}; {fix}"
            );
        }
        assert!(
            ours == theirs,
            "{PROMETHEUS_RULE}: group {group} differs from {RULES}; {fix}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook() {
    let alerts: Vec<Value> = rule_groups()
        .iter()
        .flat_map(|g| sequence(g, &["rules"]).to_vec())
        .filter(|r| r.get("alert").is_some())
        .collect();
    let mut names: Vec<&str> = alerts.iter().filter_map(|a| str_at(a, &["alert"])).collect();
    names.dedup();
    assert_eq!(
        names,
        [
            "GpuqQueueTooOld",
            "GpuqJobFailureRateHigh",
            "GpuqNoWorkersWhileQueued",
            "GpuqWorkersFlapping",
            "GpuqDeadLetterGrowing",
            "GpuqJobStoreBehind",
            "GpuqOutboxNearLimit",
            "GpuqStoreRefusedTransitions",
            "GpuqTeamNearQuota",
            "GpuqJobOverrunningEstimate",
            "GpuqTeamForecastOverBudget",
            "GpuqSchedulerMetricsAbsent",
        ]
    );
    for alert in &alerts {
        let name = str_at(alert, &["alert"]).unwrap();
        let severity = str_at(alert, &["labels", "severity"]);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        assert!(
            str_at(alert, &["annotations", "summary"]).is_some_and(|s| !s.is_empty()),
            "{name}"
        );
        let description = str_at(alert, &["annotations", "description"]).unwrap_or_default();
        assert!(
            description.contains("Runbook:"),
            "{name}: no runbook hint in {description:?}"
        );
    }
    // One queue-age rule per priority, the more urgent the sooner.
    let thresholds: Vec<(String, f64)> = alerts
        .iter()
        .filter(|a| str_at(a, &["alert"]) == Some("GpuqQueueTooOld"))
        .map(|a| {
            let expr = str_at(a, &["expr"]).unwrap();
            let (_, threshold) = expr.rsplit_once('>').expect("a threshold");
            let priority = str_at(a, &["labels", "priority"]).unwrap().to_string();
            assert!(expr.contains(&format!("priority=\"{priority}\"")), "{expr}");
            (priority, threshold.trim().parse().unwrap())
        })
        .collect();
    assert_eq!(
        thresholds,
        [
            ("p0".into(), 300.0),
            ("p1".into(), 1800.0),
            ("p2".into(), 14400.0)
        ]
    );
}

#[test]
fn the_service_monitor_scrapes_the_scheduler_service_only() {
    let monitor = find(
        "monitoring/servicemonitor.yaml",
        "ServiceMonitor",
        "gpuq-scheduler",
    )
    .unwrap();
    let selector = at(&monitor, &["spec", "selector"]).unwrap();
    let service = find("base/scheduler.yaml", "Service", "gpuq-scheduler").unwrap();
    assert!(
        selects(selector, at(&service, &["metadata", "labels"]).unwrap()),
        "the ServiceMonitor does not select the scheduler's Service"
    );
    let endpoint = &sequence(&monitor, &["spec", "endpoints"])[0];
    let ports = sequence(&service, &["spec", "ports"]);
    let port = str_at(endpoint, &["port"]).unwrap();
    assert!(
        ports.iter().any(|p| str_at(p, &["name"]) == Some(port)),
        "no Service port {port}"
    );
    assert_eq!(str_at(endpoint, &["path"]), Some("/metrics"));
    // Not Redis's Service.
    for doc in documents("redis/service.yaml").unwrap() {
        let labels = at(&doc, &["metadata", "labels"]).cloned().unwrap_or_default();
        assert!(!selects(selector, &labels), "{doc:?}");
    }
}

#[test]
fn the_pod_monitor_scrapes_the_worker_pods_only() {
    let monitor = find("monitoring/podmonitor.yaml", "PodMonitor", "gpuq-worker").unwrap();
    let selector = at(&monitor, &["spec", "selector"]).unwrap();
    let template = |file: &str, kind: &str, name: &str| {
        let workload = find(file, kind, name).unwrap();
        at(&workload, &["spec", "template"]).unwrap().clone()
    };
    let worker = template("base/worker.yaml", "Deployment", "gpuq-worker");
    assert!(
        selects(selector, at(&worker, &["metadata", "labels"]).unwrap()),
        "the PodMonitor does not select the worker pods"
    );
    let endpoint = &sequence(&monitor, &["spec", "podMetricsEndpoints"])[0];
    let port = str_at(endpoint, &["port"]).unwrap();
    let container = &sequence(&worker, &["spec", "containers"])[0];
    assert!(
        sequence(container, &["ports"])
            .iter()
            .any(|p| str_at(p, &["name"]) == Some(port)),
        "the worker has no port {port}"
    );
    assert_eq!(str_at(endpoint, &["path"]), Some("/metrics"));
    for other in [
        template("base/scheduler.yaml", "Deployment", "gpuq-scheduler"),
        template("redis/statefulset.yaml", "StatefulSet", "gpuq-redis"),
    ] {
        assert!(!selects(selector, at(&other, &["metadata", "labels"]).unwrap()));
    }
}

#[test]
fn the_monitors_live_in_the_namespace_they_watch() {
    // Neither monitor has a namespaceSelector: they watch their own namespace.
    let namespace = |file: &str| {
        let docs = documents(file).unwrap();
        str_at(&docs[0], &["namespace"]).map(String::from)
    };
    assert_eq!(
        namespace("monitoring/kustomization.yaml"),
        namespace("base/kustomization.yaml")
    );
    for (file, kind, name) in [
        (
            "monitoring/servicemonitor.yaml",
            "ServiceMonitor",
            "gpuq-scheduler",
        ),
        ("monitoring/podmonitor.yaml", "PodMonitor", "gpuq-worker"),
    ] {
        let monitor = find(file, kind, name).unwrap();
        assert!(at(&monitor, &["spec", "namespaceSelector"]).is_none(), "{file}");
    }
}

#[test]
fn the_dashboard_ships_in_a_config_map_for_the_grafana_sidecar() {
    let docs = documents("monitoring/kustomization.yaml").unwrap();
    let generators = sequence(&docs[0], &["configMapGenerator"]);
    let generator = generators
        .iter()
        .find(|g| str_at(g, &["name"]) == Some("gpuq-dashboard"))
        .expect("a gpuq-dashboard ConfigMap");
    assert_eq!(
        str_at(generator, &["options", "labels", "grafana_dashboard"]),
        Some("1")
    );
    assert_eq!(
        at(generator, &["options", "disableNameSuffixHash"]).and_then(Value::as_bool),
        Some(true),
        "a hashed name leaves old copies of the dashboard behind"
    );
    let files = sequence(generator, &["files"]);
    assert_eq!(files, [Value::from("grafana/gpuq-dashboard.json")]);

    let text = std::fs::read_to_string(root().join("monitoring/grafana/gpuq-dashboard.json")).unwrap();
    // Under the 256 KiB that client-side `kubectl apply` can keep in its annotation.
    assert!(text.len() < 200 * 1024, "{} bytes", text.len());
    let dashboard: Value = serde_yaml::from_str(&text).expect("the dashboard parses");
    assert_eq!(str_at(&dashboard, &["uid"]), Some("gpuq-overview"));
    let variables = sequence(&dashboard, &["templating", "list"]);
    assert!(variables
        .iter()
        .any(|v| str_at(v, &["type"]) == Some("datasource") && str_at(v, &["query"]) == Some("prometheus")));
}
