//! One HPA's controller state, and one sync of it.

use super::{proposal, scale_down_limit, scale_up_limit, Hpa, Recommendations, ScaleEvents};
use crate::Seconds;

/// What one sync decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The metric's unstabilized proposal; `None` when the controller did not read the metric
    /// (the pool was outside `[minReplicas, maxReplicas]`, or scaled to zero by hand).
    pub proposal: Option<u32>,
    /// The replica count the controller sets.
    pub desired: u32,
}

/// The HPA controller's memory for one HPA: its recent proposals and rescales.
#[derive(Debug, Clone)]
pub struct Controller {
    hpa: Hpa,
    recommendations: Recommendations,
    events: ScaleEvents,
}

impl Controller {
    /// A controller that has not synced yet.
    pub fn new(hpa: Hpa) -> Self {
        Self {
            hpa,
            recommendations: Recommendations::new(),
            events: ScaleEvents::new(),
        }
    }

    /// The settings it runs with.
    pub fn hpa(&self) -> &Hpa {
        &self.hpa
    }

    /// One sync at `now` (`reconcileAutoscaler`), with the target at `current` replicas and
    /// the External metric summing to `metric`.
    pub fn sync(&mut self, now: Seconds, current: u32, metric: f64) -> Decision {
        let (min, max) = (self.hpa.min_replicas, self.hpa.max_replicas);
        let (proposal, desired) = if current == 0 {
            // Scaled to zero by hand: the controller leaves it alone.
            (None, 0)
        } else if current > max {
            (None, max)
        } else if current < min {
            (None, min)
        } else {
            let proposal = self.propose(current, metric);
            (Some(proposal), self.normalize(now, current, proposal))
        };
        if desired != current {
            let keep = self
                .hpa
                .scale_up
                .longest_period()
                .max(self.hpa.scale_down.longest_period());
            self.events.record(now, current, desired, keep);
        }
        Decision { proposal, desired }
    }

    fn propose(&self, current: u32, metric: f64) -> u32 {
        let hpa = &self.hpa;
        proposal(
            current,
            metric,
            hpa.target_average_value,
            hpa.scale_up.tolerance,
            hpa.scale_down.tolerance,
        )
    }

    /// Stabilization, then the behaviour policies and min/max
    /// (`normalizeDesiredReplicasWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`).
    fn normalize(&mut self, now: Seconds, current: u32, proposal: u32) -> u32 {
        let hpa = &self.hpa;
        let (up, down) = (&hpa.scale_up, &hpa.scale_down);
        let stabilized = self.recommendations.stabilize(
            now,
            current,
            proposal,
            up.stabilization_window,
            down.stabilization_window,
        );
        if stabilized > current {
            let limit = scale_up_limit(up, current, &self.events, now);
            stabilized.min(limit.min(hpa.max_replicas))
        } else if stabilized < current {
            let limit = scale_down_limit(down, current, &self.events, now);
            stabilized.max(limit.max(hpa.min_replicas))
        } else {
            stabilized
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Controller {
        Controller::new(Hpa::worker().expect("base/hpa.yaml loads"))
    }

    #[test]
    fn brings_a_pool_below_the_floor_up_to_it_without_reading_the_metric() {
        let mut c = worker();
        assert_eq!(
            c.sync(0, 1, 0.0),
            Decision {
                proposal: None,
                desired: 2
            }
        );
        assert_eq!(
            c.sync(0, 80, 0.0),
            Decision {
                proposal: None,
                desired: 50
            }
        );
    }

    #[test]
    fn an_idle_queue_keeps_the_floor() {
        let mut c = worker();
        for t in (0..3600).step_by(15) {
            assert_eq!(
                c.sync(t, 2, 0.0),
                Decision {
                    proposal: Some(0),
                    desired: 2
                }
            );
        }
    }

    #[test]
    fn clamps_a_proposal_above_the_ceiling() {
        let mut c = worker();
        let mut replicas = 2;
        for t in (0..600).step_by(15) {
            replicas = c.sync(t, replicas, 5000.0).desired;
        }
        assert_eq!(replicas, 50);
    }

    #[test]
    fn a_burst_doubles_the_pool_every_30_seconds() {
        let mut c = worker();
        let mut replicas = 2;
        let mut seen = Vec::new();
        for t in (0..=165).step_by(15) {
            let queued = if t >= 15 { 500.0 } else { 0.0 };
            replicas = c.sync(t, replicas, queued).desired;
            seen.push(replicas);
        }
        assert_eq!(seen, [2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 50, 50]);
    }

    #[test]
    fn scaled_to_zero_by_hand_stays_at_zero() {
        assert_eq!(
            worker().sync(0, 0, 500.0),
            Decision {
                proposal: None,
                desired: 0
            }
        );
    }
}
