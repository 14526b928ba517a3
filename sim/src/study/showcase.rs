//! Where each pattern earns its row: for every ablation profile, a committed focused
//! scenario in which switching the pattern off costs something the judge measures, beyond
//! the spread across seeds, or the reason it cannot be shown.
//!
//! The report's main world (the field report's three weeks) is a mix in which several
//! patterns have no room to act, so the ablation table alone leaves them looking useless.
//! Each row here names the world that isolates one pattern. `sim report` runs them
//! ([`run`]) and prints the table; `tests/tests/ablation.rs` asserts every claim on a few
//! seeds, so a claim that stops holding fails a test instead of staying in the report.
//! The scenario texts are embedded, so the report does not depend on the working folder.

use std::path::Path;

use super::doc::Better;
use super::parallel;
use crate::driver::{SimError, simulate};
use crate::metrics::{Metrics, evaluate};
use crate::scenario::{Profile, Scenario};

/// The world and the measure that show one pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// The scenario's file, as committed.
    pub file: &'static str,
    /// Its text (embedded).
    pub text: &'static str,
    /// The measure that moves: a [`Metrics`] field by its JSON name.
    pub measure: &'static str,
    /// Which way is better for that measure.
    pub better: Better,
}

/// One ablation profile's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Showcase {
    /// The `no-<pattern>` profile.
    pub profile: &'static str,
    /// Where the pattern shows, if a committed world shows it.
    pub shown: Option<Shown>,
    /// Why that world shows it, or why none can.
    pub note: &'static str,
}

macro_rules! shown {
    ($file:literal, $measure:literal, $better:ident) => {
        Some(Shown {
            file: concat!("scenarios/", $file),
            text: include_str!(concat!("../../../scenarios/", $file)),
            measure: $measure,
            better: Better::$better,
        })
    };
}

/// Every ablation profile, in [`crate::scenario::profile::ALL`]'s order.
pub const SHOWCASES: [Showcase; 14] = [
    Showcase {
        profile: "no-retry",
        shown: shown!("jitter-herd.toml", "lost_task_rate", Lower),
        note: "eight jobs hit by 503 bursts on one rate-limited API: without retries a burst's runs end with nothing",
    },
    Showcase {
        profile: "no-jitter",
        shown: shown!("jitter-herd.toml", "rate_limit_violations", Lower),
        note: "the herd comes back from a burst in lockstep and overruns the API's token bucket",
    },
    Showcase {
        profile: "no-proactive-refresh",
        shown: shown!("clock-step-forward.toml", "token_expired_errors", Lower),
        note: "one-hour tokens: without refreshing ahead of expiry, calls go out with expired tokens",
    },
    Showcase {
        profile: "no-heartbeat",
        shown: shown!("disk-full.toml", "lost_task_rate", Lower),
        note: "a full disk stops the runs; without the monitor's alert nobody frees it and the slots are lost silently",
    },
    Showcase {
        profile: "no-isolation",
        shown: shown!("disk-full.toml", "lost_runs", Lower),
        note: "a full disk fails one job's writes; without isolation the failure takes the other jobs' runs with it",
    },
    Showcase {
        profile: "no-checkpoints",
        shown: shown!("crash-loop-new-job.toml", "duplicate_side_effects", Lower),
        note: "crashes mid-run: without checkpoints and idempotency keys a resumed run repeats its writes",
    },
    Showcase {
        profile: "no-windows",
        shown: shown!("disk-full.toml", "window_violations", Lower),
        note: "publishing is allowed 09:00-22:00 local: without windows it happens at night too (any focused world with a window shows it)",
    },
    Showcase {
        profile: "no-breakers",
        shown: shown!("dns-flap-in-phase.toml", "succeeded_runs", Higher),
        note: "DNS failing 2 minutes of every 5, in step with the schedule: a run that waits out the breaker's (jittered) cooldown calls in a healthy phase; without breakers the retries are spent inside the failing phase",
    },
    Showcase {
        profile: "no-budget",
        shown: shown!("ablation/retry-budget.toml", "calls", Lower),
        note: "six jobs retrying into a mostly failing API: the budget caps the retries; the price is some runs that give up sooner",
    },
    Showcase {
        profile: "no-contracts",
        shown: shown!("bad-answer.toml", "degraded_runs", Lower),
        note: "empty, truncated and wrong-shape 200s: without contracts they count as done and the run's later writes lack their input",
    },
    Showcase {
        profile: "no-needs",
        shown: shown!("needs-upload-outage.toml", "unmet_prerequisites", Lower),
        note: "the upload API is down an hour twice a day: without `needs` the publish goes out for an upload the media service never got",
    },
    Showcase {
        profile: "no-gates",
        shown: shown!("quota-exhaust.toml", "calls_inside_retry_after", Lower),
        note: "an exhausted daily quota: without a per-service gate each job learns the Retry-After for itself and calls inside it",
    },
    Showcase {
        profile: "no-probes",
        shown: shown!("ablation/breaker-probes.toml", "calls", Lower),
        note: "an API down for hours with short breaker cooldowns: without health probes the jobs' own calls test it, into the outage",
    },
    Showcase {
        profile: "no-wall-clock",
        shown: shown!("clock-step-forward.toml", "rate_limit_violations", Lower),
        note: "the wall clock steps forward: a schedule on the monotonic clock runs its missed slots in a burst at the API",
    },
];

