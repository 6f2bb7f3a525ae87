//! A replica curve (what the HPA did, sync by sync) and the properties tests ask of it.
//!
//! Each check returns the first violation as a sentence, so a failing test says what the
//! pool did wrong and when.

use std::fmt::Write as _;

use crate::Seconds;

/// One sync of the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// When.
    pub at: Seconds,
    /// The queue depth the controller read.
    pub queued: f64,
    /// Its unstabilized proposal, if it read the metric.
    pub proposal: Option<u32>,
    /// The replica count after this sync.
    pub replicas: u32,
}

/// A rescale: the replica count changed at a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// When.
    pub at: Seconds,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
}

/// The syncs of one replay, in time order.
#[derive(Debug, Clone)]
pub struct Curve {
    ticks: Vec<Tick>,
    initial: u32,
}

impl Curve {
    /// A curve from its syncs; `ticks[0]` is the first sync, starting from `initial` replicas.
    pub fn with_initial(initial: u32, ticks: Vec<Tick>) -> Self {
        assert!(
            ticks.windows(2).all(|w| w[0].at < w[1].at),
            "ticks must be in time order"
        );
        Self { ticks, initial }
    }

    /// A curve whose first sync did not change the replica count.
    pub fn new(ticks: Vec<Tick>) -> Self {
        let initial = ticks.first().map_or(0, |t| t.replicas);
        Self::with_initial(initial, ticks)
    }

    /// The syncs.
    pub fn ticks(&self) -> &[Tick] {
        &self.ticks
    }

    /// The replica count after the last sync at or before `at` (the initial count before the
    /// first sync).
    pub fn replicas_at(&self, at: Seconds) -> u32 {
        let index = self.ticks.partition_point(|t| t.at <= at);
        index
            .checked_sub(1)
            .map_or(self.initial, |i| self.ticks[i].replicas)
    }

    /// Every rescale, in order.
    pub fn changes(&self) -> Vec<Change> {
        let mut before = self.initial;
        let mut changes = Vec::new();
        for tick in &self.ticks {
            if tick.replicas != before {
                changes.push(Change {
                    at: tick.at,
                    from: before,
                    to: tick.replicas,
                });
            }
            before = tick.replicas;
        }
        changes
    }

    /// The first sync at or after `from` for which `pred` holds.
    pub fn first_from(&self, from: Seconds, pred: impl Fn(&Tick) -> bool) -> Option<&Tick> {
        self.ticks.iter().find(|t| t.at >= from && pred(t))
    }

    /// The last sync for which `pred` holds.
    pub fn last(&self, pred: impl Fn(&Tick) -> bool) -> Option<&Tick> {
        self.ticks.iter().rev().find(|t| pred(t))
    }

    /// Every replica count, from the first sync on, lies within `[min, max]`.
    pub fn check_within(&self, min: u32, max: u32) -> Result<(), String> {
        match self.ticks.iter().find(|t| !(min..=max).contains(&t.replicas)) {
            Some(t) => Err(format!(
                "{} replicas at {}, outside [{min}, {max}]",
                t.replicas,
                clock(t.at)
            )),
            None => Ok(()),
        }
    }

    /// No scale-down goes below a proposal made within the last `window` seconds: the pool
    /// shrinks only once the whole stabilization window agrees it may.
    pub fn check_scale_down_stabilized(&self, window: Seconds) -> Result<(), String> {
        for change in self.changes().iter().filter(|c| c.to < c.from) {
            let in_window = |t: &&Tick| t.at <= change.at && change.at - t.at < window;
            let higher = |t: &&Tick| t.proposal.is_some_and(|p| p > change.to);
            if let Some(t) = self.ticks.iter().filter(in_window).rfind(higher) {
                return Err(format!(
                    "scaled down to {} at {}, though {} was proposed {} s earlier, within the {window} s window",
                    change.to,
                    clock(change.at),
                    t.proposal.unwrap_or_default(),
                    change.at - t.at
                ));
            }
        }
        Ok(())
    }

    /// Over any `period`, the pool loses at most `percent` of what it had at the period's
    /// start. Kubernetes truncates the allowed floor, so from 50 replicas 25% allows 37.
    pub fn check_scale_down_rate(&self, percent: u32, period: Seconds) -> Result<(), String> {
        for tick in self.ticks.iter().filter(|t| t.at >= period) {
            let start = self.replicas_at(tick.at - period);
            let floor = (f64::from(start) * (1.0 - f64::from(percent) / 100.0)).trunc() as u32;
            if tick.replicas < floor {
                return Err(format!(
                    "{} replicas at {}, down from {start} at {}: more than {percent}% within {period} s",
                    tick.replicas,
                    clock(tick.at),
                    clock(tick.at - period)
                ));
            }
        }
        Ok(())
    }

