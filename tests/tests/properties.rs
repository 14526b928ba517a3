//! Property tests: the self-healing runner holds its invariants under any fault schedule.
//!
//! A schedule is data, not a seed: a list of up to five timed fault events (kind,
//! target, onset, duration and the kind's parameters) over the short world in
//! `tests/fixtures/short-world.toml`. proptest shrinks a failing schedule by dropping
//! events and pulling onsets, durations and parameters toward their smallest values;
//! every failing case is written out as a scenario file (the fixture's text with the
//! schedule as its `[[faults]]` and the seed in `[world]`) that `sim run` reproduces,
//! and the last one written is the minimal case.
//!
//! Invariants checked (all but the first from `sim::metrics::evaluate`):
//! - no silent loss *while the world is healthy*: every lost slot (due, no output,
//!   no alert; the metrics' definition) must fall inside some fault's exposure, from
//!   one run deadline before its onset to `recovery_bound` after it heals. Why not
//!   `lost_runs == 0`: the self-healing runner alerts only after a job's heartbeat
//!   threshold (two intervals), by design, so one slot missed during an outage is
//!   never announced; a 16-minute connection-reset spell already loses a slot that
//!   way (tests/regressions/reset-breaker-gives-up.toml), and so did 60% of 120
//!   random schedules. A rate bound would hide a loss on a quiet afternoon among
//!   losses during outages; the exposure rule does not. The fixture keeps the
//!   metrics' default 2% bound for `sim run`; the property does not use it.
//! - `no_duplicate_side_effect`, `no_action_outside_window`,
//!   `no_call_with_expired_token`: zero.
//! - `no_call_to_open_breaker`: zero requests reached a service while its breaker was
//!   open; the half-open probe happens after the breaker left `open`, so it is not one.
//! - `recovers_after_faults_heal`: every job produced output within the fixture's
//!   `recovery_bound` of its first runnable slot after the last fault healed. The
//!   generator keeps every fault healed by hour 8 so this is always checked.
//!
//! Committed regressions: proptest's own seeds in `proptest-regressions/`, and every
//! scenario file in `tests/regressions/`, which `committed_regressions_hold` runs (each
//! file says which bug it caught). A failure found and not fixed yet fails the suite:
//! there is no folder of excused cases.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use sim::driver::simulate;
use sim::metrics::{Verdict, evaluate};
use sim::scenario::write::{with_faults, with_seed};
use sim::scenario::{FaultSpec, FaultSpecKind, Scenario};

/// The world the schedules run in.
const WORLD: &str = include_str!("../fixtures/short-world.toml");
/// Its APIs (targets of API-level faults).
const APIS: [&str; 3] = ["shop", "blog", "mail"];
/// Its token server.
const OAUTH: &str = "acme";
/// Property cases per run: each is a 12-hour world.
const CASES: u32 = 24;

fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

/// API-level kinds (on an API or, for network-level kinds, the token server), token
/// revocation, and a runner crash.
fn kind() -> impl Strategy<Value = FaultSpecKind> {
    use FaultSpecKind as K;
    prop::sample::select(vec![
        K::Reset,
        K::Stall,
        K::ServerError,
        K::RateLimitStorm,
        K::Dns,
        K::Slow,
        K::Down,
        K::Partition,
        K::SilentDeath,
        K::TokenRevoke,
        K::Crash,
    ])
}

/// Where a kind may strike: network-level kinds also hit the token server.
fn targets(kind: FaultSpecKind) -> Vec<&'static str> {
    use FaultSpecKind as K;
    match kind {
        K::Crash => vec!["runner"],
        K::TokenRevoke => vec![OAUTH],
        K::SilentDeath | K::RateLimitStorm | K::ServerError | K::Slow => APIS.to_vec(),
        _ => APIS.iter().copied().chain([OAUTH]).collect(),
    }
}

prop_compose! {
    /// One timed fault event. Onsets are within the first six hours and durations at
    /// most two hours, so everything has healed by hour eight of twelve.
    fn fault_event()(kind in kind())(
        target in prop::sample::select(targets(kind)),
        kind in Just(kind),
        at in 0u64..=360,
        duration in 1u64..=120,
        probability in 1u32..=20,
        stall in 5u64..=60,
        latency in 1u64..=20,
        status in prop::sample::select(vec![500u16, 502, 503, 504]),
        retry_after in 10u64..=600,
        restart_after in 10u64..=900,
    ) -> FaultSpec {
        let mut f = FaultSpec::new(kind, target);
        f.at = minutes(at);
        // Instantaneous kinds: a duration would only confuse the written file.
        f.duration = match kind {
            FaultSpecKind::TokenRevoke | FaultSpecKind::Crash => Duration::ZERO,
            _ => minutes(duration),
        };
        match kind {
            FaultSpecKind::Reset | FaultSpecKind::ServerError => {
                f.probability = f64::from(probability) / 20.0;
            }
            FaultSpecKind::Stall => {
                f.probability = f64::from(probability) / 20.0;
                f.stall = Duration::from_secs(stall);
            }
            FaultSpecKind::Slow => f.latency = Duration::from_secs(latency),
            FaultSpecKind::RateLimitStorm => f.retry_after = Duration::from_secs(retry_after),
            FaultSpecKind::Crash => f.restart_after = Duration::from_secs(restart_after),
            _ => {}
        }
        if kind == FaultSpecKind::ServerError {
            f.status = status;
        }
        f
    }
}

