//! Measures: what the field report measured, computed from the trace and the services'
//! own records after a run. Invariant checkers live here too, apart from the simulator.
//!
//! Definitions (the report repeats them):
//! - A *slot* is a due time of a job's schedule within the world, skipping times when
//!   some step of the job may not run (its time window is closed: that work is not
//!   wanted then, whatever the profile; a run then defers and finishes later).
//! - A slot *produced output* when a run of that job due in `[slot, slot + interval)`
//!   finished succeeded (or degraded). Run ids carry their due time, so a retry that
//!   spills past the next slot still counts for its own slot; a run due while its work
//!   was not wanted (it waited for its window to open) counts for the slot it finished in.
//! - A slot that produced nothing is *failed* when an alert about the job (or the whole
//!   runner) reached the operator after the job last worked and before one heartbeat
//!   threshold after the slot ended; otherwise it is *lost*: due, no output, nobody told.
//! - *Uptime* is the share of minutes in which every job is within its heartbeat
//!   threshold of its last output (or of a slot it skipped because of its window).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use steadfast_core::breaker::BreakerState;
use steadfast_core::config::{Config, JobConfig, StepKind};
use steadfast_core::event::{Event, EventKind, MemorySink, Outcome, SkipReason, StateName};
use steadfast_core::job::RunId;
use steadfast_core::window::Windows;

use crate::driver::SimRun;
use crate::scenario::Scenario;

/// The report's `metrics` object.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Slots due in the world.
    pub scheduled_runs: u64,
    /// Slots that produced full output.
    pub succeeded_runs: u64,
    /// Slots that produced output with some step skipped.
    pub degraded_runs: u64,
    /// Slots without output that an alert told a human about.
    pub failed_runs: u64,
    /// Slots without output that nobody was told about.
    pub lost_runs: u64,
    /// `lost_runs / scheduled_runs`.
    pub lost_task_rate: f64,
    /// Share of time every job was within its heartbeat threshold.
    pub uptime_ratio: f64,
    /// Times a human had to fix something.
    pub manual_interventions: u64,
    /// Simulated hours per intervention (the whole run when there were none).
    pub hours_between_interventions: f64,
    /// Requests that arrived while their client was over its rate limit or quota.
    pub rate_limit_violations: u64,
    /// Calls made with an expired access token.
    pub token_expired_errors: u64,
    /// Silent deaths: the runner process dying without a word, or a run that hung.
    pub silent_deaths: u64,
    /// Silent deaths noticed (by an alert or a supervisor) within a threshold.
    pub silent_deaths_detected: u64,
    /// The same logical side effect applied more than once.
    pub duplicate_side_effects: u64,
    /// Actions that happened outside their time window.
    pub window_violations: u64,
    /// Calls that reached a service while its breaker was open.
    pub calls_to_open_breaker: u64,
    /// Requests the services received.
    pub calls: u64,
    /// Retries the runner scheduled.
    pub retries: u64,
    /// Access tokens refreshed.
    pub token_refreshes: u64,
    /// Times the runner process started.
    pub runner_starts: u64,
}

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Invariant {
    /// Its name.
    pub name: String,
    /// Whether it held.
    pub holds: bool,
    /// How many violations were seen.
    pub violations: u64,
    /// What was measured against what bound.
    pub detail: String,
}

/// The measures, the safety invariants, and whether liveness held.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// The measures.
    pub metrics: Metrics,
    /// Safety invariants.
    pub invariants: Vec<Invariant>,
    /// Liveness: after faults healed every job recovered within the bound (`None` when
    /// faults never heal within the world).
    pub liveness: Option<Invariant>,
    /// Every lost slot, `job@due` (bounded), to start an investigation from.
    pub lost_slots: Vec<String>,
}

impl Verdict {
    /// Exit code: 0 all hold, 1 a safety invariant failed, 3 liveness failed.
    pub fn exit_code(&self) -> u8 {
        if self.invariants.iter().any(|i| !i.holds) {
            1
        } else if self.liveness.as_ref().is_some_and(|l| !l.holds) {
            3
        } else {
            0
        }
    }
}

/// Lost slots listed at most (a 3-week world has about 10,000 slots).
const MAX_LOST_SLOTS: usize = 100_000;

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

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

