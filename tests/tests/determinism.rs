//! Determinism: a scenario and a seed decide the whole run, down to the trace hash.
//!
//! A failing seed is only worth printing if running it again gives the same run; and a
//! seed that changes nothing would make every sweep one run repeated. Both are checked
//! on the short world (with faults that exercise retries, breakers, a crash and token
//! refreshes) and on the embedded default scenario.

use std::path::Path;
use std::time::Duration;

use sim::driver::simulate;
use sim::scenario::write::with_faults;
use sim::scenario::{FaultSpec, FaultSpecKind, Profile, Scenario};

const WORLD: &str = include_str!("../fixtures/short-world.toml");

/// The short world with a few faults that make the runner draw jitter, retry, trip a
/// breaker and restart.
fn short_world_with_faults() -> Scenario {
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let mut reset = FaultSpec::new(FaultSpecKind::Reset, "blog");
    reset.at = minutes(60);
    reset.duration = minutes(90);
    reset.probability = 0.4;
    let mut down = FaultSpec::new(FaultSpecKind::Down, "shop");
    down.at = minutes(200);
    down.duration = minutes(40);
    let mut crash = FaultSpec::new(FaultSpecKind::Crash, "runner");
    crash.at = minutes(301);
    crash.restart_after = Duration::from_secs(120);
    let text = with_faults(WORLD, &[reset, down, crash]);
    match Scenario::parse(&text, Path::new("short-world.toml"), None) {
        Ok(s) => s,
        Err(d) => panic!("{d}"),
    }
}

fn trace_hash(scenario: &Scenario, seed: u64, profile: &str) -> (String, usize) {
    let profile = Profile::named(profile).unwrap_or_else(|| panic!("no profile {profile}"));
    match simulate(scenario, seed, profile, &mut |_| {}) {
        Ok(run) => {
            let trace = run.world.trace();
            (trace.digest(), trace.snapshot().len())
        }
        Err(e) => panic!("simulation failed: {e}"),
    }
}

#[test]
fn the_same_scenario_and_seed_give_the_same_trace_hash() {
    let short = short_world_with_faults();
    let default = Scenario::default_scenario();
    let cases = [
        (&short, 1, "self-healing"),
        (&short, 7, "self-healing"),
        (&short, 7, "naive"),
        (&default, 3, "self-healing"),
    ];
    for (scenario, seed, profile) in cases {
        let (a, events) = trace_hash(scenario, seed, profile);
        let (b, _) = trace_hash(scenario, seed, profile);
        assert!(
            events > 100,
            "{} seed {seed}: a trace worth hashing ({events} events)",
            scenario.name
        );
        assert_eq!(
            a, b,
            "{} seed {seed} {profile}: two runs differ",
            scenario.name
        );
    }
}

#[test]
fn different_seeds_give_different_trace_hashes() {
    let short = short_world_with_faults();
    let hashes: Vec<String> = (1..=4)
        .map(|seed| trace_hash(&short, seed, "self-healing").0)
        .collect();
    for (i, a) in hashes.iter().enumerate() {
        for (j, b) in hashes.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "seeds {} and {} gave the same trace", i + 1, j + 1);
        }
    }
}

/// The short world with a crash inside a tick (at a millisecond instant) and one at a
/// durable operation: the runner host's reaper and the crash points must not make a
/// run depend on anything but the seed.
fn short_world_with_crashes_inside_ticks(op: u64) -> Scenario {
    let mut instant = FaultSpec::new(FaultSpecKind::Crash, "runner");
    instant.at = Duration::from_millis(95 * 60_000 + 12_345);
    instant.restart_after = Duration::from_secs(90);
    let mut at_op = FaultSpec::new(FaultSpecKind::Crash, "runner");
    at_op.at = Duration::from_secs(200 * 60);
    at_op.restart_after = Duration::from_secs(60);
    at_op.crash_point = Some(sim::scenario::CrashPoint { op, after: true });
    let text = with_faults(WORLD, &[instant, at_op]);
    match Scenario::parse(&text, Path::new("short-world.toml"), None) {
        Ok(s) => s,
        Err(d) => panic!("{d}"),
    }
}

#[test]
fn crashes_inside_ticks_replay_byte_for_byte() {
    let s = short_world_with_crashes_inside_ticks(9);
    let (a, events) = trace_hash(&s, 5, "self-healing");
    assert!(events > 100, "{events} events");
    assert_eq!(a, trace_hash(&s, 5, "self-healing").0, "two runs differ");
    let other = short_world_with_crashes_inside_ticks(10);
    assert_ne!(
        a,
        trace_hash(&other, 5, "self-healing").0,
        "a crash one durable operation later changed nothing"
    );
}
