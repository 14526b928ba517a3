//! Fault switches at any instant (issue 12): a fault that starts and ends inside one
//! simulation tick is on exactly while it should be, not rounded to tick boundaries.
//!
//! `scenarios/crash-mid-commit.toml` (60 s ticks) runs a three-step job every 15
//! minutes; its calls go out in the first second of a minute. The test finds when the
//! 07:15 run's `render` call reaches the API in a world without faults, then runs the
//! world again with every request to the API reset from 200 ms before that instant to
//! 200 ms after it. The world's ledger must show resets, all inside that window. With
//! switches landing on tick boundaries (the simulator before this change) the fault was
//! switched on and off at the same boundary, 07:16:00, and no request was ever reset.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sim::driver::simulate;
use sim::faults::FaultKind;
use sim::scenario::{FaultSpec, FaultSpecKind, Profile, Scenario};
use sim::services::ledger::AnsweredBy;

use common::load;

fn run(s: &Scenario) -> sim::driver::SimRun {
    let profile = Profile::named("self-healing").expect("profile");
    simulate(s, s.world.seed, profile, &mut |_| {}).expect("simulation runs")
}

#[test]
fn a_fault_inside_one_tick_is_on_exactly_for_its_window() {
    let base = Scenario {
        faults: Vec::new(),
        ..load("crash-mid-commit")
    };
    let start = base.world.start;
    let quiet = run(&base);
    let run_at = start + chrono::Duration::minutes(75);
    let render: DateTime<Utc> = quiet.world.ledger().with_entries(|entries| {
        entries
            .iter()
            .find(|e| e.path == "/v1/renders" && e.at >= run_at)
            .map(|e| e.at)
            .expect("the 07:15 run renders")
    });
    let into_minute = (render - run_at).num_milliseconds();
    assert!(
        (300..59_000).contains(&into_minute),
        "the render call should land inside the tick, {into_minute} ms after 07:15"
    );

    let from = render - chrono::Duration::milliseconds(200);
    let until = render + chrono::Duration::milliseconds(200);
    let mut reset = FaultSpec::new(FaultSpecKind::Reset, "blog");
    reset.at = (from - start).to_std().expect("after the start");
    reset.duration = Duration::from_millis(400);
    reset.probability = 1.0;
    let faulty = run(&Scenario {
        faults: vec![reset],
        ..base.clone()
    });

    let resets: Vec<DateTime<Utc>> = faulty.world.ledger().with_entries(|entries| {
        entries
            .iter()
            .filter(|e| e.answered_by == AnsweredBy::Fault(FaultKind::Reset))
            .map(|e| e.at)
            .collect()
    });
    assert!(
        !resets.is_empty(),
        "no request was reset: the fault never switched on inside its tick"
    );
    for at in &resets {
        assert!(
            *at >= from && *at < until,
            "reset at {at} outside the fault's window {from} .. {until}"
        );
    }
    // The world's timeline dates the switches at their own instants.
    let dated = |what: &str| {
        faulty
            .timeline
            .iter()
            .find(|e| e.what == what && e.detail.contains("reset"))
            .map(|e| e.at)
    };
    assert_eq!(dated("fault_start"), Some(from));
    assert_eq!(dated("fault_end"), Some(until));
    // The runner retried the reset call after the window and the run still posted.
    let posts_after = faulty.world.ledger().with_entries(|entries| {
        entries
            .iter()
            .filter(|e| e.path == "/v1/posts" && e.at >= run_at && e.status == 200)
            .filter(|e| e.at < run_at + chrono::Duration::minutes(15))
            .count()
    });
    assert_eq!(posts_after, 1, "the 07:15 run posts once");
}
