//! Replays a recorded burst through the HPA model, configured from `base/hpa.yaml`, and checks
//! the worker pool's replica curve against what the manifest promises.
//!
//! Every bound is computed from the manifest (floor, ceiling, target, policies, windows), so
//! changing the HPA either keeps these promises or fails here with the sync that broke one.

use k8s::curve::{clock, Curve};
use k8s::hpa::{Hpa, Policy, PolicyKind, SYNC_PERIOD};
use k8s::sim::{replay, Replay};
use k8s::trace::Trace;
use k8s::Seconds;

const TRACE: &str = "testdata/queue-depth-burst.csv";

/// The recorded trace must be the scenario the assertions are about.
fn burst() -> Trace {
    let trace = Trace::load(TRACE).expect("trace loads");
    let (at, peak) = trace.peak();
    assert!(peak >= 500.0, "a burst to 500 queued jobs, got {peak} at {at} s");
    assert_eq!(trace.at(0), 0.0, "starts idle");
    let drained = last_queued(&trace);
    assert!(
        trace.end() - drained >= 20 * 60,
        "20+ idle minutes after the drain"
    );
    trace
}

/// When the queue first needs the whole pool: `maxReplicas * averageValue` jobs (500).
fn burst_start(trace: &Trace, hpa: &Hpa) -> Seconds {
    let full = f64::from(hpa.max_replicas) * hpa.target_average_value;
    trace
        .samples()
        .iter()
        .find(|s| s.1 >= full)
        .expect("the trace has a burst")
        .0
}

/// The time of the last sample with jobs queued.
fn last_queued(trace: &Trace) -> Seconds {
    trace
        .samples()
        .iter()
        .rev()
        .find(|s| s.1 > 0.0)
        .map_or(0, |s| s.0)
}

/// The single Percent policy of a direction: the checks below are written for it.
fn percent_policy(policies: &[Policy]) -> Policy {
    match policies {
        [p] if p.kind == PolicyKind::Percent => *p,
        other => panic!("expected one Percent policy, got {other:?}"),
    }
}

/// How long the scale-up policy needs to take `from` replicas to `to`, one step per period,
/// plus the up-stabilization window the first step waits out: 2 -> 4 -> 8 -> 16 -> 32 -> 50
/// is five doublings of 30 s after a 30 s window.
fn scale_up_bound(hpa: &Hpa, from: u32, to: u32) -> Seconds {
    let policy = percent_policy(&hpa.scale_up.policies);
    let (mut replicas, mut steps) = (from, 0);
    while replicas < to {
        replicas = (f64::from(replicas) * (1.0 + f64::from(policy.value) / 100.0)).ceil() as u32;
        steps += 1;
    }
    hpa.scale_up.stabilization_window + steps * policy.period
}

fn run() -> (Hpa, Trace, Curve) {
    let hpa = Hpa::worker().expect("base/hpa.yaml loads");
    let trace = burst();
    let curve = replay(&hpa, &trace, Replay::default());
    (hpa, trace, curve)
}

#[test]
fn a_burst_scales_the_pool_up_within_the_policy_bound_and_back_down_to_the_floor() {
    let (hpa, trace, curve) = run();
    println!("{TRACE} through base/hpa.yaml; every rescale:\n{}", curve.table());
    let (floor, ceiling) = (hpa.min_replicas, hpa.max_replicas);
    let burst_at = burst_start(&trace, &hpa);
    let (_, peak) = trace.peak();

    // Idle, the pool sits at the floor, even with a few jobs waiting.
    assert_eq!(
        curve.ticks()[0].replicas,
        floor,
        "the first sync raises the Deployment to the floor"
    );
    let before_burst = curve.ticks().iter().take_while(|t| t.at < burst_at);
    assert!(
        before_burst.clone().all(|t| t.replicas == floor),
        "the floor holds before the burst"
    );

    // The burst: enough workers for it, within the bound the scale-up policy sets.
    let needed = ((peak / hpa.target_average_value).ceil() as u32).min(ceiling);
    assert_eq!(needed, 50, "500 jobs at 10 per worker need the ceiling");
    let reached = curve
        .first_from(burst_at, |t| t.replicas >= needed)
        .expect("the pool reaches the burst's size");
    let took = reached.at - burst_at;
    let bound = scale_up_bound(&hpa, floor, needed);
    println!("reached {needed} replicas {took} s after the burst (bound {bound} s)");
    assert!(
        took <= bound,
        "took {took} s to reach {needed} replicas; the policy allows {bound} s"
    );
    assert!(took <= 3 * 60, "took {took} s, more than 3 minutes");

    // Never outside the bounds, from the first sync on.
    curve.check_within(floor, ceiling).unwrap();

    // Back at the floor once idle, and still there at the end.
    let end = curve.ticks().last().unwrap();
    assert_eq!(end.replicas, floor, "ends at the floor");
    let at_floor = curve
        .last(|t| t.replicas != floor)
        .map_or(0, |t| t.at + SYNC_PERIOD);
    println!(
        "back at {floor} replicas at {}, {} after the queue emptied",
        clock(at_floor),
        clock(at_floor - last_queued(&trace))
    );
}

