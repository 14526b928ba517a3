//! Measures: what the field report measured, computed after a run by the independent
//! [`judge`](crate::judge) from what the world's services saw (its ledger), the
//! operator's inbox and the scenario's intended configuration. Invariant checkers
//! live here too, apart from the simulator.
//!
//! Definitions (the report repeats them; [`crate::judge`] has the details):
//! - A *slot* is a due time of a job's schedule within the world (the judge's own
//!   reference), skipping times when some step of the job may not run (its time window
//!   is closed: that work is not wanted then, whatever the profile).
//! - A slot *produced output* when the services applied the side effects of its job's
//!   writing steps for it (a read-only job: its last read answered), matched by the
//!   run id in the request body; *degraded* when only some were.
//! - A slot that produced nothing while the runner's host was away (asleep, or crashed
//!   by the world until the restart it scheduled) is *missed while away* unless the
//!   job's catch-up policy owed a run for it on the host's return (`latest`: the last
//!   due time at or before the return; `all`: every slot in the catch-up window).
//! - Any other slot that produced nothing is *failed* when an alert about the job (or
//!   the whole runner) reached the operator after the job last worked and before one
//!   heartbeat threshold after the slot ended; otherwise it is *lost*: due, no output,
//!   nobody told.
//! - *Uptime* is the share of minutes in which every job is within its heartbeat
//!   threshold of its last output at the services (or of a slot its window skipped).
//! - Rate-limit violations are every 429 the world answered; calls inside a
//!   `Retry-After` count requests that arrived while one their service advertised (to
//!   anyone) was running.
//!
//! Silent deaths and calls to an open breaker still read the runner's events (a hung
//! run and a breaker's state are the runner's own); [`crate::self_report`] keeps the
//! old trace-based measures for comparison only.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use steadfast_core::alert::Alert;
use steadfast_core::breaker::BreakerState;
use steadfast_core::config::Config;
use steadfast_core::event::{Event, EventKind, MemorySink, Outcome, SkipReason, StateName};
use steadfast_core::job::RunId;

use crate::driver::SimRun;
use crate::judge::{self, Case, Judgement};
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
    /// Slots without output due while the runner's host was away (asleep, or crashed by
    /// the world until its restart) that the job's catch-up policy did not owe: missed
    /// with the host, neither lost nor failed.
    pub host_away_runs: u64,
    /// `lost_runs / scheduled_runs`.
    pub lost_task_rate: f64,
    /// Share of time every job was within its heartbeat threshold.
    pub uptime_ratio: f64,
    /// Times a human had to fix something.
    pub manual_interventions: u64,
    /// Simulated hours per intervention (the whole run when there were none).
    pub hours_between_interventions: f64,
    /// Requests the world answered 429 (per-minute limit, daily quota or storm).
    pub rate_limit_violations: u64,
    /// Requests that arrived inside a `Retry-After` their service had advertised to
    /// anyone.
    pub calls_inside_retry_after: u64,
    /// Work a step did for a run before the services saw the steps it `needs` done for
    /// that run (a publish without its upload).
    pub unmet_prerequisites: u64,
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
    /// Requests the services received, token servers included and health probes
    /// aside, whoever answered (the service or an injected fault).
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

