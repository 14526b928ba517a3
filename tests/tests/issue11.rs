//! Issue 11 in the simulator: cases 2, 4 and 5, each world run with every pattern on
//! (self-healing) and with the one pattern the case is about switched off (and naive),
//! judged from what the services saw (the world's ledger and the judge's measures,
//! never the runner's events).
//!
//! - case 2 (`dns-flap-in-phase`): DNS fails 2 of every 5 minutes, in step with a
//!   15-minute schedule; probes on their own clock should get most slots through
//!   (not yet: that test is ignored, with the figures), and every slot lost to the
//!   flap is reported.
//! - case 4 (`needs-upload-outage`): a publish that `needs` its upload; the upload's
//!   service answers 503 for an hour twice a day.
//! - case 5 (`dst-fall-back-new-york`, `dst-fall-back-berlin`): a 01:30-02:30 window on
//!   the fall-back night, in two zones.

mod common;

use chrono::{DateTime, Utc};
use sim::driver::{SimRun, simulate};
use sim::judge::Judgement;
use sim::metrics::{Verdict, evaluate};
use sim::scenario::{Profile, Scenario};

/// One world run under `profile`: the verdict, the judge's own findings and the run.
fn run(s: &Scenario, profile: &str) -> (Verdict, Judgement, SimRun) {
    let profile = Profile::named(profile).expect("known profile");
    let run = simulate(s, s.world.seed, profile, &mut |_| {}).expect("simulation runs");
    let verdict = evaluate(s, &run);
    // The same reading as the verdict's: alerts count only when the profile delivers
    // them (alerting belongs to the heartbeat pattern).
    let alerts = if run.profile.alerts_delivered() {
        run.operator.alerts()
    } else {
        Vec::new()
    };
    let judged = sim::metrics::judge_run(s, &run, &alerts);
    (verdict, judged, run)
}

/// Every safety invariant but the ones named holds, and so does liveness.
fn holds_except(name: &str, v: &Verdict, except: &[&str]) {
    for i in v.invariants.iter().chain(v.liveness.iter()) {
        if except.contains(&i.name.as_str()) {
            continue;
        }
        assert!(i.holds, "{name}: broke {}: {}", i.name, i.detail);
    }
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .expect("a valid instant")
}

/// Side effects the world applied in `[from, until)`, on any service.
fn applied_between(run: &SimRun, from: &str, until: &str) -> usize {
    let (from, until) = (at(from), at(until));
    run.world.ledger().with_entries(|entries| {
        entries
            .iter()
            .filter(|e| e.effect == sim::services::ledger::Effect::Applied)
            .filter(|e| e.at >= from && e.at < until)
            .count()
    })
}

/// Case 2, the part that holds today: every slot the flap costs is reported (the
/// runs wait deferred behind the breaker's gate, and the monitor says so once a run
/// has waited longer than the job's threshold), none lost; naive loses them all.
#[test]
fn case2_every_slot_the_flap_costs_is_reported() {
    let s = common::load("dns-flap-in-phase");
    let (healing, _, _) = run(&s, "self-healing");
    let (naive, _, _) = run(&s, "naive");
    holds_except("self-healing", &healing, &[]);
    assert_eq!(healing.metrics.lost_runs, 0);
    assert!(naive.metrics.lost_runs > healing.metrics.lost_runs);
    assert_ne!(naive.exit_code(), 0);
}

/// Case 2, the output: probes on their own clock with cooldowns that do not keep the
/// flap's phase. Measured on this world (seed 1, 95 slots): self-healing 94 succeeded,
/// no-probes 87, no-breakers and naive 0 (their retries are spent inside a failing
/// phase). Before the breaker's cooldown took equal jitter (at most 10% on top of 5, 10,
/// 20, 40 minutes, all multiples of the 5-minute flap) every probe landed in a failing
/// phase and self-healing got 12 (24 once a slot ran its own run after resuming an
/// open one).
#[test]
fn case2_probes_on_their_own_clock_outlast_a_flap_in_phase() {
    let s = common::load("dns-flap-in-phase");
    let (healing, _, _) = run(&s, "self-healing");
    holds_except("self-healing", &healing, &[]);
    let m = &healing.metrics;
    assert!(
        m.succeeded_runs * 4 >= m.scheduled_runs * 3,
        "self-healing: most slots produce output ({} of {})",
        m.succeeded_runs,
        m.scheduled_runs
    );
    for other in ["naive", "no-breakers"] {
        let (v, _, _) = run(&s, other);
        assert!(
            v.metrics.succeeded_runs * 2 <= m.succeeded_runs,
            "{other}: far fewer slots produce output ({} against {})",
            v.metrics.succeeded_runs,
            m.succeeded_runs
        );
    }
}