/// A fault schedule: zero to five events.
fn schedule() -> impl Strategy<Value = Vec<FaultSpec>> {
    prop::collection::vec(fault_event(), 0..6)
}

/// The scenario file for a schedule and seed: what the test runs and what it writes.
fn scenario_text(faults: &[FaultSpec], seed: u64) -> String {
    with_seed(&with_faults(WORLD, faults), seed)
}

fn parse(text: &str, name: &str) -> Scenario {
    match Scenario::parse(text, Path::new(&format!("{name}.toml")), None) {
        Ok(s) => s,
        Err(d) => panic!("generated scenario `{name}` does not parse:\n{d}\n---\n{text}"),
    }
}

/// Runs a scenario with the profile its file names (self-healing unless it says
/// otherwise, as `sim run` does) and its own seed; returns every broken property, one
/// line each (empty when all held).
fn check(scenario: &Scenario) -> Vec<String> {
    let run = match simulate(scenario, scenario.world.seed, scenario.profile, &mut |_| {}) {
        Ok(r) => r,
        Err(e) => panic!("simulation of `{}` failed: {e}", scenario.name),
    };
    let verdict = evaluate(scenario, &run);
    let mut problems = violations(&verdict);
    problems.extend(unexplained_losses(scenario, &verdict));
    problems
}

/// Every invariant of the verdict that failed, except the lost-rate bound (see the
/// module docs: [`unexplained_losses`] stands in for it).
fn violations(verdict: &Verdict) -> Vec<String> {
    verdict
        .invariants
        .iter()
        .chain(verdict.liveness.as_ref())
        .filter(|i| !i.holds && i.name != "no_silent_loss")
        .map(|i| format!("{}: {}", i.name, i.detail))
        .collect()
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// When each fault's effects may show: one run deadline before its onset (a run in
/// progress meets it) to `recovery_bound` after it heals.
fn exposures(scenario: &Scenario, lead: chrono::Duration) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let start = scenario.world.start;
    let bound = chrono(scenario.invariants.recovery_bound);
    scenario
        .faults
        .iter()
        .map(|f| {
            let onset = start + chrono(f.at);
            let heal = match f.every {
                Some(_) => start + chrono(scenario.world.duration),
                None => onset + chrono(f.duration.max(f.restart_after)),
            };
            (onset - lead, heal + bound)
        })
        .collect()
}

/// Lost slots (as the metrics count them: [`sim::metrics::Verdict::lost_slots`]) that
/// no fault explains.
fn unexplained_losses(scenario: &Scenario, verdict: &Verdict) -> Vec<String> {
    let lead = scenario
        .config
        .jobs
        .iter()
        .map(|j| chrono(j.deadline))
        .max()
        .unwrap_or_default();
    let exposed = exposures(scenario, lead);
    verdict
        .lost_slots
        .iter()
        .filter_map(|entry| {
            let (job, at) = entry.split_once('@')?;
            let slot = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
            if exposed.iter().any(|(a, b)| slot >= *a && slot <= *b) {
                return None;
            }
            let local = slot.with_timezone(&scenario.world.zone).format("%H:%M");
            Some(format!(
                "no_silent_loss_while_healthy: {job} lost its {local} slot with no fault active"
            ))
        })
        .collect()
}

/// `<target>/proptest-failures`, next to the test binary's own target directory.
fn failures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("proptest-failures");
    }
    // The binary lives in <target>/<profile>/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("proptest-failures")
}

/// Writes a failing case as a scenario file (overwriting the previous one, so the last
/// written is proptest's minimal case) and returns its path.
fn write_failure(name: &str, text: &str, problems: &[String]) -> PathBuf {
    let dir = failures_dir();
    let path = dir.join(format!("{name}.toml"));
    let mut out = String::from("# A fault schedule the self-healing profile failed on.\n");
    out.push_str("# Violated:\n");
    for p in problems {
        out.push_str(&format!("#   {p}\n"));
    }
    out.push_str(&format!(
        "# Reproduce: cargo run --release -p sim -- run {}\n\n",
        path.display()
    ));
    out.push_str(text);
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &out)) {
        eprintln!("failed to write {}: {e}", path.display());
    }
    path
}

