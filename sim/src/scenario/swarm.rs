//! Swarm worlds: the seed draws faults (which kinds, where, when, how often), so each
//! seed explores a different mix and a failing seed alone reproduces its world.
//!
//! Two uses: `sim replay <seed>` / `sim sweep --swarm` replace the default world's
//! faults with drawn ones; a scenario file with a `[swarm]` section keeps its explicit
//! timeline and the seed draws more faults on top of it:
//!
//! ```toml
//! [swarm]
//! kinds = ["reset", "stall", "dns"]   # what may be drawn (default: every kind below)
//! presence = 0.5                      # the chance each kind is drawn (default 0.5)
//! ```
//!
//! A drawn fault starts at a random instant (to the millisecond), not on a whole hour:
//! the hour comes from the kind stream as it always has, the offset inside the hour from
//! a stream of its own. Half the drawn crashes land at a durable operation instead (the
//! k-th store commit or file operation after that instant, before or after it), so a
//! swarm also crashes the runner inside its commit sequences.

use std::time::Duration;

use steadfast_core::env::{Rng, SeededRng};

use super::{CrashPoint, FaultSpec, FaultSpecKind, Scenario};

/// The kinds a swarm may draw, in drawing order (the order is part of what a seed
/// means: reordering it changes every swarm world).
pub const SWARM_KINDS: [FaultSpecKind; 11] = [
    FaultSpecKind::Reset,
    FaultSpecKind::Stall,
    FaultSpecKind::ServerError,
    FaultSpecKind::Dns,
    FaultSpecKind::Slow,
    FaultSpecKind::RateLimitStorm,
    FaultSpecKind::Down,
    FaultSpecKind::Partition,
    FaultSpecKind::TokenRevoke,
    FaultSpecKind::Crash,
    FaultSpecKind::MemoryLeak,
];

/// A drawn crash at a durable operation lands at most this many operations after its
/// instant (a few runs' worth of commits).
const MAX_DRAWN_OP: u64 = 200;
/// Kinds drawn only when a `[swarm]` section lists them (`kinds = ["sleep",
/// "clock_step"]`): the runner host's sleeps and wall-clock steps ([`crate::sleep`]).
pub const OPT_IN_KINDS: [FaultSpecKind; 2] = [FaultSpecKind::Sleep, FaultSpecKind::ClockStep];

/// `[swarm]`: what the seed may draw.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmSpec {
    /// The kinds that may be drawn.
    pub kinds: Vec<FaultSpecKind>,
    /// The chance each of them is drawn.
    pub presence: f64,
}

impl Default for SwarmSpec {
    fn default() -> Self {
        Self {
            kinds: SWARM_KINDS.to_vec(),
            presence: 0.5,
        }
    }
}

/// Replaces the faults of `base` with ones drawn from `seed`, and names it `swarm`.
pub fn swarm(base: &Scenario, seed: u64) -> Scenario {
    Scenario {
        name: "swarm".to_string(),
        file: None,
        faults: draw(base, &SwarmSpec::default(), seed),
        swarm: None,
        ..base.clone()
    }
}

/// The scenario as run with `seed`: its timeline plus, when it has a `[swarm]`
/// section, the faults the seed draws (the second value; empty without one).
pub fn with_seed(base: &Scenario, seed: u64) -> (Scenario, Vec<FaultSpec>) {
    let Some(spec) = &base.swarm else {
        return (base.clone(), Vec::new());
    };
    let drawn = draw(base, spec, seed);
    let mut s = base.clone();
    s.faults.extend(drawn.iter().cloned());
    (s, drawn)
}

