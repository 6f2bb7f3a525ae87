//! The HPA settings the model needs, read from a HorizontalPodAutoscaler manifest with the
//! API server's defaults applied.

use serde::Deserialize;
use serde_yaml::Value;

use crate::{manifest, Error, Result, Seconds};

/// kube-controller-manager's default `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Seconds = 15;

/// kube-controller-manager's default `--horizontal-pod-autoscaler-tolerance`: a proposal
/// within 10% of the current pool changes nothing.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// kube-controller-manager's default `--horizontal-pod-autoscaler-downscale-stabilization`,
/// used when `behavior.scaleDown.stabilizationWindowSeconds` is not set.
const DEFAULT_DOWNSCALE_STABILIZATION: Seconds = 300;

/// An HPA scaling one target on one External metric with an `AverageValue` target, and
/// optionally on the pods' CPU and memory against their requests (`Resource` metrics with a
/// `Utilization` target). The controller takes the largest proposal.
#[derive(Debug, Clone, PartialEq)]
pub struct Hpa {
    /// `spec.minReplicas` (the API default is 1).
    pub min_replicas: u32,
    /// `spec.maxReplicas`.
    pub max_replicas: u32,
    /// The External metric's name.
    pub metric_name: String,
    /// The metric's `averageValue` target: the metric per replica the HPA aims for.
    pub target_average_value: f64,
    /// `Resource` metrics: the average utilization (% of requests) each aims for.
    pub resources: Vec<ResourceTarget>,
    /// `behavior.scaleUp`, defaults applied.
    pub scale_up: Rules,
    /// `behavior.scaleDown`, defaults applied.
    pub scale_down: Rules,
}

/// A `Resource` metric with a `Utilization` target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceTarget {
    /// Which resource.
    pub resource: Resource,
    /// `averageUtilization`: the percentage of the pods' requests the HPA aims for.
    pub average_utilization: f64,
}

/// A resource the HPA can read from the pods' metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// `cpu`.
    Cpu,
    /// `memory`.
    Memory,
}

/// One direction's behaviour (`HPAScalingRules`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub stabilization_window: Seconds,
    /// `selectPolicy`.
    pub select_policy: SelectPolicy,
    /// `policies`.
    pub policies: Vec<Policy>,
    /// `tolerance` (Kubernetes 1.33+), else [`DEFAULT_TOLERANCE`].
    pub tolerance: f64,
}

/// Which policy wins when there are several (`selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectPolicy {
    /// The policy allowing the largest change (the default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One rate limit (`HPAScalingPolicy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Pods or Percent.
    pub kind: PolicyKind,
    /// How many pods, or what percentage of the pool at the start of the period.
    pub value: u32,
    /// `periodSeconds`: the sliding window the change is counted over.
    pub period: Seconds,
}

/// The unit of a policy's `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PolicyKind {
    /// A number of pods.
    Pods,
    /// A percentage of the replica count at the start of the period.
    Percent,
}

impl Hpa {
    /// Loads the HorizontalPodAutoscaler `name` from a file under `k8s/`.
    pub fn load(relative: &str, name: &str) -> Result<Self> {
        let manifest: Manifest = manifest::load(relative, "HorizontalPodAutoscaler", name)?;
        manifest.spec.try_into()
    }

    /// The worker pool's HPA, from `base/hpa.yaml`.
    pub fn worker() -> Result<Self> {
        Self::load("base/hpa.yaml", "gpuq-worker")
    }
}

impl Rules {
    /// The longest policy period: older scale events no longer limit anything.
    pub fn longest_period(&self) -> Seconds {
        self.policies.iter().map(|p| p.period).max().unwrap_or(0)
    }

    fn from_yaml(yaml: Option<RulesYaml>, default: DefaultRules) -> Result<Self> {
        let yaml = yaml.unwrap_or_default();
        let policies = if yaml.policies.is_empty() {
            default.policies.to_vec()
        } else {
            yaml.policies
                .into_iter()
                .map(|p| Policy {
                    kind: p.kind,
                    value: p.value,
                    period: p.period_seconds,
                })
                .collect()
        };
        let tolerance = match yaml.tolerance {
            Some(q) => parse_quantity(&q)?,
            None => DEFAULT_TOLERANCE,
        };
        Ok(Self {
            stabilization_window: yaml
                .stabilization_window_seconds
                .unwrap_or(default.stabilization_window),
            select_policy: yaml.select_policy.unwrap_or(SelectPolicy::Max),
            policies,
            tolerance,
        })
    }
}

/// The API server's defaults for a `behavior` direction left partly empty.
struct DefaultRules {
    stabilization_window: Seconds,
    policies: &'static [Policy],
}

