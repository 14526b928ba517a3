//! What the runner's own events and code claim: the measures as the simulator took them
//! before it had an independent judge, from the trace (`RunFinished`, `StepSucceeded`,
//! ...) and the runner's own `Schedule` and `Windows` over the configuration the runner
//! was given. Kept for comparison only (the tests show what it misses); the report's
//! figures come from [`crate::judge`] through [`crate::metrics::evaluate`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use steadfast_core::config::{Config, JobConfig};
use steadfast_core::event::{Event, EventKind, Outcome};
use steadfast_core::job::RunId;
use steadfast_core::window::Windows;

use crate::driver::SimRun;
use crate::metrics::{
    Invariant, Metrics, Verdict, calls_to_open_breaker, count, humanize, is_output, silent_deaths,
    to_chrono,
};
use crate::scenario::Scenario;

/// Lost slots listed at most (a 3-week world has about 10,000 slots).
const MAX_LOST_SLOTS: usize = 100_000;

/// Whether every step of `job` may run at `at` (the whole job's work is wanted then).
fn all_open(job: &JobConfig, windows: &Windows, at: DateTime<Utc>) -> bool {
    job.steps
        .iter()
        .all(|s| windows.is_open(s.action.as_deref(), at))
}

/// The windows the work requires, whatever the profile.
fn required_windows(config: &Config) -> Windows {
    Windows::new(config.runner.time_zone, config.windows.clone())
}

/// Due times of `job` in `[start, end)` when its first step may run.
fn slots(
    job: &JobConfig,
    config: &Config,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let schedule = &job.schedule;
    let windows = required_windows(config);
    let mut out = Vec::new();
    let mut t = schedule.next_after(start);
    while t < end && out.len() < 1_000_000 {
        if all_open(job, &windows, t) {
            out.push(t);
        }
        t = schedule.next_after(t);
    }
    out
}

/// Times a job showed it is alive and doing its work: good runs and window skips.
fn good_times(trace: &[Event], job: &str) -> Vec<DateTime<Utc>> {
    trace
        .iter()
        .filter(|e| e.job.as_deref() == Some(job) && is_output(e))
        .map(|e| e.at)
        .collect()
}

/// The verdict the runner's own account gives of a finished run.
pub fn self_report(scenario: &Scenario, run: &SimRun) -> Verdict {
    run.world
        .trace()
        .with_events(|trace| evaluate_trace(scenario, run, trace))
}

fn evaluate_trace(scenario: &Scenario, run: &SimRun, trace: &[Event]) -> Verdict {
    let config = &run.config;
    let alerts: Vec<_> = if run.profile.alerts_delivered() {
        run.operator.alerts()
    } else {
        Vec::new()
    };
    let mut m = Metrics::default();
    let mut lost_slots = Vec::new();

    // Slots and their outcomes.
    for job in &config.jobs {
        let interval = to_chrono(job.schedule.nominal_interval());
        let slots = slots(job, config, run.start, run.end - to_chrono(job.deadline));
        let in_a_slot = |t: DateTime<Utc>| {
            let i = slots.partition_point(|s| *s <= t);
            i > 0 && t < slots[i - 1] + interval
        };
        // Each good run counts for the slot it was due in; a run due while its work was
        // not wanted (it waited for its window) counts for the slot it finished in.
        let mut good: BTreeMap<DateTime<Utc>, Outcome> = BTreeMap::new();
        for e in trace.iter().filter(|e| {
            e.event == EventKind::RunFinished && e.job.as_deref() == Some(job.name.as_str())
        }) {
            let (Some(due), Some(o @ (Outcome::Succeeded | Outcome::Degraded))) =
                (e.run_id.as_ref().map(RunId::due), e.outcome)
            else {
                continue;
            };
            let key = if in_a_slot(due) { due } else { e.at };
            good.entry(key).or_insert(o);
        }
        let threshold = to_chrono(job.heartbeat_threshold);
        let mut alive = good_times(trace, &job.name);
        alive.sort();
        for slot in &slots {
            let next = *slot + interval;
            m.scheduled_runs += 1;
            match good.range(*slot..next).next().map(|(_, o)| *o) {
                Some(Outcome::Succeeded) => m.succeeded_runs += 1,
                Some(_) => m.degraded_runs += 1,
                None => {
                    // Told: since the job last worked, an alert about it (or the whole
                    // runner) reached a human, up to a threshold after the slot ended.
                    let since = alive
                        .iter()
                        .rev()
                        .find(|t| **t < *slot)
                        .copied()
                        .unwrap_or(run.start);
                    let told = alerts.iter().any(|a| {
                        (a.job.is_none() || a.job.as_deref() == Some(job.name.as_str()))
                            && a.at >= since
                            && a.at <= next + threshold
                    });
                    if told {
                        m.failed_runs += 1;
                    } else {
                        m.lost_runs += 1;
                        if lost_slots.len() < MAX_LOST_SLOTS {
                            lost_slots.push(format!("{}@{}", job.name, slot.to_rfc3339()));
                        }
                    }
                }
            }
        }
    }
    m.lost_task_rate = if m.scheduled_runs == 0 {
        0.0
    } else {
        m.lost_runs as f64 / m.scheduled_runs as f64
    };
    m.uptime_ratio = uptime(trace, config, run.start, run.end);
    m.manual_interventions = run.interventions.len() as u64;
    let hours = run.simulated_seconds / 3600.0;
    m.hours_between_interventions = if run.interventions.is_empty() {
        hours
    } else {
        hours / run.interventions.len() as f64
    };
    for api in run.apis.values() {
        let c = api.counters();
        m.rate_limit_violations += c.rate_limit_violations;
        m.token_expired_errors += c.token_expired_errors;
        m.calls += c.calls;
    }
    m.retries = count(trace, EventKind::RetryScheduled);
    m.token_refreshes = count(trace, EventKind::TokenRefreshed);
    m.runner_starts = count(trace, EventKind::RunnerStarted);
    let (deaths, detected) = silent_deaths(trace, config, run, &alerts);
    m.silent_deaths = deaths;
    m.silent_deaths_detected = detected;
    m.duplicate_side_effects = duplicates(run);
    m.window_violations = window_violations(trace, config);
    m.calls_to_open_breaker = calls_to_open_breaker(trace, run);

    let invariants = crate::metrics::safety_invariants(scenario, &m);
    let liveness = liveness(scenario, trace, config, run);
    Verdict {
        metrics: m,
        invariants,
        liveness,
        lost_slots,
    }
}