/// Faults drawn from `seed` for the world of `base`.
pub fn draw(base: &Scenario, spec: &SwarmSpec, seed: u64) -> Vec<FaultSpec> {
    // A stream apart from the world's own, so the faults do not shift its draws.
    let rng = SeededRng::from_seed(seed ^ 0x5741_524d_5741_524d);
    // Instants and crash points from a stream of their own, so the kinds, targets and
    // hours a seed draws stay what they were before instants were drawn.
    let instants = SeededRng::from_seed(seed ^ 0x494e_5354_414e_5453);
    let hours = (base.world.duration.as_secs() / 3600).max(2);
    let apis: Vec<String> = base.apis.keys().cloned().collect();
    let oauth: Vec<String> = base.oauth.keys().cloned().collect();
    let pick = |items: &[String]| -> Option<String> {
        if items.is_empty() {
            None
        } else {
            Some(items[rng.between(0, items.len() as u64 - 1) as usize].clone())
        }
    };
    let hour = |h: u64| Duration::from_secs(h * 3600);
    let mut faults = Vec::new();
    // Opt-in kinds come after the default ones and draw nothing unless listed, so the
    // default spec's draws stay what they always were.
    let opt_in = OPT_IN_KINDS.into_iter().filter(|k| spec.kinds.contains(k));
    for kind in SWARM_KINDS.into_iter().chain(opt_in) {
        // Written so the default spec (0.5) draws exactly what `sim replay <seed>` has
        // always drawn: a kind is present when the draw lands in the top `presence`.
        let present = rng.unit() >= 1.0 - spec.presence;
        if !present || !spec.kinds.contains(&kind) {
            continue;
        }
        let target = match kind {
            FaultSpecKind::TokenRevoke => pick(&oauth),
            FaultSpecKind::Crash
            | FaultSpecKind::MemoryLeak
            | FaultSpecKind::Sleep
            | FaultSpecKind::ClockStep => Some("runner".to_string()),
            _ => pick(&apis),
        };
        let Some(target) = target else { continue };
        let offset = Duration::from_millis(instants.between(0, 3_599_999));
        let at = hour(rng.between(1, hours - 1)) + offset;
        let crash_point =
            (kind == FaultSpecKind::Crash && instants.unit() < 0.5).then(|| CrashPoint {
                op: instants.between(1, MAX_DRAWN_OP),
                after: instants.unit() < 0.5,
            });
        let duration = Duration::from_secs(rng.between(5, 180) * 60);
        let every = (rng.unit() < 0.5)
            .then(|| hour(rng.between(6, 48)))
            .filter(|e| *e > duration);
        faults.push(FaultSpec {
            kind,
            target,
            at,
            every,
            duration,
            probability: (rng.between(5, 80) as f64) / 100.0,
            stall: Duration::from_secs(rng.between(5, 60)),
            latency: Duration::from_secs(rng.between(1, 20)),
            status: [500, 502, 503, 504][rng.between(0, 3) as usize],
            retry_after: Duration::from_secs(rng.between(10, 600)),
            restart_after: Duration::from_secs(rng.between(10, 900)),
            leak_bytes_per_hour: rng.between(1, 40) * 1024 * 1024,
            crash_point,
            retry_after_date: false,
            shape: None,
            backward: kind == FaultSpecKind::ClockStep && rng.unit() < 0.5,
        });
    }
    faults
}

/// One line per drawn fault, for the run's header.
pub fn describe(faults: &[FaultSpec]) -> Vec<String> {
    faults
        .iter()
        .map(|f| {
            let mut line = format!(
                "{} on {} at +{} for {}m",
                f.kind.as_str(),
                f.target,
                instant(f.at),
                f.duration.as_secs() / 60
            );
            if let Some(e) = f.every {
                line.push_str(&format!(", every {}h", e.as_secs() / 3600));
            }
            match f.kind {
                FaultSpecKind::Reset | FaultSpecKind::ServerError => {
                    line.push_str(&format!(", p={:.2}", f.probability));
                }
                FaultSpecKind::Stall => {
                    line.push_str(&format!(", p={:.2}, {}s", f.probability, f.stall.as_secs()));
                }
                FaultSpecKind::Crash => {
                    if let Some(p) = f.crash_point {
                        let side = if p.after { "after" } else { "before" };
                        line.push_str(&format!(", {side} durable op {}", p.op));
                    }
                }
                _ => {}
            }
            line
        })
        .collect()
}

/// `4h 13m 7.250s`: an offset from the world's start, to the millisecond.
pub fn instant(d: Duration) -> String {
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if ms == 0 {
        format!("{h}h {m}m {s}s")
    } else {
        format!("{h}h {m}m {s}.{ms:03}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_alone_decides_the_world() {
        let base = Scenario::default_scenario();
        let a = swarm(&base, 7);
        let b = swarm(&base, 7);
        assert_eq!(a.faults, b.faults);
        let differs = (8..40).any(|s| swarm(&base, s).faults != a.faults);
        assert!(differs);
    }

    #[test]
    fn sleeps_and_clock_steps_are_drawn_only_when_listed() {
        let base = Scenario::default_scenario();
        let listed = SwarmSpec {
            kinds: OPT_IN_KINDS.to_vec(),
            presence: 1.0,
        };
        let drawn = draw(&base, &listed, 3);
        let kinds: Vec<_> = drawn.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, OPT_IN_KINDS);
        assert!(drawn.iter().all(|f| f.target == "runner"));
        let default = draw(&base, &SwarmSpec::default(), 3);
        assert!(
            default.iter().all(|f| !OPT_IN_KINDS.contains(&f.kind)),
            "the default draws are unchanged"
        );
    }
}

#[cfg(test)]
mod section_tests {
    use std::path::Path;

    use super::super::DEFAULT_TEXT;
    use super::*;