/// Scale up: no stabilization; 4 pods or 100% every 15 s, whichever is more.
const DEFAULT_SCALE_UP: DefaultRules = DefaultRules {
    stabilization_window: 0,
    policies: &[
        Policy {
            kind: PolicyKind::Pods,
            value: 4,
            period: 15,
        },
        Policy {
            kind: PolicyKind::Percent,
            value: 100,
            period: 15,
        },
    ],
};

/// Scale down: the controller's stabilization flag; up to 100% every 15 s.
const DEFAULT_SCALE_DOWN: DefaultRules = DefaultRules {
    stabilization_window: DEFAULT_DOWNSCALE_STABILIZATION,
    policies: &[Policy {
        kind: PolicyKind::Percent,
        value: 100,
        period: 15,
    }],
};

#[derive(Deserialize)]
struct Manifest {
    spec: SpecYaml,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecYaml {
    #[allow(dead_code)]
    scale_target_ref: Value,
    min_replicas: Option<u32>,
    max_replicas: u32,
    #[serde(default)]
    metrics: Vec<MetricYaml>,
    behavior: Option<BehaviorYaml>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricYaml {
    r#type: String,
    external: Option<ExternalYaml>,
    resource: Option<ResourceYaml>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResourceYaml {
    name: Resource,
    target: ResourceTargetYaml,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResourceTargetYaml {
    r#type: String,
    average_utilization: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalYaml {
    metric: MetricIdYaml,
    target: TargetYaml,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricIdYaml {
    name: String,
    selector: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetYaml {
    r#type: String,
    average_value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BehaviorYaml {
    scale_up: Option<RulesYaml>,
    scale_down: Option<RulesYaml>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RulesYaml {
    stabilization_window_seconds: Option<Seconds>,
    select_policy: Option<SelectPolicy>,
    #[serde(default)]
    policies: Vec<PolicyYaml>,
    tolerance: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyYaml {
    #[serde(rename = "type")]
    kind: PolicyKind,
    value: u32,
    period_seconds: Seconds,
}

impl TryFrom<SpecYaml> for Hpa {
    type Error = Error;

    fn try_from(spec: SpecYaml) -> Result<Self> {
        let mut externals = Vec::new();
        let mut resources = Vec::new();
        for metric in spec.metrics {
            match (metric.r#type.as_str(), metric.external, metric.resource) {
                ("External", Some(external), None) => externals.push(external),
                ("Resource", None, Some(r)) => match (r.target.r#type.as_str(), r.target.average_utilization)
                {
                    ("Utilization", Some(u)) if u > 0 => resources.push(ResourceTarget {
                        resource: r.name,
                        average_utilization: f64::from(u),
                    }),
                    (other, _) => {
                        return Err(Error::Unsupported(format!("a Resource target of type {other}")))
                    }
                },
                (other, _, _) => return Err(Error::Unsupported(format!("a metric of type {other}"))),
            }
        }
        let [external] = <[ExternalYaml; 1]>::try_from(externals).map_err(|m| {
            Error::Unsupported(format!(
                "{} External metrics; the model handles exactly one",
                m.len()
            ))
        })?;
        if external.metric.selector.is_some() {
            return Err(Error::Unsupported("a metric selector".into()));
        }
        let target = match (external.target.r#type.as_str(), external.target.average_value) {
            ("AverageValue", Some(value)) => parse_quantity(&value)?,
            (other, _) => return Err(Error::Unsupported(format!("a target of type {other}"))),
        };
        let behavior = spec.behavior.ok_or_else(|| {
            Error::Unsupported(
                "an HPA without behavior (the controller then uses its older algorithm)".into(),
            )
        })?;
        let hpa = Hpa {
            min_replicas: spec.min_replicas.unwrap_or(1),
            max_replicas: spec.max_replicas,
            metric_name: external.metric.name,
            target_average_value: target,
            resources,
            scale_up: Rules::from_yaml(behavior.scale_up, DEFAULT_SCALE_UP)?,
            scale_down: Rules::from_yaml(behavior.scale_down, DEFAULT_SCALE_DOWN)?,
        };
        if hpa.min_replicas == 0 || hpa.min_replicas > hpa.max_replicas || hpa.target_average_value <= 0.0 {
            return Err(Error::Unsupported(format!(
                "minReplicas {}, maxReplicas {}, averageValue {}",
                hpa.min_replicas, hpa.max_replicas, hpa.target_average_value
            )));
        }
        Ok(hpa)
    }
}

/// A Kubernetes quantity as a number: a plain decimal, or one with the milli suffix `m`
/// (`"500m"` is 0.5). Other suffixes make no sense for a queue length or a tolerance.
fn parse_quantity(value: &Value) -> Result<f64> {
    let text = match value {
        Value::Number(n) => {
            return n
                .as_f64()
                .ok_or_else(|| Error::Unsupported(format!("quantity {n}")))
        }
        Value::String(s) => s.as_str(),
        other => return Err(Error::Unsupported(format!("quantity {other:?}"))),
    };
    let (digits, scale) = match text.strip_suffix('m') {
        Some(milli) => (milli, 1e-3),
        None => (text, 1.0),
    };
    digits
        .parse::<f64>()
        .map(|v| v * scale)
        .map_err(|_| Error::Unsupported(format!("quantity {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Hpa> {
        let manifest: Manifest = serde_yaml::from_str(yaml).expect("test YAML parses");
        manifest.spec.try_into()
    }

    const EXTERNAL: &str = "
spec:
  scaleTargetRef: {kind: Deployment, name: w}
  maxReplicas: 5
  metrics:
    - type: External
      external: {metric: {name: q}, target: {type: AverageValue, averageValue: 500m}}
";

    #[test]
    fn reads_the_worker_hpa_from_the_base_manifest() {
        let hpa = Hpa::worker().unwrap();
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (2, 50));
        // Admissible jobs, not all queued ones: parked jobs cannot start on a new worker.
        assert_eq!(hpa.metric_name, "gpuq_jobs_admissible");
        assert_eq!(hpa.target_average_value, 10.0);
        assert_eq!(
            hpa.resources,
            [
                ResourceTarget {
                    resource: Resource::Cpu,
                    average_utilization: 75.0
                },
                ResourceTarget {
                    resource: Resource::Memory,
                    average_utilization: 80.0
                }
            ]
        );
        assert_eq!(hpa.scale_up.stabilization_window, 30);
        assert_eq!(
            hpa.scale_up.policies,
            [Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: 30
            }]
        );
        assert_eq!(hpa.scale_down.stabilization_window, 600);
        assert_eq!(
            hpa.scale_down.policies,
            [Policy {
                kind: PolicyKind::Percent,
                value: 25,
                period: 120
            }]
        );
        assert_eq!(hpa.scale_down.tolerance, DEFAULT_TOLERANCE);
    }

    #[test]
    fn fills_an_empty_behavior_with_the_api_defaults() {
        let hpa = parse(&format!("{EXTERNAL}  behavior: {{}}\n")).unwrap();
        assert_eq!(hpa.min_replicas, 1);
        assert_eq!(hpa.target_average_value, 0.5);
        assert_eq!(hpa.scale_up.stabilization_window, 0);
        assert_eq!(hpa.scale_up.policies, DEFAULT_SCALE_UP.policies);
        assert_eq!(hpa.scale_down.stabilization_window, 300);
        assert_eq!(hpa.scale_down.select_policy, SelectPolicy::Max);
        assert_eq!(hpa.scale_down.policies, DEFAULT_SCALE_DOWN.policies);
    }

    #[test]
    fn reads_a_per_direction_tolerance() {
        let hpa = parse(&format!(
            "{EXTERNAL}  behavior: {{scaleDown: {{tolerance: \"0.05\"}}}}\n"
        ))
        .unwrap();
        assert_eq!(hpa.scale_down.tolerance, 0.05);
        assert_eq!(hpa.scale_up.tolerance, DEFAULT_TOLERANCE);
    }

    #[test]
    fn refuses_what_it_does_not_model() {
        let no_behavior = parse(EXTERNAL).unwrap_err();
        assert!(
            no_behavior.to_string().contains("without behavior"),
            "{no_behavior}"
        );
        let cpu =
            parse("spec: {scaleTargetRef: {}, maxReplicas: 3, behavior: {}, metrics: [{type: Resource}]}")
                .unwrap_err();
        assert!(cpu.to_string().contains("type Resource"), "{cpu}");
        let only_cpu = parse(
            "spec: {scaleTargetRef: {}, maxReplicas: 3, behavior: {}, metrics: \
             [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 75}}}]}",
        )
        .unwrap_err();
        assert!(only_cpu.to_string().contains("0 External metrics"), "{only_cpu}");
        let average = parse(
            "spec: {scaleTargetRef: {}, maxReplicas: 3, behavior: {}, metrics: \
             [{type: Resource, resource: {name: cpu, target: {type: AverageValue}}}]}",
        )
        .unwrap_err();
        assert!(
            average
                .to_string()
                .contains("Resource target of type AverageValue"),
            "{average}"
        );
    }

    #[test]
    fn an_unknown_behavior_field_is_an_error_not_ignored() {
        let manifest = serde_yaml::from_str::<Manifest>(&format!(
            "{EXTERNAL}  behavior: {{scaleDown: {{stabilisationWindowSeconds: 60}}}}\n"
        ));
        assert!(manifest.is_err());
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity(&Value::from("10")).unwrap(), 10.0);
        assert_eq!(parse_quantity(&Value::from("250m")).unwrap(), 0.25);
        assert_eq!(parse_quantity(&Value::from(3)).unwrap(), 3.0);
        assert!(parse_quantity(&Value::from("1Gi")).is_err());
    }
}