    /// No flapping: never a scale-up, then a scale-down, then a scale-up again, all within
    /// `window` seconds.
    pub fn check_no_flapping(&self, window: Seconds) -> Result<(), String> {
        let changes = self.changes();
        for (j, down) in changes.iter().enumerate().filter(|(_, c)| c.to < c.from) {
            let up_before = changes[..j].iter().rev().find(|c| c.to > c.from);
            let up_after = changes[j + 1..].iter().find(|c| c.to > c.from);
            if let (Some(first), Some(last)) = (up_before, up_after) {
                if last.at - first.at < window {
                    return Err(format!(
                        "up at {}, down at {}, up again at {}: within {window} s",
                        clock(first.at),
                        clock(down.at),
                        clock(last.at)
                    ));
                }
            }
        }
        Ok(())
    }

    /// How often the direction of rescaling reverses (up then down counts one).
    pub fn reversals(&self) -> usize {
        let ups: Vec<bool> = self.changes().iter().map(|c| c.to > c.from).collect();
        ups.windows(2).filter(|w| w[0] != w[1]).count()
    }

    /// The rescales as a table, one line each, for test output.
    pub fn table(&self) -> String {
        let mut out = String::from("   time  queued  proposal  replicas\n");
        for change in self.changes() {
            let tick = self
                .ticks
                .iter()
                .find(|t| t.at == change.at)
                .expect("a change is at a tick");
            let proposal = tick.proposal.map_or_else(|| "-".to_string(), |p| p.to_string());
            let _ = writeln!(
                out,
                "{:>7}  {:>6}  {:>8}  {:>3} -> {}",
                clock(change.at),
                tick.queued,
                proposal,
                change.from,
                change.to
            );
        }
        out
    }
}

/// `m:ss` from the start of the trace.
pub fn clock(at: Seconds) -> String {
    format!("{}:{:02}", at / 60, at % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A curve from (seconds, proposal, replicas), queue depth 0.
    fn curve(points: &[(Seconds, u32, u32)]) -> Curve {
        let ticks = points
            .iter()
            .map(|&(at, proposal, replicas)| Tick {
                at,
                queued: 0.0,
                proposal: Some(proposal),
                replicas,
            })
            .collect();
        Curve::with_initial(2, ticks)
    }

    #[test]
    fn lists_changes_and_reversals() {
        let c = curve(&[(0, 2, 2), (15, 4, 4), (30, 8, 8), (45, 2, 6), (60, 2, 6)]);
        assert_eq!(
            c.changes(),
            [
                Change {
                    at: 15,
                    from: 2,
                    to: 4
                },
                Change {
                    at: 30,
                    from: 4,
                    to: 8
                },
                Change {
                    at: 45,
                    from: 8,
                    to: 6
                }
            ]
        );
        assert_eq!(c.reversals(), 1);
        assert_eq!(c.replicas_at(44), 8);
        assert_eq!(c.replicas_at(1000), 6);
    }

    #[test]
    fn bounds() {
        assert!(curve(&[(0, 2, 2), (15, 9, 9)]).check_within(2, 10).is_ok());
        let err = curve(&[(0, 2, 2), (15, 9, 11)]).check_within(2, 10).unwrap_err();
        assert_eq!(err, "11 replicas at 0:15, outside [2, 10]");
    }

    #[test]
    fn flags_a_scale_down_inside_the_window_of_a_higher_proposal() {
        let early = curve(&[(0, 8, 8), (60, 2, 6)]);
        assert!(early
            .check_scale_down_stabilized(120)
            .unwrap_err()
            .contains("8 was proposed 60 s earlier"));
        assert!(early.check_scale_down_stabilized(60).is_ok());
    }

    #[test]
    fn flags_a_scale_down_faster_than_the_rate() {
        let fast = curve(&[(0, 40, 40), (60, 20, 35), (120, 20, 29)]);
        let err = fast.check_scale_down_rate(25, 120).unwrap_err();
        assert_eq!(
            err,
            "29 replicas at 2:00, down from 40 at 0:00: more than 25% within 120 s"
        );
        assert!(curve(&[(0, 40, 40), (60, 20, 35), (120, 20, 30)])
            .check_scale_down_rate(25, 120)
            .is_ok());
    }

    #[test]
    fn flags_up_down_up_within_the_window() {
        let flapping = curve(&[(0, 4, 4), (60, 2, 3), (120, 5, 5)]);
        assert_eq!(
            flapping.check_no_flapping(600).unwrap_err(),
            "up at 0:00, down at 1:00, up again at 2:00: within 600 s"
        );
        assert!(flapping.check_no_flapping(120).is_ok());
        assert!(curve(&[(0, 4, 4), (60, 8, 8), (700, 2, 6)])
            .check_no_flapping(600)
            .is_ok());
    }

    #[test]
    fn prints_the_rescales() {
        let table = curve(&[(0, 2, 2), (75, 4, 4)]).table();
        assert_eq!(table.lines().nth(1), Some("   1:15       0         4    2 -> 4"));
    }
}
