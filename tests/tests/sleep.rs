//! Issue 13: the runner host sleeps (5 minutes, 2 hours, 3 days) or its wall clock
//! steps (+1 h, -1 h), in the simulator, both ways on the same seed.
//!
//! Measured from what the world's services saw, never from the runner's events: the
//! mail API's record of the one-minute poller's calls (world time), its side effects
//! and token checks, plus the safety invariants of `sim::metrics`, `no_silent_loss`
//! included: the judge counts a slot the host slept through and the catch-up policy did
//! not owe as missed while the host was away (`host_away_runs`), not lost, and judges
//! the one catch-up `latest` owes like any slot.
//!
//! A host whose wall clock the world stepped is judged on the host's timeline (the
//! schedule is written in the machine's clock; `sim::judge::host`): a slot is due once
//! if the host clock reached it, work done for it again after a backward step is a slot
//! run twice (a duplicate), and host times a forward step jumped over are judged as a
//! sleep's. Self-healing holds every invariant and liveness both ways; the naive runner
//! bursts after a forward step (as after a sleep: the same thing to a process) and
//! re-runs the hour its clock re-lives after a backward one (its monotonic count).

use std::path::Path;

use chrono::{DateTime, Utc};
use sim::driver::{SimRun, simulate};
use sim::metrics::{Verdict, evaluate, judge_run};
use sim::scenario::{Profile, Scenario};

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scenarios")
        .join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|d| panic!("{name} does not parse:\n{d}"))
}

fn run(s: &Scenario, profile: &str) -> (SimRun, Verdict) {
    let profile = Profile::named(profile).expect("known profile");
    let run = simulate(s, s.world.seed, profile, &mut |_| {}).expect("simulation runs");
    let verdict = evaluate(s, &run);
    (run, verdict)
}

/// World times of the poller's calls that the mail API saw.
fn polls(run: &SimRun) -> Vec<DateTime<Utc>> {
    let mut at: Vec<_> = run.apis["mail"]
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/inbox"))
        .map(|r| r.at)
        .collect();
    at.sort();
    at
}

