//! Swarm worlds: the seed draws every fault (which kinds, where, when, how often), so
//! each seed explores a different mix and a failing seed alone reproduces its world.

use std::time::Duration;

use runner::env::{Rng, SeededRng};

use super::{FaultSpec, FaultSpecKind, Scenario};

/// Replaces the faults of `base` with ones drawn from `seed`, and names it `swarm`.
pub fn swarm(base: &Scenario, seed: u64) -> Scenario {
    // A stream apart from the world's own, so the faults do not shift its draws.
    let rng = SeededRng::from_seed(seed ^ 0x5741_524d_5741_524d);
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
    let kinds = [
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
    for kind in kinds {
        // Each kind is present with probability one half.
        if rng.unit() < 0.5 {
            continue;
        }
        let target = match kind {
            FaultSpecKind::TokenRevoke => pick(&oauth),
            FaultSpecKind::Crash | FaultSpecKind::MemoryLeak => Some("runner".to_string()),
            _ => pick(&apis),
        };
        let Some(target) = target else { continue };
        let at = hour(rng.between(1, hours - 1));
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
        });
    }
    Scenario {
        name: "swarm".to_string(),
        file: None,
        faults,
        ..base.clone()
    }
}

/// One line per drawn fault, for the run's header.
pub fn describe(s: &Scenario) -> Vec<String> {
    s.faults
        .iter()
        .map(|f| {
            let mut line = format!(
                "{} on {} at +{}h for {}m",
                f.kind.as_str(),
                f.target,
                f.at.as_secs() / 3600,
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
                _ => {}
            }
            line
        })
        .collect()
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
}
