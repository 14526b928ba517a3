//! The jitter experiment: N jobs sharing one rate-limited API, all failing together,
//! retried under each jitter mode.
//!
//! AWS's "Exponential Backoff And Jitter" found that without jitter contending clients
//! retry in lockstep and keep colliding, and that full jitter does the least work. Here
//! the clients are the runner's jobs in `scenarios/jitter-herd.toml`, the resource is
//! the API's token bucket, and the collision is a 503 burst at an instant when every
//! job is due. Each mode is self-healing with only the jitter changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use steadfast_core::config::{Jitter, Patterns};
use steadfast_core::event::{EventKind, Outcome};

use super::parallel;
use super::stats::Summary;
use crate::driver::{SimError, simulate};
use crate::metrics::evaluate;
use crate::scenario::{FaultSpecKind, Profile, Scenario};

/// The experiment's world, embedded so `sim report` runs it from anywhere.
pub const SCENARIO_TEXT: &str = include_str!("../../../scenarios/jitter-herd.toml");
/// Where that world lives in the repository.
pub const SCENARIO_PATH: &str = "scenarios/jitter-herd.toml";

/// The modes compared, in report order.
pub const MODES: [Jitter; 4] = [
    Jitter::None,
    Jitter::Equal,
    Jitter::Full,
    Jitter::Decorrelated,
];

/// A mode's name in the report.
pub fn mode_name(mode: Jitter) -> &'static str {
    match mode {
        Jitter::None => "none",
        Jitter::Equal => "equal",
        Jitter::Full => "full",
        Jitter::Decorrelated => "decorrelated",
    }
}

/// Self-healing with only the jitter mode changed.
pub fn profile(mode: Jitter) -> Profile {
    let name = match mode {
        Jitter::None => "jitter-none",
        Jitter::Equal => "jitter-equal",
        Jitter::Full => "jitter-full",
        Jitter::Decorrelated => "jitter-decorrelated",
    };
    Profile {
        name,
        patterns: Patterns {
            jitter: mode,
            ..Patterns::ALL
        },
        call_timeouts: true,
        supervised: true,
        max_attempts: None,
    }
}

/// The embedded experiment world.
pub fn scenario() -> Result<Scenario, String> {
    let path = std::path::Path::new(SCENARIO_PATH);
    Scenario::parse(SCENARIO_TEXT, path, Some(path.to_path_buf())).map_err(|d| d.to_string())
}

/// One run of one mode.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JitterRun {
    /// The mode.
    pub mode: &'static str,
    /// The seed.
    pub seed: u64,
    /// Calls the jobs made (every attempt in the trace, including those the burst failed).
    pub calls: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Requests that arrived while the client was over its rate limit.
    pub rate_limit_violations: u64,
    /// Per burst that every job got past: seconds from its onset until every job had
    /// finished a run successfully.
    pub finish_seconds: Vec<f64>,
    /// Bursts after which some job had no success before the next burst or the end.
    pub unfinished: u64,
    /// Steps whose retries gave up, by the runner's reason (`attempts`, `deadline`, ...).
    pub gave_up: BTreeMap<String, u64>,
}

/// Every run of the experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterStudy {
    /// The world's file.
    pub file: String,
    /// Jobs sharing the API.
    pub jobs: usize,
    /// Bursts per run.
    pub bursts: usize,
    /// Simulated days per run.
    pub days: f64,
    /// Runs, in mode order then seed order.
    pub runs: Vec<JitterRun>,
}

/// Mean and spread of one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeSummary {
    /// The mode.
    pub mode: &'static str,
    /// Calls per run.
    pub calls: Summary,
    /// Retries per run.
    pub retries: Summary,
    /// Rate-limit violations per run.
    pub rate_limit_violations: Summary,
    /// Seconds to finish, over every burst of every seed.
    pub finish_seconds: Summary,
    /// Bursts with a job that did not finish, over all seeds.
    pub unfinished: u64,
    /// Steps that gave up per run.
    pub gave_up: Summary,
    /// Give-ups by reason, summed over seeds.
    pub gave_up_reasons: BTreeMap<String, u64>,
}