/// Case 4: no publish without its upload at the services with `needs` on; with it off
/// the publishes of the outage's slots go out, linking to uploads media.sim never got.
#[test]
fn case4_a_publish_never_goes_out_without_its_upload() {
    let s = common::load("needs-upload-outage");
    let (healing, healing_j, _) = run(&s, "self-healing");
    let (no_needs, no_needs_j, _) = run(&s, "no-needs");
    let (naive, naive_j, _) = run(&s, "naive");
    holds_except("self-healing", &healing, &[]);
    assert_eq!(healing_j.unmet_prerequisites, 0, "self-healing");
    // The outage's slots are reported (an alert), not lost and not output.
    assert!(
        healing.metrics.failed_runs > 0 && healing.metrics.lost_runs == 0,
        "self-healing: {:?}",
        healing.metrics
    );
    // Without needs: a publish for every slot whose upload was skipped, each one a
    // "degraded" slot to the runner and a dangling post to the world.
    assert!(
        no_needs_j.unmet_prerequisites > 0,
        "no-needs published without its upload"
    );
    assert_eq!(
        no_needs_j.unmet_prerequisites, no_needs.metrics.degraded_runs,
        "every degraded slot is a publish without its upload"
    );
    // Naive stops at the failed upload (one error boundary), so it publishes nothing
    // dangling either; it loses those slots without a word instead.
    assert_eq!(naive_j.unmet_prerequisites, 0, "naive");
    assert!(naive.metrics.lost_runs > healing.metrics.lost_runs);
    assert_ne!(naive.exit_code(), 0);
}

/// Case 5, New York: 2026-11-01, 02:00 EDT falls back to 01:00 EST. The window is open
/// 01:30-02:00 EDT (05:30-06:00Z) and 01:30-02:30 EST (06:30-07:30Z); the wall clock
/// reads outside it from 01:00 to 01:30 EST (06:00-06:30Z).
#[test]
fn case5_new_york_publishes_only_while_the_wall_clock_is_inside_the_window() {
    let s = common::load("dst-fall-back-new-york");
    let (healing, healing_j, healing_run) = run(&s, "self-healing");
    let (off, off_j, off_run) = run(&s, "no-windows");
    holds_except("self-healing", &healing, &[]);
    assert_eq!(healing_j.window_violations, 0);
    // Open twice that night, and used both times.
    let first = applied_between(&healing_run, "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z");
    let rewound = applied_between(&healing_run, "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z");
    let second = applied_between(&healing_run, "2026-11-01T06:30:00Z", "2026-11-01T07:30:00Z");
    assert_eq!((first, rewound, second), (2, 0, 4), "self-healing");
    assert_eq!(healing.metrics.succeeded_runs, 6);
    // Without windows the job publishes all day, the rewound half hour included.
    assert!(off_j.window_violations > 0);
    assert!(
        applied_between(&off_run, "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z") > 0,
        "no-windows published while the wall clock read 01:00-01:30 EST"
    );
    assert_ne!(off.exit_code(), 0);
}

/// Case 5, Berlin: 2026-10-25, 03:00 CEST falls back to 02:00 CET. On the wall clock the
/// window is open 01:30-02:30 CEST (23:30-00:30Z) and again 02:00-02:30 CET
/// (01:00-01:30Z), and closed 02:30-03:00 CEST (00:30-01:00Z).
///
/// The runner once published in the first spell only (it resolved the window's end,
/// 02:30, which happens twice, to its earlier instant), and the judge's wall-clock
/// reference counted the 02:00 and 02:15 CET slots as due and lost. Windows are now
/// open exactly while the wall clock reads inside them: both spells are used.
#[test]
fn case5_berlin_publishes_only_while_the_wall_clock_is_inside_the_window() {
    let s = common::load("dst-fall-back-berlin");
    let (healing, healing_j, healing_run) = run(&s, "self-healing");
    let (off, off_j, off_run) = run(&s, "no-windows");
    holds_except("self-healing", &healing, &[]);
    assert_eq!(healing_j.window_violations, 0);
    let first = applied_between(&healing_run, "2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z");
    let closed = applied_between(&healing_run, "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z");
    let second = applied_between(&healing_run, "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z");
    assert_eq!((first, closed, second), (4, 0, 2), "self-healing");
    assert!(healing.lost_slots.is_empty(), "{:?}", healing.lost_slots);
    assert!(off_j.window_violations > 0);
    assert!(
        applied_between(&off_run, "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z") > 0,
        "no-windows published while the wall clock read 02:30-03:00 CEST"
    );
    assert_ne!(off.exit_code(), 0);
}
