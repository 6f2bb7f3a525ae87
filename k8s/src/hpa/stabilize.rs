//! Stabilization windows: the controller remembers its recent proposals, and moves the pool
//! only as far as all of them agree.

use crate::Seconds;

/// Recent unstabilized proposals, with the time each was made.
#[derive(Debug, Clone, Default)]
pub struct Recommendations {
    entries: Vec<(Seconds, u32)>,
}

impl Recommendations {
    /// No history: a new controller.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stabilizes `proposal` (`stabilizeRecommendationWithBehaviors`) and records it.
    ///
    /// Scaling up goes no higher than the lowest proposal of the last `up_window` seconds, so
    /// a one-sync spike does not add pods. Scaling down goes no lower than the highest
    /// proposal of the last `down_window` seconds, so the pool shrinks only once the queue
    /// has stayed low for the whole window. A proposal is in a window while it is strictly
    /// younger than the window, as in the controller (`timestamp.After(cutoff)`).
    pub fn stabilize(
        &mut self,
        now: Seconds,
        current: u32,
        proposal: u32,
        up_window: Seconds,
        down_window: Seconds,
    ) -> u32 {
        let (mut up, mut down) = (proposal, proposal);
        for &(at, rec) in &self.entries {
            let age = now - at;
            if age < up_window {
                up = up.min(rec);
            }
            if age < down_window {
                down = down.max(rec);
            }
        }
        // Entries older than both windows never count again; the controller reuses their slot.
        self.entries
            .retain(|&(at, _)| now - at < up_window.max(down_window));
        self.entries.push((now, proposal));
        current.max(up).min(down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_up_waits_for_the_whole_up_window_to_agree() {
        let mut recs = Recommendations::new();
        // Below the floor is fine here: min/max are applied after stabilization.
        assert_eq!(recs.stabilize(0, 2, 0, 30, 600), 0);
        // The burst's first proposal: 15 s ago the proposal was 0, so nothing moves yet.
        assert_eq!(recs.stabilize(15, 2, 50, 30, 600), 2);
        // At 30 s the 0 has left the window (age 30 is not younger than 30).
        assert_eq!(recs.stabilize(30, 2, 50, 30, 600), 50);
    }

    #[test]
    fn scale_down_waits_until_the_highest_proposal_leaves_the_down_window() {
        let mut recs = Recommendations::new();
        assert_eq!(recs.stabilize(0, 50, 50, 30, 600), 50);
        for t in (15..600).step_by(15) {
            assert_eq!(recs.stabilize(t, 50, 0, 30, 600), 50, "at {t}s");
        }
        assert_eq!(recs.stabilize(600, 50, 0, 30, 600), 0);
    }

    #[test]
    fn scale_down_follows_the_highest_recent_proposal() {
        let mut recs = Recommendations::new();
        recs.stabilize(0, 50, 40, 30, 120);
        recs.stabilize(60, 50, 30, 30, 120);
        assert_eq!(recs.stabilize(120, 50, 10, 30, 120), 30);
    }

    #[test]
    fn a_proposal_equal_to_the_pool_changes_nothing() {
        let mut recs = Recommendations::new();
        recs.stabilize(0, 10, 3, 30, 600);
        assert_eq!(recs.stabilize(15, 10, 10, 30, 600), 10);
    }

    #[test]
    fn forgets_proposals_older_than_both_windows() {
        let mut recs = Recommendations::new();
        recs.stabilize(0, 5, 99, 30, 60);
        recs.stabilize(60, 5, 5, 30, 60);
        assert_eq!(recs.entries, [(60, 5)]);
    }
}
