//! Replaying a queue-depth trace through the HPA model.

use crate::curve::{Curve, Tick};
use crate::hpa::{Controller, Hpa, SYNC_PERIOD};
use crate::trace::Trace;
use crate::Seconds;

/// How to replay.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// The Deployment's replica count before the HPA's first sync. The worker Deployment
    /// leaves `replicas` to the HPA, so Kubernetes starts it at 1.
    pub initial_replicas: u32,
    /// Seconds between syncs.
    pub sync_period: Seconds,
}

impl Default for Replay {
    fn default() -> Self {
        Self {
            initial_replicas: 1,
            sync_period: SYNC_PERIOD,
        }
    }
}

/// Syncs the controller every `sync_period` from 0 to the trace's end, feeding it the
/// queue depth of the moment, and applies each decision at once.
pub fn replay(hpa: &Hpa, trace: &Trace, replay: Replay) -> Curve {
    let mut controller = Controller::new(hpa.clone());
    let mut replicas = replay.initial_replicas;
    let ticks = (0..=trace.end())
        .step_by(replay.sync_period as usize)
        .map(|at| {
            let queued = trace.at(at);
            let decision = controller.sync(at, replicas, queued);
            replicas = decision.desired;
            Tick {
                at,
                queued,
                proposal: decision.proposal,
                replicas,
            }
        })
        .collect();
    Curve::new(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_every_period_to_the_end_of_the_trace() {
        let trace = Trace::parse("0,0\n100,20\n", "t.csv".into()).unwrap();
        let curve = replay(&Hpa::worker().unwrap(), &trace, Replay::default());
        let times: Vec<Seconds> = curve.ticks().iter().map(|t| t.at).collect();
        assert_eq!(times, [0, 15, 30, 45, 60, 75, 90]);
        assert_eq!(curve.ticks()[0].replicas, 2);
    }
}
