//! A model of the Kubernetes HorizontalPodAutoscaler controller (`autoscaling/v2`), enough of
//! it to predict how the worker pool follows the queue.
//!
//! Every sync period (15 s, kube-controller-manager's `--horizontal-pod-autoscaler-sync-period`
//! default) the controller:
//!
//! 1. turns the metric (for the worker HPA, the admissible queued jobs) into a replica
//!    proposal, `ceil(admissible / averageValue)`, unless the ratio to the current pool is
//!    within the tolerance ([`proposal`]);
//! 2. stabilizes it: it scales up no further than the lowest proposal of the scale-up window,
//!    and down no further than the highest proposal of the scale-down window
//!    ([`Recommendations`]);
//! 3. limits the change by the behaviour policies, each relative to the replica count at the
//!    start of its period ([`ScaleEvents`], [`scale_up_limit`], [`scale_down_limit`]), and by
//!    `minReplicas`/`maxReplicas` ([`Controller`]).
//!
//! This follows the documented algorithm and the controller's code (`horizontal.go`,
//! `replica_calculator.go` in `pkg/controller/podautoscaler`), including its strict time
//! comparisons and roundings. What it leaves out, on purpose:
//!
//! - pods are counted as soon as they are asked for (`status.replicas == spec.replicas`);
//! - the metric is read fresh at every sync, without the scrape and adapter delay;
//! - only one External metric with an `AverageValue` target, optionally with `Resource`
//!   metrics (CPU, memory) with a `Utilization` target, the largest proposal winning; and an
//!   explicit `behavior` (without one, the controller runs an older algorithm). Pods'
//!   utilization is given as the average over ready pods. [`Hpa::load`] refuses anything
//!   else rather than model it wrongly.

mod config;
mod controller;
mod proposal;
mod rate;
mod stabilize;

pub use config::{
    Hpa, Policy, PolicyKind, Resource, ResourceTarget, Rules, SelectPolicy, DEFAULT_TOLERANCE, SYNC_PERIOD,
};
pub use controller::{Controller, Decision, Observed};
pub use proposal::{proposal, utilization_proposal};
pub use rate::{scale_down_limit, scale_up_limit, ScaleEvents};
pub use stabilize::Recommendations;
