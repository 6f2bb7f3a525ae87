//! One HPA's controller state, and one sync of it.

use super::{
    proposal, scale_down_limit, scale_up_limit, utilization_proposal, Hpa, Recommendations, Resource,
    ScaleEvents,
};
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

/// What the controller reads at one sync.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// The External metric's total (for gpuq's worker HPA, the admissible queued jobs).
    pub external: f64,
    /// The pods' average CPU use, as a percentage of their requests (`None`: no data).
    pub cpu_utilization: Option<f64>,
    /// The pods' average memory use, as a percentage of their requests.
    pub memory_utilization: Option<f64>,
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
        self.sync_observed(
            now,
            current,
            Observed {
                external: metric,
                ..Observed::default()
            },
        )
    }

    /// One sync with every metric the HPA reads: each gives a proposal, and the largest
    /// wins (`computeReplicasForMetrics`), so CPU or memory pressure scales the pool up
    /// even with an empty queue.
    pub fn sync_observed(&mut self, now: Seconds, current: u32, observed: Observed) -> Decision {
        let (min, max) = (self.hpa.min_replicas, self.hpa.max_replicas);
        let (proposal, desired) = if current == 0 {
            // Scaled to zero by hand: the controller leaves it alone.
            (None, 0)
        } else if current > max {
            (None, max)
        } else if current < min {
            (None, min)
        } else {
            let proposal = self.propose(current, observed);
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

    fn propose(&self, current: u32, observed: Observed) -> u32 {
        let hpa = &self.hpa;
        let (up, down) = (hpa.scale_up.tolerance, hpa.scale_down.tolerance);
        let external = proposal(current, observed.external, hpa.target_average_value, up, down);
        hpa.resources
            .iter()
            .filter_map(|r| {
                let used = match r.resource {
                    Resource::Cpu => observed.cpu_utilization,
                    Resource::Memory => observed.memory_utilization,
                }?;
                Some(utilization_proposal(
                    current,
                    used,
                    r.average_utilization,
                    up,
                    down,
                ))
            })
            .fold(external, u32::max)
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
    fn busy_workers_grow_the_pool_even_with_an_empty_queue() {
        let mut c = worker();
        let hot = |cpu: f64, memory: f64| Observed {
            external: 0.0,
            cpu_utilization: Some(cpu),
            memory_utilization: Some(memory),
        };
        // 4 workers at 150% of their CPU requests against the 75% target: 8.
        assert_eq!(c.sync_observed(0, 4, hot(150.0, 10.0)).proposal, Some(8));
        // Memory at 120% against 80%: 6; the largest proposal wins, the queue's included.
        assert_eq!(c.sync_observed(15, 4, hot(10.0, 120.0)).proposal, Some(6));
        let busy_and_queued = Observed {
            external: 100.0,
            ..hot(150.0, 10.0)
        };
        assert_eq!(c.sync_observed(30, 4, busy_and_queued).proposal, Some(10));
        // Within 10% of the targets, and no queue: nothing pushes up.
        assert_eq!(c.sync_observed(45, 4, hot(80.0, 85.0)).proposal, Some(4));
        assert_eq!(c.sync_observed(60, 4, hot(30.0, 30.0)).proposal, Some(2));
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
