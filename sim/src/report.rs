//! What a run writes for people: `report.json`, `report.md` and `trace.jsonl`.

use std::io;
use std::path::Path;

use crate::driver::{SimRun, WorldEvent};
use crate::metrics::{Invariant, Metrics, Verdict};
use crate::operator::Intervention;
use crate::scenario::{FaultSpec, Scenario};

/// Timeline entries kept in `report.json`.
const REPORT_TIMELINE: usize = 500;

/// `report.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Profile name.
    pub profile: String,
    /// SHA-256 of `trace.jsonl`, hex.
    pub trace_hash: String,
    /// Events in the trace.
    pub trace_events: usize,
    /// Simulated time.
    pub simulated_seconds: f64,
    /// Wall time the simulation took.
    pub wall_seconds: f64,
    /// The measures.
    pub metrics: Metrics,
    /// Every invariant, liveness last.
    pub invariants: Vec<Invariant>,
    /// 0 all hold, 1 an invariant was violated, 3 liveness failed.
    pub exit_code: u8,
    /// The command that reproduces this run.
    pub replay: String,
    /// The first 50 lost slots (`job@due`).
    pub lost_slots: Vec<String>,
    /// Manual interventions.
    pub interventions: Vec<Intervention>,
    /// The faults of the scenario.
    pub faults: Vec<FaultSpec>,
    /// What the world did (first entries).
    pub timeline: Vec<WorldEvent>,
}

/// The command that reproduces a run of `scenario` with `seed` and `profile`: `sim replay`
/// with the scenario's file, `sim replay <seed>` alone for a swarm world (drawn from the
/// seed), and `sim run --seed` for the embedded default scenario (which `sim replay`
/// without a file would replace by a swarm world).
pub fn replay_command(scenario: &Scenario, seed: u64, profile: &str) -> String {
    match &scenario.file {
        Some(f) => format!(
            "sim replay {seed} --scenario {} --profile {profile}",
            f.display()
        ),
        None if scenario.name == "swarm" => format!("sim replay {seed} --profile {profile}"),
        None => format!("sim run --seed {seed} --profile {profile}"),
    }
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(scenario: &Scenario, run: &SimRun, verdict: &Verdict, wall_seconds: f64) -> Self {
        let mut invariants = verdict.invariants.clone();
        invariants.extend(verdict.liveness.clone());
        Self {
            scenario: scenario.name.clone(),
            seed: run.seed,
            profile: run.profile.name.to_string(),
            trace_hash: run.world.trace().digest(),
            trace_events: run.world.trace().len(),
            simulated_seconds: run.simulated_seconds,
            wall_seconds,
            metrics: verdict.metrics.clone(),
            invariants,
            exit_code: verdict.exit_code(),
            replay: replay_command(scenario, run.seed, run.profile.name),
            lost_slots: verdict.lost_slots.iter().take(50).cloned().collect(),
            interventions: run.interventions.clone(),
            faults: scenario.faults.clone(),
            timeline: run.timeline.iter().take(REPORT_TIMELINE).cloned().collect(),
        }
    }

    /// The human-readable summary.
    pub fn markdown(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        out.push_str(&format!(
            "# Simulation report: `{}`, profile `{}`, seed {}\n\n",
            self.scenario, self.profile, self.seed
        ));
        out.push_str(&format!(
            "{:.1} simulated days in {:.2} s wall. Trace: {} events, sha256 `{}`.\n\nReproduce: `{}`\n\n",
            self.simulated_seconds / 86_400.0,
            self.wall_seconds,
            self.trace_events,
            self.trace_hash,
            self.replay
        ));
        out.push_str("## Measures\n\n| measure | value |\n|---|---|\n");
        let rows: Vec<(&str, String)> = vec![
            ("scheduled runs", m.scheduled_runs.to_string()),
            ("succeeded", m.succeeded_runs.to_string()),
            ("degraded (some step skipped)", m.degraded_runs.to_string()),
            ("failed (a human was told)", m.failed_runs.to_string()),
            ("lost (no output, nobody told)", m.lost_runs.to_string()),
            (
                "lost-task rate",
                format!("{:.2}%", m.lost_task_rate * 100.0),
            ),
            (
                "uptime (every job within its heartbeat threshold)",
                format!("{:.2}%", m.uptime_ratio * 100.0),
            ),
            ("manual interventions", m.manual_interventions.to_string()),
            (
                "hours between interventions",
                format!("{:.1}", m.hours_between_interventions),
            ),
            (
                "rate-limit violations (every 429)",
                m.rate_limit_violations.to_string(),
            ),
            (
                "calls inside a Retry-After",
                m.calls_inside_retry_after.to_string(),
            ),
            (
                "calls with an expired token",
                m.token_expired_errors.to_string(),
            ),
            (
                "silent deaths (detected)",
                format!("{} ({})", m.silent_deaths, m.silent_deaths_detected),
            ),
            (
                "duplicate side effects",
                m.duplicate_side_effects.to_string(),
            ),
            (
                "actions outside their window",
                m.window_violations.to_string(),
            ),
            (
                "calls to an open breaker",
                m.calls_to_open_breaker.to_string(),
            ),
            (
                "calls / retries / token refreshes / runner starts",
                format!(
                    "{} / {} / {} / {}",
                    m.calls, m.retries, m.token_refreshes, m.runner_starts
                ),
            ),
        ];
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str("\n## Invariants\n\n| invariant | holds | detail |\n|---|---|---|\n");
        for i in &self.invariants {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                i.name,
                if i.holds { "yes" } else { "**no**" },
                i.detail
            ));
        }
        if !self.interventions.is_empty() {
            out.push_str("\n## Manual interventions\n\n| when | why | faults since the last one |\n|---|---|---|\n");
            for i in self.interventions.iter().take(100) {
                out.push_str(&format!(
                    "| {} | {} | {} |\n",
                    i.at.format("%Y-%m-%d %H:%M"),
                    i.reason.replace('|', "/"),
                    i.recent_faults.join(", ")
                ));
            }
        }
        out
    }

    /// Writes `report.json`, `report.md` and `trace.jsonl` into `dir`.
    pub fn write(&self, dir: &Path, run: &SimRun) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(dir.join("report.json"), json + "\n")?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("trace.jsonl"), run.world.trace().to_jsonl())?;
        Ok(())
    }
}