/// Whether the event shows a job doing what it should: a run that produced its output
/// (or saved its progress), or a slot skipped because its window was closed.
fn is_output(e: &Event) -> bool {
    match e.event {
        EventKind::RunFinished => e.outcome.is_some_and(Outcome::is_ok),
        EventKind::RunSkipped => e.reason == Some(SkipReason::Window),
        _ => false,
    }
}

/// Each job's output times, kept up to date from the trace incrementally, so the
/// operator's looks cost the new events rather than the whole trace.
#[derive(Debug, Default)]
pub struct OutputTimes {
    cursor: usize,
    times: BTreeMap<String, Vec<DateTime<Utc>>>,
}

impl OutputTimes {
    /// Reads the events added to `trace` since the last call.
    pub fn update(&mut self, trace: &MemorySink) {
        let times = &mut self.times;
        self.cursor = trace.visit_since(self.cursor, |e| {
            if let Some(job) = e.job.as_deref().filter(|_| is_output(e)) {
                times.entry(job.to_string()).or_default().push(e.at);
            }
        });
    }

    /// Jobs with no output within their heartbeat threshold at `now` (what a human
    /// sees).
    pub fn stale_jobs(
        &self,
        config: &Config,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        config
            .jobs
            .iter()
            .filter(|job| {
                let last = self
                    .times
                    .get(&job.name)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|t| *t <= now)
                    .max()
                    .unwrap_or(start);
                now - last > to_chrono(job.heartbeat_threshold)
            })
            .map(|job| job.name.clone())
            .collect()
    }
}

/// Computes every measure and invariant of a finished run.
pub fn evaluate(scenario: &Scenario, run: &SimRun) -> Verdict {
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

    let inv = &scenario.invariants;
    let le = |name: &str, value: u64, max: u64| Invariant {
        name: name.to_string(),
        holds: value <= max,
        violations: value.saturating_sub(max),
        detail: format!("{value} (at most {max})"),
    };
    let invariants = vec![
        Invariant {
            name: "no_silent_loss".into(),
            holds: m.lost_task_rate <= inv.max_lost_task_rate,
            violations: m.lost_runs,
            detail: format!(
                "lost-task rate {:.4} (at most {:.4})",
                m.lost_task_rate, inv.max_lost_task_rate
            ),
        },
        le(
            "no_duplicate_side_effect",
            m.duplicate_side_effects,
            inv.max_duplicate_side_effects,
        ),
        le(
            "no_action_outside_window",
            m.window_violations,
            inv.max_window_violations,
        ),
        le(
            "no_call_with_expired_token",
            m.token_expired_errors,
            inv.max_token_expired_errors,
        ),
        le(
            "no_call_to_open_breaker",
            m.calls_to_open_breaker,
            inv.max_calls_to_open_breaker,
        ),
    ];
    let liveness = liveness(scenario, trace, config, run);
    Verdict {
        metrics: m,
        invariants,
        liveness,
        lost_slots,
    }
}