/// The row of `profile`, if it is an ablation profile.
pub fn of(profile: &str) -> Option<&'static Showcase> {
    SHOWCASES.iter().find(|s| s.profile == profile)
}

/// A measure of `metrics` by its JSON name.
pub fn value(metrics: &Metrics, measure: &str) -> Option<f64> {
    serde_json::to_value(metrics).ok()?.get(measure)?.as_f64()
}

impl Shown {
    /// The scenario, parsed from its embedded text.
    pub fn scenario(&self) -> Result<Scenario, String> {
        let path = Path::new(self.file);
        Scenario::parse(self.text, path, Some(path.to_path_buf())).map_err(|d| d.to_string())
    }
}

/// One pattern's world run both ways over the same seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ShowcaseResult {
    /// The row.
    pub showcase: Showcase,
    /// The measure with the pattern (self-healing), per seed.
    pub with: Vec<f64>,
    /// The measure without it, per seed.
    pub without: Vec<f64>,
}

impl ShowcaseResult {
    /// Whether switching the pattern off made the measure worse on every seed than the
    /// worst seed with it: a cost beyond the spread across seeds.
    pub fn beyond_spread(&self) -> bool {
        let Some(shown) = self.showcase.shown else {
            return false;
        };
        if self.with.is_empty() || self.without.is_empty() {
            return false;
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match shown.better {
            Better::Lower => min(&self.without) > max(&self.with),
            Better::Higher => max(&self.without) < min(&self.with),
            Better::Neither => false,
        }
    }
}

/// Runs every row that has a world, self-healing and its ablation on each of `seeds`,
/// on `threads` threads; rows come back in [`SHOWCASES`]' order.
pub fn run(seeds: &[u64], threads: usize) -> Result<Vec<ShowcaseResult>, SimError> {
    run_rows(&SHOWCASES, seeds, threads)
}

/// [`run`] for some rows only.
pub fn run_rows(
    rows: &[Showcase],
    seeds: &[u64],
    threads: usize,
) -> Result<Vec<ShowcaseResult>, SimError> {
    // Each (world, profile, seed) once: several rows share a world and its self-healing runs.
    let mut tasks: Vec<(&'static str, &'static str, u64)> = Vec::new();
    for row in rows {
        let Some(shown) = row.shown else { continue };
        for profile in ["self-healing", row.profile] {
            for seed in seeds {
                let task = (shown.file, profile, *seed);
                if !tasks.contains(&task) {
                    tasks.push(task);
                }
            }
        }
    }
    let results = parallel(&tasks, threads, |(file, profile, seed)| {
        let shown = rows
            .iter()
            .filter_map(|r| r.shown)
            .find(|s| s.file == *file)
            .ok_or_else(|| SimError::Turmoil(format!("no row runs {file}")))?;
        let scenario = shown.scenario().map_err(SimError::Turmoil)?;
        let profile = Profile::named(profile)
            .ok_or_else(|| SimError::Turmoil(format!("unknown profile `{profile}`")))?;
        let (scenario, _) = crate::scenario::swarm::with_seed(&scenario, *seed);
        let run = simulate(&scenario, *seed, profile, &mut |_| {})?;
        Ok::<_, SimError>(evaluate(&scenario, &run).metrics)
    });
    let mut metrics = Vec::with_capacity(tasks.len());
    for r in results {
        metrics.push(r?);
    }
    let measure = |file: &str, profile: &str, key: &str| -> Vec<f64> {
        tasks
            .iter()
            .zip(&metrics)
            .filter(|((f, p, _), _)| *f == file && *p == profile)
            .filter_map(|(_, m)| value(m, key))
            .collect()
    };
    Ok(rows
        .iter()
        .map(|row| match row.shown {
            Some(shown) => ShowcaseResult {
                showcase: *row,
                with: measure(shown.file, "self-healing", shown.measure),
                without: measure(shown.file, row.profile, shown.measure),
            },
            None => ShowcaseResult {
                showcase: *row,
                with: Vec::new(),
                without: Vec::new(),
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::profile;

    #[test]
    fn every_ablation_profile_has_a_row_and_every_world_parses() {
        let ablations: Vec<&str> = profile::names().filter(|n| n.starts_with("no-")).collect();
        let rows: Vec<&str> = SHOWCASES.iter().map(|s| s.profile).collect();
        assert_eq!(rows, ablations, "one row per ablation profile, in order");
        for row in &SHOWCASES {
            assert!(!row.note.is_empty(), "{}: say why", row.profile);
            if let Some(shown) = row.shown {
                shown
                    .scenario()
                    .unwrap_or_else(|e| panic!("{}: {e}", shown.file));
                assert!(
                    value(&Metrics::default(), shown.measure).is_some(),
                    "{}: `{}` is not a measure",
                    row.profile,
                    shown.measure
                );
            }
        }
    }
}