    fn parse(extra: &str) -> Result<Scenario, String> {
        let text = format!("{DEFAULT_TEXT}\n{extra}");
        Scenario::parse(&text, Path::new("scenarios/x.toml"), None).map_err(|d| d.to_string())
    }

    #[test]
    fn a_swarm_section_adds_the_seeds_faults_to_the_timeline() {
        let plain = parse("").unwrap();
        assert!(plain.swarm.is_none());
        let (same, drawn) = with_seed(&plain, 3);
        assert!(drawn.is_empty());
        assert_eq!(same.faults, plain.faults, "no [swarm], no drawn faults");

        let s = parse("[swarm]\npresence = 1.0\n").unwrap();
        let (a, drawn_a) = with_seed(&s, 3);
        assert!(!drawn_a.is_empty());
        assert_eq!(a.faults.len(), plain.faults.len() + drawn_a.len());
        assert_eq!(
            &a.faults[..plain.faults.len()],
            &plain.faults[..],
            "timeline first"
        );
        assert_eq!(with_seed(&s, 3).1, drawn_a, "the seed alone decides");
        assert!((4..20).any(|seed| with_seed(&s, seed).1 != drawn_a));
    }

    /// Published seeds keep their kinds, targets, hours and rates: `sim replay 42` drew
    /// these before `[swarm]` existed (then on whole hours; the minutes and seconds come
    /// from the instants' own stream, so they changed nothing else).
    #[test]
    fn the_swarm_world_of_a_seed_does_not_change() {
        let lines = describe(&swarm(&Scenario::default_scenario(), 42).faults);
        assert_eq!(
            lines,
            [
                "reset on mail at +4h 59m 22.030s for 20m, every 37h, p=0.30",
                "stall on youtube at +11h 43m 44.004s for 12m, every 31h, p=0.16, 50s",
                "dns on blog at +21h 23m 5.766s for 74m, every 13h",
                "slow on youtube at +16h 11m 15.613s for 117m, every 26h",
                "rate_limit_storm on mail at +46h 54m 2.396s for 178m, every 48h",
                "down on blog at +57h 19m 36.005s for 174m",
                "crash on runner at +28h 31m 20.853s for 74m",
            ]
        );
    }

    #[test]
    fn faults_start_at_seeded_instants_and_crashes_at_durable_operations() {
        let base = Scenario::default_scenario();
        let faults: Vec<FaultSpec> = (1..60).flat_map(|seed| swarm(&base, seed).faults).collect();
        let off_the_hour = faults.iter().filter(|f| f.at.as_secs() % 3600 != 0).count();
        assert!(
            off_the_hour * 10 > faults.len() * 9,
            "{off_the_hour} of {} off whole hours",
            faults.len()
        );
        assert!(
            faults.iter().any(|f| f.at.subsec_millis() != 0),
            "to the millisecond"
        );
        let crashes: Vec<&FaultSpec> = faults
            .iter()
            .filter(|f| f.kind == FaultSpecKind::Crash)
            .collect();
        let at_ops = crashes.iter().filter(|f| f.crash_point.is_some()).count();
        assert!(
            at_ops > 0 && at_ops < crashes.len(),
            "{at_ops} of {} crashes at a durable operation",
            crashes.len()
        );
        assert!(
            crashes
                .iter()
                .any(|f| f.crash_point.is_some_and(|p| p.after))
        );
        assert!(
            crashes
                .iter()
                .any(|f| f.crash_point.is_some_and(|p| !p.after))
        );
        assert!(
            faults
                .iter()
                .filter(|f| f.kind != FaultSpecKind::Crash)
                .all(|f| f.crash_point.is_none())
        );
    }

    #[test]
    fn kinds_narrow_what_is_drawn() {
        let s = parse("[swarm]\nkinds = [\"reset\", \"dns\"]\npresence = 1.0\n").unwrap();
        for seed in 1..20 {
            let (_, drawn) = with_seed(&s, seed);
            assert_eq!(drawn.len(), 2, "seed {seed}: {drawn:?}");
            assert!(
                drawn
                    .iter()
                    .all(|f| matches!(f.kind, FaultSpecKind::Reset | FaultSpecKind::Dns))
            );
        }
    }

    #[test]
    fn a_bad_swarm_section_is_reported_with_key_and_hint() {
        let err = parse("[swarm]\nkinds = [\"reset\", \"disk_full\"]\npresence = 2.0\nrate = 1\n")
            .unwrap_err();
        assert!(err.contains("swarm.kinds"), "{err}");
        assert!(
            err.contains("`disk_full` cannot be drawn by a swarm"),
            "{err}"
        );
        assert!(err.contains("one of: reset, stall"), "{err}");
        assert!(err.contains("swarm.presence"), "{err}");
        assert!(err.contains("swarm.rate"), "{err}");
        assert!(err.contains("scenarios/x.toml:"), "{err}");
    }
}