fn count(trace: &[Event], kind: EventKind) -> u64 {
    trace.iter().filter(|e| e.event == kind).count() as u64
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

/// Runner-level deaths (injected) and runs that hung; with how many were noticed.
fn silent_deaths(
    trace: &[Event],
    config: &Config,
    run: &SimRun,
    alerts: &[steadfast_core::alert::Alert],
) -> (u64, u64) {
    let max_threshold = config
        .jobs
        .iter()
        .map(|j| to_chrono(j.heartbeat_threshold))
        .max()
        .unwrap_or_default();
    let monitor = to_chrono(config.runner.monitor_interval) * 2;
    let mut deaths = 0;
    let mut detected = 0;
    for at in &run.silent_deaths {
        deaths += 1;
        let supervised = run
            .supervisor_restarts
            .iter()
            .any(|r| *r >= *at && *r - *at <= chrono::Duration::minutes(1));
        let alerted = alerts
            .iter()
            .any(|a| a.at >= *at && a.at - *at <= max_threshold + monitor);
        detected += u64::from(supervised || alerted);
    }
    // A run that started and neither finished nor was cut short by a restart within
    // twice its deadline hung: the job died without a word.
    let starts: Vec<DateTime<Utc>> = trace
        .iter()
        .filter(|e| e.event == EventKind::RunnerStarted)
        .map(|e| e.at)
        .collect();
    let finished: std::collections::BTreeSet<&RunId> = trace
        .iter()
        .filter(|e| e.event == EventKind::RunFinished)
        .filter_map(|e| e.run_id.as_ref())
        .collect();
    for job in &config.jobs {
        let limit = to_chrono(job.deadline) * 2;
        for e in trace.iter().filter(|e| {
            e.event == EventKind::RunStarted && e.job.as_deref() == Some(job.name.as_str())
        }) {
            if e.run_id.as_ref().is_some_and(|id| finished.contains(id)) {
                continue;
            }
            let restarted = starts.iter().any(|s| *s > e.at && *s - e.at <= limit);
            let hung_at = e.at + limit;
            if restarted || hung_at >= run.end {
                continue;
            }
            deaths += 1;
            let threshold = to_chrono(job.heartbeat_threshold);
            let alerted = alerts.iter().any(|a| {
                a.job.as_deref() == Some(job.name.as_str())
                    && a.at >= e.at
                    && a.at - e.at <= threshold + limit + monitor
            });
            detected += u64::from(alerted);
        }
    }
    (deaths, detected)
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

/// Requests that reached a service while the runner's breaker for it was open.
fn calls_to_open_breaker(trace: &[Event], run: &SimRun) -> u64 {
    let mut total = 0;
    for (name, api) in &run.apis {
        let mut open: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        let mut opened: Option<DateTime<Utc>> = None;
        for e in trace.iter().filter(|e| {
            e.event == EventKind::BreakerTransition && e.service.as_deref() == Some(name.as_str())
        }) {
            match e.to {
                Some(StateName::Breaker(BreakerState::Open)) => {
                    if opened.is_none() {
                        opened = Some(e.at);
                    }
                }
                _ => {
                    if let Some(o) = opened.take() {
                        open.push((o, e.at));
                    }
                }
            }
        }
        if let Some(o) = opened {
            open.push((o, run.end));
        }
        if open.is_empty() {
            continue;
        }
        total += api
            .requests()
            .iter()
            .filter(|r| r.path != "/health")
            .filter(|r| open.iter().any(|(a, b)| r.at > *a && r.at < *b))
            .count() as u64;
    }
    total
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
    let _ = StepKind::Command;
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

fn humanize(d: chrono::Duration) -> String {
    let mins = d.num_minutes();
    if mins % 60 == 0 {
        format!("{}h", mins / 60)
    } else {
        format!("{mins}m")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use steadfast_core::config::parse_config;
    use steadfast_core::env::EventSink;

    use super::*;

    #[test]
    fn output_times_read_only_new_events_and_judge_staleness_per_job() {
        let text = "[[jobs]]\nname = \"a\"\nevery = \"15m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n[[jobs]]\nname = \"b\"\nevery = \"15m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n";
        let config = parse_config(
            text,
            std::path::Path::new("/x.toml"),
            &steadfast_core::config::NoSecretSources,
        )
        .unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
        let min = |m: i64| t0 + chrono::Duration::minutes(m);
        let trace = MemorySink::default();
        let finished = |job: &str, outcome: Outcome, at| {
            Event::new(EventKind::RunFinished)
                .job(job)
                .outcome(outcome)
                .at(at)
        };
        trace.emit(finished("a", Outcome::Succeeded, min(15)));
        trace.emit(finished("b", Outcome::Failed, min(15)));
        let mut outputs = OutputTimes::default();
        outputs.update(&trace);
        // Threshold is twice the interval (30 min): b has had no output since the start.
        assert_eq!(outputs.stale_jobs(&config, t0, min(40)), ["b"]);
        trace.emit(finished("b", Outcome::Degraded, min(45)));
        outputs.update(&trace);
        assert_eq!(outputs.stale_jobs(&config, t0, min(50)), ["a"]);
        // A second update with nothing new changes nothing.
        outputs.update(&trace);
        assert_eq!(outputs.times["b"], vec![min(45)]);
        // A look back in time ignores later output.
        assert_eq!(outputs.stale_jobs(&config, t0, min(40)), ["b"]);
    }
}