impl JitterStudy {
    /// Per mode, in [`MODES`] order.
    pub fn summaries(&self) -> Vec<ModeSummary> {
        MODES
            .iter()
            .map(|m| {
                let name = mode_name(*m);
                let runs: Vec<&JitterRun> = self.runs.iter().filter(|r| r.mode == name).collect();
                let of = |f: &dyn Fn(&JitterRun) -> f64| {
                    Summary::of(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
                };
                let finish: Vec<f64> = runs
                    .iter()
                    .flat_map(|r| r.finish_seconds.iter().copied())
                    .collect();
                ModeSummary {
                    mode: name,
                    calls: of(&|r| r.calls as f64),
                    retries: of(&|r| r.retries as f64),
                    rate_limit_violations: of(&|r| r.rate_limit_violations as f64),
                    finish_seconds: Summary::of(&finish),
                    unfinished: runs.iter().map(|r| r.unfinished).sum(),
                    gave_up: of(&|r| r.gave_up.values().sum::<u64>() as f64),
                    gave_up_reasons: runs.iter().flat_map(|r| r.gave_up.iter()).fold(
                        BTreeMap::new(),
                        |mut acc, (k, v)| {
                            *acc.entry(k.clone()).or_insert(0) += v;
                            acc
                        },
                    ),
                }
            })
            .collect()
    }
}

/// Onsets of the faults that make every job fail together (within the world).
fn burst_onsets(scenario: &Scenario) -> Vec<DateTime<Utc>> {
    let start = scenario.world.start;
    let end = start + chrono::Duration::from_std(scenario.world.duration).unwrap_or_default();
    let mut out = Vec::new();
    for f in &scenario.faults {
        if !matches!(
            f.kind,
            FaultSpecKind::ServerError | FaultSpecKind::RateLimitStorm | FaultSpecKind::Down
        ) {
            continue;
        }
        let mut at = start + chrono::Duration::from_std(f.at).unwrap_or_default();
        while at < end && out.len() < 10_000 {
            out.push(at);
            match f.every.and_then(|e| chrono::Duration::from_std(e).ok()) {
                Some(every) if every > chrono::Duration::zero() => at += every,
                _ => break,
            }
        }
    }
    out.sort();
    out
}

/// Runs every mode on every seed.
pub fn run(
    scenario: &Scenario,
    seeds: &[u64],
    threads: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<JitterStudy, SimError> {
    let tasks: Vec<(Jitter, u64)> = MODES
        .iter()
        .flat_map(|m| seeds.iter().map(move |s| (*m, *s)))
        .collect();
    let onsets = burst_onsets(scenario);
    let total = tasks.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let runs = parallel(&tasks, threads, |(mode, seed)| {
        let out = measure(scenario, &onsets, *mode, *seed);
        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        progress(&format!(
            "[jitter {n}/{total}] {} seed {seed}",
            mode_name(*mode)
        ));
        out
    });
    Ok(JitterStudy {
        file: scenario
            .file
            .as_ref()
            .map_or_else(|| scenario.name.clone(), |f| f.display().to_string()),
        jobs: scenario.config.jobs.len(),
        bursts: onsets.len(),
        days: scenario.world.duration.as_secs_f64() / 86_400.0,
        runs: runs.into_iter().collect::<Result<Vec<_>, _>>()?,
    })
}

fn measure(
    scenario: &Scenario,
    onsets: &[DateTime<Utc>],
    mode: Jitter,
    seed: u64,
) -> Result<JitterRun, SimError> {
    let run = simulate(scenario, seed, profile(mode), &mut |_| {})?;
    let metrics = evaluate(scenario, &run).metrics;
    let trace = run.world.trace().snapshot();
    let calls = trace
        .iter()
        .filter(|e| e.event == EventKind::Attempt)
        .count() as u64;
    let successes: Vec<(&str, DateTime<Utc>)> = trace
        .iter()
        .filter(|e| e.event == EventKind::RunFinished && e.outcome == Some(Outcome::Succeeded))
        .filter_map(|e| Some((e.job.as_deref()?, e.at)))
        .collect();
    let mut gave_up: BTreeMap<String, u64> = BTreeMap::new();
    for e in trace.iter().filter(|e| e.event == EventKind::RetryGaveUp) {
        *gave_up
            .entry(e.detail.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    let mut finish_seconds = Vec::new();
    let mut unfinished = 0;
    for (i, onset) in onsets.iter().enumerate() {
        let limit = onsets.get(i + 1).copied().unwrap_or(run.end);
        let mut latest: Option<DateTime<Utc>> = Some(*onset);
        for job in &run.config.jobs {
            let next = successes
                .iter()
                .filter(|(j, at)| *j == job.name && at >= onset && *at < limit)
                .map(|(_, at)| *at)
                .min();
            latest = match (latest, next) {
                (Some(l), Some(n)) => Some(l.max(n)),
                _ => None,
            };
        }
        match latest {
            Some(l) => finish_seconds.push((l - *onset).num_milliseconds() as f64 / 1000.0),
            None => unfinished += 1,
        }
    }
    Ok(JitterRun {
        mode: mode_name(mode),
        seed,
        calls,
        retries: metrics.retries,
        rate_limit_violations: metrics.rate_limit_violations,
        finish_seconds,
        unfinished,
        gave_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_world_parses_and_bursts_fall_on_due_instants() {
        let s = scenario().unwrap();
        assert!(s.config.jobs.len() >= 4, "a herd needs several jobs");
        assert!(
            s.config.jobs.iter().all(|j| j.start_jitter.is_zero()),
            "all due together"
        );
        let onsets = burst_onsets(&s);
        assert!(!onsets.is_empty());
        for at in onsets {
            assert_eq!(
                at.timestamp() % 1800,
                0,
                "a burst at {at} is not a due instant"
            );
        }
    }

    #[test]
    fn profiles_differ_only_in_jitter() {
        let healing = Profile::named("self-healing").unwrap();
        for m in MODES {
            let p = profile(m);
            assert_eq!(p.patterns.jitter, m);
            assert_eq!(
                Patterns {
                    jitter: healing.patterns.jitter,
                    ..p.patterns
                },
                healing.patterns
            );
            assert_eq!(
                (p.call_timeouts, p.supervised),
                (healing.call_timeouts, healing.supervised)
            );
        }
    }
}