pub(crate) fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Whether the event shows a job doing what it should: a run that produced its output
/// (or saved its progress), or a slot skipped because its window was closed.
pub(crate) fn is_output(e: &Event) -> bool {
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

/// What the judge reads from a finished run: the scenario's intended configuration in
/// the world's zone, the world's ledger and the operator's inbox.
pub fn judge_run(scenario: &Scenario, run: &SimRun, alerts: &[Alert]) -> Judgement {
    let ledger = run.world.ledger();
    // Read before `with_entries` takes the ledger's lock.
    let ledger_dropped = ledger.dropped();
    let away = run.world.host_away().spans(run.end);
    let away_dropped = run.world.host_away().dropped();
    let boots = run.world.host_away().boots();
    let steps = run.world.host_away().steps();
    ledger.with_entries(|entries| {
        judge::judge(&Case {
            config: &scenario.config,
            zone: scenario.world.zone,
            start: run.start,
            end: run.end,
            ledger: entries,
            ledger_dropped,
            alerts,
            away: &away,
            boots: &boots,
            steps: &steps,
            away_dropped,
        })
    })
}

/// Computes every measure and invariant of a finished run.
pub fn evaluate(scenario: &Scenario, run: &SimRun) -> Verdict {
    let alerts: Vec<Alert> = if run.profile.alerts_delivered() {
        run.operator.alerts()
    } else {
        Vec::new()
    };
    let judged = judge_run(scenario, run, &alerts);
    let config = &run.config;
    let mut m = Metrics {
        scheduled_runs: judged.slots.scheduled,
        succeeded_runs: judged.slots.succeeded,
        degraded_runs: judged.slots.degraded,
        failed_runs: judged.slots.failed,
        lost_runs: judged.slots.lost,
        host_away_runs: judged.slots.away,
        uptime_ratio: judged.uptime_ratio,
        rate_limit_violations: judged.too_many_requests,
        calls_inside_retry_after: judged.calls_inside_retry_after,
        unmet_prerequisites: judged.unmet_prerequisites,
        token_expired_errors: judged.expired_token_calls,
        duplicate_side_effects: judged.duplicate_side_effects,
        window_violations: judged.window_violations,
        calls: judged.calls,
        runner_starts: run.world.boots(),
        ..Metrics::default()
    };
    m.lost_task_rate = if m.scheduled_runs == 0 {
        0.0
    } else {
        m.lost_runs as f64 / m.scheduled_runs as f64
    };
    m.manual_interventions = run.interventions.len() as u64;
    let hours = run.simulated_seconds / 3600.0;
    m.hours_between_interventions = if run.interventions.is_empty() {
        hours
    } else {
        hours / run.interventions.len() as f64
    };
    run.world.trace().with_events(|trace| {
        m.retries = count(trace, EventKind::RetryScheduled);
        m.token_refreshes = count(trace, EventKind::TokenRefreshed);
        let (deaths, detected) = silent_deaths(trace, config, run, &alerts);
        m.silent_deaths = deaths;
        m.silent_deaths_detected = detected;
        m.calls_to_open_breaker = calls_to_open_breaker(trace, run);
    });
    let invariants = invariants(scenario, &m, &judged);
    let liveness = liveness(scenario, &judged, run);
    Verdict {
        metrics: m,
        invariants,
        liveness,
        lost_slots: judged.slots.lost_slots,
    }
}

/// The safety invariants over the measures, and the judge's own completeness.
pub(crate) fn invariants(scenario: &Scenario, m: &Metrics, judged: &Judgement) -> Vec<Invariant> {
    let mut all = safety_invariants(scenario, m);
    all.push(Invariant {
        name: "judge_complete".into(),
        holds: judged.problems.is_empty(),
        violations: judged.problems.len() as u64,
        detail: if judged.problems.is_empty() {
            "every request recorded, every job's work visible".into()
        } else {
            judged.problems.join("; ")
        },
    });
    all
}

/// The scenario's safety invariants over `m`, whoever measured it.
pub(crate) fn safety_invariants(scenario: &Scenario, m: &Metrics) -> Vec<Invariant> {
    let inv = &scenario.invariants;
    let le = |name: &str, value: u64, max: u64| Invariant {
        name: name.to_string(),
        holds: value <= max,
        violations: value.saturating_sub(max),
        detail: format!("{value} (at most {max})"),
    };
    vec![
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
    ]
}

pub(crate) fn count(trace: &[Event], kind: EventKind) -> u64 {
    trace.iter().filter(|e| e.event == kind).count() as u64
}

/// Runner-level deaths (injected) and runs that hung; with how many were noticed.
pub(crate) fn silent_deaths(
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

/// Requests that reached a service while the runner's breaker for it was open.
pub(crate) fn calls_to_open_breaker(trace: &[Event], run: &SimRun) -> u64 {
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

/// After the last fault heals, every job must produce output at the services within
/// the bound of its first slot after healing (the judge's slots and outputs).
fn liveness(scenario: &Scenario, judged: &Judgement, run: &SimRun) -> Option<Invariant> {
    let heal = run.start + to_chrono(scenario.faults_heal_at());
    let bound = to_chrono(scenario.invariants.recovery_bound);
    let mut late = Vec::new();
    for (name, view) in &judged.jobs {
        let Some(first) = view.slots.slots.iter().find(|s| **s > heal) else {
            continue;
        };
        let deadline = *first + bound;
        if deadline >= run.end {
            continue;
        }
        let recovered = view.outputs.iter().any(|t| *t >= heal && *t <= deadline);
        if !recovered {
            late.push(name.clone());
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

pub(crate) fn humanize(d: chrono::Duration) -> String {
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