#[test]
fn the_pool_does_not_shrink_before_the_scale_down_window_has_passed() {
    let (hpa, trace, curve) = run();
    let window = hpa.scale_down.stabilization_window;
    assert_eq!(window, 600);
    curve.check_scale_down_stabilized(window).unwrap();

    // In particular: no worker goes until 10 minutes after the last sync that still wanted
    // the burst's full pool.
    let burst_at = burst_start(&trace, &hpa);
    let last_full = curve
        .last(|t| t.at >= burst_at && t.proposal.is_some_and(|p| p >= hpa.max_replicas))
        .expect("the burst proposed the ceiling")
        .at;
    let first_down = curve
        .changes()
        .into_iter()
        .find(|c| c.to < c.from)
        .expect("the pool shrinks again")
        .at;
    println!(
        "last full-size proposal at {}, first scale-down at {}",
        clock(last_full),
        clock(first_down)
    );
    assert!(
        first_down >= last_full + window,
        "scaled down at {} but the burst's proposal at {} was less than {window} s old",
        clock(first_down),
        clock(last_full)
    );
}

#[test]
fn the_pool_shrinks_at_most_a_quarter_per_two_minutes() {
    let (hpa, _, curve) = run();
    let policy = percent_policy(&hpa.scale_down.policies);
    assert_eq!((policy.value, policy.period), (25, 120));
    curve.check_scale_down_rate(policy.value, policy.period).unwrap();
}

#[test]
fn the_pool_does_not_flap() {
    let (hpa, _, curve) = run();
    curve
        .check_no_flapping(hpa.scale_down.stabilization_window)
        .unwrap();
    // This trace has one burst: one climb, one descent, however the queue wobbles on the way.
    assert_eq!(curve.reversals(), 1, "\n{}", curve.table());
}

/// The checks above have teeth: the same burst through an HPA without scale-down
/// stabilization, and with a fast scale-down policy, breaks them.
#[test]
fn without_stabilization_the_same_burst_breaks_the_checks() {
    let hpa = unstabilized();
    let curve = replay(&hpa, &burst(), Replay::default());
    assert!(
        curve.check_scale_down_stabilized(600).is_err(),
        "\n{}",
        curve.table()
    );
    assert!(
        curve.check_scale_down_rate(25, 120).is_err(),
        "\n{}",
        curve.table()
    );
}

/// A queue that swings between 400 and 150 jobs every 90 s, for half an hour.
fn wobbling() -> Trace {
    let samples: String = (0..=1800)
        .step_by(15)
        .map(|t| format!("{t},{}\n", if (t / 90) % 2 == 0 { 400 } else { 150 }))
        .collect();
    Trace::parse(&samples, "wobble.csv".into()).unwrap()
}

#[test]
fn a_wobbling_queue_does_not_flap_the_pool() {
    let hpa = Hpa::worker().unwrap();
    let window = hpa.scale_down.stabilization_window;
    let curve = replay(&hpa, &wobbling(), Replay::default());
    curve.check_no_flapping(window).unwrap();
    assert_eq!(curve.reversals(), 0, "it grows once and holds\n{}", curve.table());

    // Without stabilization the same queue drags the pool up and down: the check notices.
    let flapping = replay(&unstabilized(), &wobbling(), Replay::default());
    assert!(
        flapping.check_no_flapping(window).is_err(),
        "\n{}",
        flapping.table()
    );
}

/// The worker HPA with its scale-down window and rate limit taken away.
fn unstabilized() -> Hpa {
    let mut hpa = Hpa::worker().unwrap();
    hpa.scale_down.stabilization_window = 0;
    hpa.scale_down.policies = vec![Policy {
        kind: PolicyKind::Percent,
        value: 100,
        period: 15,
    }];
    hpa
}