fn uptime(trace: &[Event], config: &Config, start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    let per_job: Vec<(Vec<DateTime<Utc>>, chrono::Duration)> = config
        .jobs
        .iter()
        .map(|j| {
            let mut t = good_times(trace, &j.name);
            t.sort();
            (t, to_chrono(j.heartbeat_threshold))
        })
        .collect();
    let mut cursors = vec![0usize; per_job.len()];
    let mut last = vec![start; per_job.len()];
    let step = chrono::Duration::minutes(1);
    let (mut up, mut total) = (0u64, 0u64);
    let mut t = start;
    while t < end {
        let mut all_up = true;
        for (i, (times, threshold)) in per_job.iter().enumerate() {
            while cursors[i] < times.len() && times[cursors[i]] <= t {
                last[i] = times[cursors[i]];
                cursors[i] += 1;
            }
            if t - last[i] > *threshold {
                all_up = false;
            }
        }
        total += 1;
        up += u64::from(all_up);
        t += step;
    }
    if total == 0 {
        1.0
    } else {
        up as f64 / total as f64
    }
}

/// Side effects applied more than once: same service, method, path and body.
fn duplicates(run: &SimRun) -> u64 {
    let mut seen: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    for api in run.apis.values() {
        for s in api.side_effects() {
            *seen
                .entry((
                    s.service.clone(),
                    s.method.clone(),
                    s.path.clone(),
                    s.body.clone(),
                ))
                .or_default() += 1;
        }
    }
    seen.values().map(|n| n.saturating_sub(1)).sum()
}

/// Steps with a windowed action that succeeded outside the window.
fn window_violations(trace: &[Event], config: &Config) -> u64 {
    let windows = required_windows(config);
    let action_of = |job: &str, step: &str| -> Option<String> {
        config
            .jobs
            .iter()
            .find(|j| j.name == job)?
            .steps
            .iter()
            .find(|s| s.name == step)?
            .action
            .clone()
    };
    trace
        .iter()
        .filter(|e| e.event == EventKind::StepSucceeded)
        .filter(|e| {
            let (Some(job), Some(step)) = (e.job.as_deref(), e.step.as_deref()) else {
                return false;
            };
            match action_of(job, step) {
                Some(action) => {
                    config.windows.contains_key(&action) && !windows.is_open(Some(&action), e.at)
                }
                None => false,
            }
        })
        .count() as u64
}

/// After the last fault heals, every job must produce output within the bound.
fn liveness(
    scenario: &Scenario,
    trace: &[Event],
    config: &Config,
    run: &SimRun,
) -> Option<Invariant> {
    let heal = run.start + to_chrono(scenario.faults_heal_at());
    let bound = to_chrono(scenario.invariants.recovery_bound);
    let mut late = Vec::new();
    for job in &config.jobs {
        let schedule = &job.schedule;
        let windows = required_windows(config);
        // The first slot after healing when the job may run, plus the bound.
        let mut first = schedule.next_after(heal);
        let mut guard = 0;
        while !all_open(job, &windows, first) && guard < 10_000 {
            first = schedule.next_after(first);
            guard += 1;
        }
        let deadline = first + bound;
        if deadline >= run.end {
            continue;
        }
        let recovered = good_times(trace, &job.name)
            .iter()
            .any(|t| *t >= heal && *t <= deadline);
        if !recovered {
            late.push(job.name.clone());
        }
    }
    if heal + bound >= run.end && late.is_empty() {
        return None;
    }
    Some(Invariant {
        name: "recovers_after_faults_heal".into(),
        holds: late.is_empty(),
        violations: late.len() as u64,
        detail: if late.is_empty() {
            format!(
                "every job produced output within {} of healing",
                humanize(bound)
            )
        } else {
            format!(
                "no output within {} of healing: {}",
                humanize(bound),
                late.join(", ")
            )
        },
    })
}
