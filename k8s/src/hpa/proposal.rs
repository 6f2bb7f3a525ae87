//! From metric to replica count: the controller's proposal before stabilization and limits.

/// The replica count an External metric with an `AverageValue` target proposes
/// (`GetExternalPerPodMetricReplicas`): `ceil(total / target)`, the pool at which every
/// replica has `target` of the metric.
///
/// Unless the pool is already close: when `total / (target * current)` lies within
/// `[1 - tolerance_down, 1 + tolerance_up]`, the proposal is `current`, so small wobbles of
/// the queue do not resize the pool. The result is not clamped to min/max yet; the
/// controller records it unclamped for stabilization.
pub fn proposal(current: u32, total: f64, target: f64, tolerance_up: f64, tolerance_down: f64) -> u32 {
    let ratio = total / (target * f64::from(current));
    if (1.0 - tolerance_down..=1.0 + tolerance_up).contains(&ratio) {
        return current;
    }
    // Queue lengths are far below u32::MAX; `as` saturates anyway.
    (total / target).ceil() as u32
}

/// The replica count a `Resource` metric with a `Utilization` target proposes
/// (`GetResourceReplicas`): the pool grown or shrunk by `utilization / target`, rounded up,
/// unless that ratio is within the tolerance.
pub fn utilization_proposal(
    current: u32,
    utilization: f64,
    target: f64,
    tolerance_up: f64,
    tolerance_down: f64,
) -> u32 {
    let ratio = utilization / target;
    if (1.0 - tolerance_down..=1.0 + tolerance_up).contains(&ratio) {
        return current;
    }
    (ratio * f64::from(current)).ceil() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilization_scales_the_pool_by_its_ratio_to_the_target() {
        // 4 pods at 150% CPU against a 75% target: twice the pods.
        assert_eq!(utilization_proposal(4, 150.0, 75.0, TOL, TOL), 8);
        // 80% against 75% is within 10%: no change.
        assert_eq!(utilization_proposal(4, 80.0, 75.0, TOL, TOL), 4);
        assert_eq!(utilization_proposal(10, 30.0, 75.0, TOL, TOL), 4);
    }

    const TOL: f64 = 0.1;

    #[test]
    fn proposes_queued_over_target_rounded_up() {
        assert_eq!(proposal(2, 500.0, 10.0, TOL, TOL), 50);
        assert_eq!(proposal(2, 41.0, 10.0, TOL, TOL), 5);
        assert_eq!(proposal(50, 0.0, 10.0, TOL, TOL), 0);
    }

    #[test]
    fn keeps_the_pool_when_within_the_tolerance() {
        // 450..=550 queued keeps 50 workers: within 10% of 500.
        assert_eq!(proposal(50, 450.0, 10.0, TOL, TOL), 50);
        assert_eq!(proposal(50, 550.0, 10.0, TOL, TOL), 50);
        assert_eq!(proposal(50, 449.0, 10.0, TOL, TOL), 45);
        assert_eq!(proposal(50, 551.0, 10.0, TOL, TOL), 56);
    }

    #[test]
    fn tolerances_apply_per_direction() {
        assert_eq!(proposal(10, 105.0, 10.0, 0.0, 0.5), 11);
        assert_eq!(proposal(10, 60.0, 10.0, 0.0, 0.5), 10);
    }

    #[test]
    fn a_pool_of_zero_is_sized_from_the_metric() {
        assert_eq!(proposal(0, 25.0, 10.0, TOL, TOL), 3);
        assert_eq!(proposal(0, 0.0, 10.0, TOL, TOL), 0);
    }
}