/// The same schedules on every run (CI must not flake on a case it met by chance);
/// set `PROPTEST_RNG_SEED` (and `PROPTEST_CASES`) to explore others.
const RNG_SEED: u64 = 0x5eed_fa17;

fn config() -> ProptestConfig {
    // `default()` reads the PROPTEST_* environment variables.
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(RNG_SEED);
    }
    // Each case is a 12-hour world; shrinking needs no more than this to converge.
    config.max_shrink_iters = 256;
    // `tests/proptest-regressions/properties.txt` (the default looks for a `src/`
    // above the test file and would not find this crate's).
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proptest-regressions/properties.txt"
    ))));
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn self_healing_holds_every_invariant_under_any_fault_schedule(
        faults in schedule(),
        seed in 1u64..=1000,
    ) {
        let name = "self-healing-schedule";
        let text = scenario_text(&faults, seed);
        let scenario = parse(&text, name);
        prop_assert_eq!(&scenario.faults, &faults, "the written file must say what runs");
        prop_assert!(
            scenario.faults_heal_at() + scenario.invariants.recovery_bound + minutes(60)
                < scenario.world.duration,
            "every generated schedule heals in time for the liveness check"
        );
        let problems = check(&scenario);
        if !problems.is_empty() {
            let path = write_failure(name, &text, &problems);
            eprintln!(
                "invariants violated:\n  {}\nscenario written to {}\nreproduce: cargo run --release -p sim -- run {}",
                problems.join("\n  "),
                path.display(),
                path.display()
            );
            prop_assert!(false, "{}", problems.join("; "));
        }
    }
}

/// The committed failing cases, each a scenario file `sim run` runs as it is.
fn regression_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn committed_regressions_hold() {
    let files = regression_files();
    assert!(
        !files.is_empty(),
        "tests/regressions/ must hold at least one scenario"
    );
    let mut failed = Vec::new();
    for path in &files {
        let scenario = match Scenario::load(path) {
            Ok(s) => s,
            Err(d) => panic!("{d}"),
        };
        let problems = check(&scenario);
        if !problems.is_empty() {
            failed.push(format!("{}:\n  {}", path.display(), problems.join("\n  ")));
        }
    }
    assert!(
        failed.is_empty(),
        "regressions failed again:\n{}",
        failed.join("\n")
    );
}

#[test]
fn a_violation_is_caught_and_written_as_a_scenario_that_reproduces() {
    // The naive profile (no breakers, no timeouts, no alerts) on a token server that
    // answers nothing for two hours: the check must see it, and the file it writes
    // must run to the same verdict.
    let mut f = FaultSpec::new(FaultSpecKind::SilentDeath, "shop");
    f.at = minutes(60);
    f.duration = minutes(120);
    let text = scenario_text(&[f], 3).replace(
        "[invariants]",
        "[profile]\nname = \"naive\"\n\n[invariants]",
    );
    let scenario = parse(&text, "naive-silent-death");
    let problems = check(&scenario);
    assert!(
        !problems.is_empty(),
        "the naive profile must fail this schedule"
    );
    let path = write_failure("self-check-naive", &text, &problems);
    let again = match Scenario::load(&path) {
        Ok(s) => s,
        Err(d) => panic!("{d}"),
    };
    assert_eq!(again.faults, scenario.faults);
    assert_eq!(again.profile, scenario.profile);
    assert_eq!(
        check(&again),
        problems,
        "the written file reproduces the failure"
    );
}

#[test]
fn a_loss_on_a_healthy_day_is_not_excused() {
    // The checker itself: a lost slot with no fault near it is reported, and the same
    // slot under a fault's exposure is excused.
    let base = parse(WORLD, "short-world");
    let slot = base.world.start + chrono::Duration::hours(3);
    let verdict = Verdict {
        metrics: Default::default(),
        invariants: Vec::new(),
        liveness: None,
        lost_slots: vec![format!("email-monitor@{}", slot.to_rfc3339())],
    };
    let problems = unexplained_losses(&base, &verdict);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("no_silent_loss_while_healthy: email-monitor")),
        "{problems:?}"
    );
    let mut f = FaultSpec::new(FaultSpecKind::Slow, "mail");
    f.at = minutes(170);
    f.duration = minutes(20);
    let covered = parse(&with_faults(WORLD, &[f]), "short-world");
    assert!(
        unexplained_losses(&covered, &verdict).is_empty(),
        "a fault over the slot excuses it"
    );
}
