//! Behaviour policies: how far the pool may move within a period.

use super::{PolicyKind, Rules, SelectPolicy};
use crate::Seconds;

/// The controller's record of its own rescales, kept to measure each policy's period.
#[derive(Debug, Clone, Default)]
pub struct ScaleEvents {
    added: Vec<(Seconds, u32)>,
    removed: Vec<(Seconds, u32)>,
}

impl ScaleEvents {
    /// No rescales yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a rescale from `from` to `to` replicas at `now`; events older than `keep`
    /// seconds (the longest policy period) are dropped, as they limit nothing any more.
    pub fn record(&mut self, now: Seconds, from: u32, to: u32, keep: Seconds) {
        for events in [&mut self.added, &mut self.removed] {
            events.retain(|&(at, _)| now - at < keep);
        }
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => self.added.push((now, to - from)),
            std::cmp::Ordering::Less => self.removed.push((now, from - to)),
            std::cmp::Ordering::Equal => {}
        }
    }

    /// The pool size at the start of the `period` ending now: `current` less what was added,
    /// plus what was removed, by rescales strictly within the period
    /// (`getReplicasChangePerPeriod`).
    pub fn period_start(&self, now: Seconds, current: u32, period: Seconds) -> u32 {
        let within = |events: &[(Seconds, u32)]| -> u32 {
            events
                .iter()
                .filter(|&&(at, _)| now - at < period)
                .map(|&(_, n)| n)
                .sum()
        };
        (current + within(&self.removed)).saturating_sub(within(&self.added))
    }
}

/// The most replicas the scale-up policies allow now (`calculateScaleUpLimitWithScalingRules`).
/// A Percent policy rounds up, so a small pool can always grow.
pub fn scale_up_limit(rules: &Rules, current: u32, events: &ScaleEvents, now: Seconds) -> u32 {
    let proposals = rules.policies.iter().map(|p| {
        let start = f64::from(events.period_start(now, current, p.period));
        match p.kind {
            PolicyKind::Pods => start + f64::from(p.value),
            PolicyKind::Percent => (start * (1.0 + f64::from(p.value) / 100.0)).ceil(),
        }
    });
    let limit = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Max => proposals.fold(f64::MIN, f64::max),
        SelectPolicy::Min => proposals.fold(f64::MAX, f64::min),
    };
    // No policy allows growth beyond the present pool when the period is used up.
    (limit as u32).max(current)
}

/// The fewest replicas the scale-down policies allow now
/// (`calculateScaleDownLimitWithBehaviors`). A Percent policy truncates: from 50 replicas,
/// 25% allows going down to 37, i.e. removing 13.
pub fn scale_down_limit(rules: &Rules, current: u32, events: &ScaleEvents, now: Seconds) -> u32 {
    let proposals = rules.policies.iter().map(|p| {
        let start = f64::from(events.period_start(now, current, p.period));
        match p.kind {
            PolicyKind::Pods => start - f64::from(p.value),
            PolicyKind::Percent => (start * (1.0 - f64::from(p.value) / 100.0)).trunc(),
        }
    });
    let limit = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Max => proposals.fold(f64::MAX, f64::min),
        SelectPolicy::Min => proposals.fold(f64::MIN, f64::max),
    };
    // Negative limits (a Pods policy larger than the pool) mean "no limit above zero".
    (limit.max(0.0) as u32).min(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpa::{Policy, DEFAULT_TOLERANCE};

    fn rules(select_policy: SelectPolicy, policies: &[(PolicyKind, u32, Seconds)]) -> Rules {
        Rules {
            stabilization_window: 0,
            select_policy,
            policies: policies
                .iter()
                .map(|&(kind, value, period)| Policy { kind, value, period })
                .collect(),
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    #[test]
    fn percent_scale_up_doubles_once_per_period() {
        let up = rules(SelectPolicy::Max, &[(PolicyKind::Percent, 100, 30)]);
        let mut events = ScaleEvents::new();
        assert_eq!(scale_up_limit(&up, 2, &events, 0), 4);
        events.record(0, 2, 4, 30);
        // Within the period the start is still 2: no further growth.
        assert_eq!(scale_up_limit(&up, 4, &events, 15), 4);
        // At exactly one period the event no longer counts (strictly within).
        assert_eq!(scale_up_limit(&up, 4, &events, 30), 8);
    }

    #[test]
    fn percent_scale_up_rounds_up() {
        let up = rules(SelectPolicy::Max, &[(PolicyKind::Percent, 10, 60)]);
        assert_eq!(scale_up_limit(&up, 3, &ScaleEvents::new(), 0), 4);
    }

    #[test]
    fn percent_scale_down_truncates() {
        let down = rules(SelectPolicy::Max, &[(PolicyKind::Percent, 25, 120)]);
        assert_eq!(scale_down_limit(&down, 50, &ScaleEvents::new(), 0), 37);
        assert_eq!(scale_down_limit(&down, 3, &ScaleEvents::new(), 0), 2);
        assert_eq!(scale_down_limit(&down, 2, &ScaleEvents::new(), 0), 1);
    }

    #[test]
    fn scale_down_counts_from_the_start_of_the_period() {
        let down = rules(SelectPolicy::Max, &[(PolicyKind::Percent, 25, 120)]);
        let mut events = ScaleEvents::new();
        events.record(0, 50, 40, 120);
        // 25% of the 50 at the period's start is 37, even though the pool is now 40.
        assert_eq!(scale_down_limit(&down, 40, &events, 60), 37);
        assert_eq!(scale_down_limit(&down, 40, &events, 120), 30);
    }

    #[test]
    fn select_policy_picks_the_largest_or_smallest_change() {
        let policies = [(PolicyKind::Pods, 4, 15), (PolicyKind::Percent, 100, 15)];
        let none = ScaleEvents::new();
        assert_eq!(
            scale_up_limit(&rules(SelectPolicy::Max, &policies), 10, &none, 0),
            20
        );
        assert_eq!(
            scale_up_limit(&rules(SelectPolicy::Min, &policies), 10, &none, 0),
            14
        );
        assert_eq!(
            scale_up_limit(&rules(SelectPolicy::Disabled, &policies), 10, &none, 0),
            10
        );
        let down = [(PolicyKind::Pods, 4, 15), (PolicyKind::Percent, 50, 15)];
        assert_eq!(
            scale_down_limit(&rules(SelectPolicy::Max, &down), 10, &none, 0),
            5
        );
        assert_eq!(
            scale_down_limit(&rules(SelectPolicy::Min, &down), 10, &none, 0),
            6
        );
        assert_eq!(
            scale_down_limit(&rules(SelectPolicy::Disabled, &down), 10, &none, 0),
            10
        );
    }

    #[test]
    fn rescales_in_the_other_direction_move_the_period_start() {
        let mut events = ScaleEvents::new();
        events.record(0, 10, 20, 60);
        events.record(10, 20, 15, 60);
        assert_eq!(events.period_start(20, 15, 60), 10);
        assert_eq!(events.period_start(65, 15, 60), 20);
    }
}