/// The most polls in any one minute of world time (the poller is due once a minute).
fn worst_minute(polls: &[DateTime<Utc>]) -> usize {
    (0..polls.len())
        .map(|i| {
            polls[i..]
                .iter()
                .take_while(|t| **t < polls[i] + chrono::Duration::minutes(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Minutes of world time with no poll, outside `(quiet_from, quiet_until)`.
fn silent_minutes(
    polls: &[DateTime<Utc>],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    quiet: (DateTime<Utc>, DateTime<Utc>),
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    while t + chrono::Duration::minutes(1) <= until {
        let next = t + chrono::Duration::minutes(1);
        let excused = next > quiet.0 && t < quiet.1;
        if !excused && !polls.iter().any(|p| *p >= t && *p < next) {
            out.push(t);
        }
        t = next;
    }
    out
}

struct Case {
    name: &'static str,
    /// Slots the host slept through that the policy did not owe (the judge's count).
    away: u64,
    /// At most this many lost slots for self-healing, and the scenario's lost-task
    /// bound holds.
    max_lost: u64,
    /// When the fault lands, from the start.
    at: chrono::Duration,
    /// Connections the blog API reset on wake (a call in flight across the sleep).
    blog_resets: u64,
    /// World time the host is not expected to poll in, from the fault's onset.
    quiet: chrono::Duration,
    /// The naive runner's worst minute is at least this (its burst).
    naive_burst: Option<usize>,
    /// The naive runner ran at least this many slots twice (the judge's count on the
    /// host's timeline; zero: none).
    naive_twice: u64,
}

/// Checks both profiles; returns their verdicts (self-healing, naive).
fn check(case: &Case) -> (Verdict, Verdict) {
    let s = scenario(case.name);
    let (healing, verdict) = run(&s, "self-healing");
    for i in verdict.invariants.iter().chain(verdict.liveness.iter()) {
        assert!(
            i.holds,
            "{}: self-healing broke {}: {}",
            case.name, i.name, i.detail
        );
    }
    assert_eq!(verdict.metrics.duplicate_side_effects, 0, "{}", case.name);
    assert_eq!(
        verdict.metrics.host_away_runs, case.away,
        "{}: slots missed while asleep",
        case.name
    );
    assert!(
        verdict.metrics.lost_runs <= case.max_lost,
        "{}: lost {:?}",
        case.name,
        verdict.lost_slots
    );
    assert_eq!(verdict.metrics.token_expired_errors, 0, "{}", case.name);
    assert_eq!(verdict.metrics.rate_limit_violations, 0, "{}", case.name);
    let resets = healing.world.net_stats().host("blog.sim").resets;
    assert_eq!(resets, case.blog_resets, "{}: blog resets", case.name);
    let p = polls(&healing);
    // No burst: the slots slept through give one catch-up run, beside the slot due.
    let worst = worst_minute(&p);
    assert!(
        worst <= 2,
        "{}: self-healing polled {worst} times in a minute",
        case.name
    );
    // Liveness as the API saw it: a poll every minute, except while asleep (or while
    // a clock stepped back re-lives its hour) and the two minutes a wake may take.
    let onset = healing.start + case.at;
    let quiet = (onset, onset + case.quiet + chrono::Duration::minutes(3));
    let last = *p.last().expect("polls");
    let silent = silent_minutes(
        &p,
        healing.start + chrono::Duration::minutes(2),
        last,
        quiet,
    );
    assert!(
        silent.is_empty(),
        "{}: minutes with no poll: {silent:?}",
        case.name
    );

    let (naive, naive_verdict) = run(&s, "naive");
    // Slots the naive runner ran twice (on the host's timeline, after a backward step).
    let twice = judge_run(&s, &naive, &[]).slots_run_twice;
    // Beside those, the naive runner may apply a call twice (its immediate retry of a
    // call whose answer the sleep reset carries no idempotency key), never more than
    // self-healing's none plus the calls cut by a reset.
    let repeated = naive_verdict.metrics.duplicate_side_effects - twice;
    assert!(
        repeated <= case.blog_resets,
        "{}: naive duplicates {repeated} (at most {} calls were cut by the sleep)",
        case.name,
        case.blog_resets
    );
    if case.naive_twice == 0 {
        assert_eq!(twice, 0, "{}: naive slots run twice", case.name);
    } else {
        assert!(
            twice >= case.naive_twice,
            "{}: the naive runner ran {twice} slots twice",
            case.name
        );
        let broken = naive_verdict
            .invariants
            .iter()
            .find(|i| i.name == "no_duplicate_side_effect")
            .is_some_and(|i| !i.holds);
        assert!(broken, "{}: naive duplicates not flagged", case.name);
    }
    let naive_worst = worst_minute(&polls(&naive));
    eprintln!(
        "{}: worst minute self-healing {worst}, naive {naive_worst}; polls {} / {}; \
         self-healing lost {} away {} duplicates {}; naive lost {} away {} duplicates {} \
         (slots run twice {twice})",
        case.name,
        p.len(),
        polls(&naive).len(),
        verdict.metrics.lost_runs,
        verdict.metrics.host_away_runs,
        verdict.metrics.duplicate_side_effects,
        naive_verdict.metrics.lost_runs,
        naive_verdict.metrics.host_away_runs,
        naive_verdict.metrics.duplicate_side_effects,
    );
    match case.naive_burst {
        Some(least) => assert!(
            naive_worst >= least,
            "{}: the naive runner did not burst ({naive_worst} polls in its worst minute)",
            case.name
        ),
        None => assert!(naive_worst <= 2, "{}: {naive_worst}", case.name),
    }
    (verdict, naive_verdict)
}

#[test]
fn a_five_minute_sleep() {
    check(&Case {
        name: "sleep-5m",
        away: 5,
        max_lost: 0,
        at: chrono::Duration::minutes(4 * 60 + 7),
        blog_resets: 0,
        quiet: chrono::Duration::minutes(5),
        naive_burst: Some(4),
        naive_twice: 0,
    });
}

#[test]
fn a_two_hour_sleep() {
    check(&Case {
        name: "sleep-2h",
        away: 127,
        max_lost: 0,
        at: chrono::Duration::minutes(4 * 60 + 1),
        blog_resets: 1,
        quiet: chrono::Duration::hours(2),
        naive_burst: Some(30),
        naive_twice: 0,
    });
}

#[test]
fn a_three_day_sleep() {
    check(&Case {
        name: "sleep-3d",
        away: 4607,
        max_lost: 0,
        at: chrono::Duration::minutes(4 * 60 + 7),
        blog_resets: 0,
        quiet: chrono::Duration::days(3),
        naive_burst: Some(30),
        naive_twice: 0,
    });
}

/// A forward step jumps the host's clock over an hour: the judge reads those host
/// times as a sleep's (the catch-up `latest` owes is judged like any slot). The naive
/// runner sees what it sees after a sleep (the wall clock ran on, monotonic time did
/// not) and runs the hour back to back.
#[test]
fn a_clock_step_forward() {
    check(&Case {
        name: "clock-step-forward",
        // The poller's 60 slots of the hour jumped over, the publisher's 3 (its 11:00
        // is owed and run).
        away: 63,
        max_lost: 0,
        at: chrono::Duration::minutes(4 * 60 + 7),
        blog_resets: 0,
        quiet: chrono::Duration::zero(),
        naive_burst: Some(30),
        naive_twice: 0,
    });
}

/// A step back makes the host's clock re-live an hour it already ran. Self-healing
/// waits it out (its cursor never goes back and the journal refuses a settled slot):
/// no slot twice, nothing lost on the host's timeline, though the world's next hour
/// has no poll. The naive runner's monotonic count goes on polling every minute while
/// its clock re-reads the hour: it runs those slots again.
#[test]
fn a_clock_step_back() {
    check(&Case {
        name: "clock-step-back",
        away: 0,
        max_lost: 0,
        at: chrono::Duration::minutes(4 * 60 + 7),
        blog_resets: 0,
        quiet: chrono::Duration::hours(1),
        naive_burst: None,
        naive_twice: 55,
    });
}
