//! `runner bench-idle`: what the daemon costs when it mostly waits.
//!
//! Two phases on the production environment, in this process:
//! 1. busy: `jobs` jobs every `every` running a trivial command; schedule drift is
//!    measured from the core's own events (`run_started` time minus the due time
//!    encoded in its run id);
//! 2. idle: the same number of jobs on an hourly grid, none due: CPU and RSS of the
//!    waiting daemon.
//!
//! CPU is read from `/proc/self/stat` (Linux); elsewhere it is reported as unknown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::env::{DaemonEnv, Fanout};
use steadfast_core::alert::NoAlerts;
use steadfast_core::config::{NoSecretSources, parse_config};
use steadfast_core::env::{Env, EventSink, MemoryProbe};
use steadfast_core::event::{Event, EventKind};
use steadfast_core::job::RunId;
use steadfast_core::scheduler::Runner;

/// Start events kept at most.
const MAX_SAMPLES: usize = 1_000_000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How many jobs.
    pub jobs: usize,
    /// Their interval in the busy phase.
    pub every: Duration,
    /// Length of the busy phase.
    pub busy: Duration,
    /// Length of the idle phase.
    pub idle: Duration,
    /// A scratch directory for configs and state.
    pub dir: PathBuf,
}

/// The figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Jobs configured.
    pub jobs: usize,
    /// Runs started in the busy phase.
    pub runs: usize,
    /// Schedule drift, median, in ms.
    pub drift_p50_ms: f64,
    /// Schedule drift, 99th percentile, in ms.
    pub drift_p99_ms: f64,
    /// Largest drift, in ms.
    pub drift_max_ms: f64,
    /// CPU of this process during the busy phase, % of one core (runs included).
    pub busy_cpu_percent: Option<f64>,
    /// CPU of this process while idle, % of one core.
    pub idle_cpu_percent: Option<f64>,
    /// Resident memory at the end of the idle phase, MiB.
    pub idle_rss_mib: f64,
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Scratch files.
    #[error("failed to prepare {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The generated config was refused.
    #[error("the generated configuration is invalid: {0}")]
    Config(String),
    /// The runner did not start.
    #[error("failed to start the runner: {0}")]
    Start(String),
}

/// Collects `(started at, due)` of every run.
#[derive(Debug, Default)]
struct StartTap(Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>);

impl EventSink for StartTap {
    fn emit(&self, e: Event) {
        if e.event != EventKind::RunStarted {
            return;
        }
        let Some(due) = e.run_id.as_ref().map(RunId::due) else {
            return;
        };
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_SAMPLES {
            v.push((e.at, due));
        }
    }
}

fn config_text(state_dir: &Path, jobs: usize, every: Duration) -> String {
    let mut text = format!(
        "[runner]\nstate_dir = \"{}\"\nmonitor_interval = \"60s\"\n",
        state_dir.display()
    );
    for i in 0..jobs {
        text.push_str(&format!(
            "[[jobs]]\nname = \"job-{i:03}\"\nevery = \"{}s\"\n[[jobs.steps]]\nname = \"noop\"\nkind = \"command\"\nargv = [\"true\"]\ntimeout = \"5s\"\n",
            every.as_secs().max(1)
        ));
    }
    text
}

/// CPU seconds (user + system) of this process, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

async fn phase(
    dir: &Path,
    name: &str,
    jobs: usize,
    every: Duration,
    length: Duration,
    tap: Arc<StartTap>,
) -> Result<(Option<f64>, u64), BenchError> {
    let state = dir.join(name);
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).map_err(|source| BenchError::Io {
        path: state.clone(),
        source,
    })?;
    let file = dir.join(format!("{name}.toml"));
    let config = parse_config(&config_text(&state, jobs, every), &file, &NoSecretSources)
        .map_err(|d| BenchError::Config(d.to_string()))?;
    let env = DaemonEnv::new(Fanout::logging().with(tap));
    let runner = Runner::new(env.clone(), config, NoAlerts)
        .await
        .map_err(|e| BenchError::Start(e.to_string()))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    // The daemon keeps its status file while it runs; so does the bench.
    let writer = tokio::spawn(super::status_file::keep_written(
        env.clone(),
        runner.board(),
        state.clone(),
        rx.clone(),
    ));
    let task = tokio::spawn(runner.run(rx));
    // Let start-up settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = cpu_seconds();
    let wall0 = std::time::Instant::now();
    tokio::time::sleep(length).await;
    let cpu1 = cpu_seconds();
    let wall = wall0.elapsed().as_secs_f64();
    let rss = env.memory().resident_bytes();
    let _ = tx.send(true);
    let _ = task.await;
    let _ = writer.await;
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) if wall > 0.0 => Some((b - a) / wall * 100.0),
        _ => None,
    };
    Ok((cpu, rss))
}

/// The targets a report is judged against.
pub const TARGET_IDLE_CPU_PERCENT: f64 = 0.1;
/// RSS target, MiB.
pub const TARGET_RSS_MIB: f64 = 30.0;
/// Drift target (p99), ms.
pub const TARGET_DRIFT_P99_MS: f64 = 50.0;

impl BenchReport {
    /// Whether every target is met.
    pub fn meets_targets(&self) -> bool {
        self.cpu_met() && self.rss_met() && self.drift_met()
    }

    /// Idle CPU under its target (an unknown CPU figure is not a pass).
    fn cpu_met(&self) -> bool {
        self.idle_cpu_percent
            .is_some_and(|c| c < TARGET_IDLE_CPU_PERCENT)
    }

    fn rss_met(&self) -> bool {
        self.idle_rss_mib < TARGET_RSS_MIB
    }

    fn drift_met(&self) -> bool {
        self.drift_p99_ms < TARGET_DRIFT_P99_MS
    }

    /// A Markdown summary: figures against targets, and how they were taken.
    pub fn markdown(&self, opts: &BenchOptions, how: &str) -> String {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let cpu = |c: Option<f64>| c.map_or_else(|| "unknown".to_string(), |c| format!("{c:.3} %"));
        let mut out = String::new();
        out.push_str("# Daemon benchmark: idle cost and schedule drift\n\n");
        out.push_str(&format!(
            "{} command jobs (`true`), all due on the same instants every {} s for {} s \
             (busy phase), then the same jobs on an hourly grid for {} s (idle phase). \
             Drift is a run's start minus its due time, from the core's own \
             `run_started` events; CPU is user + system time of the process (children \
             excluded) over wall time, % of one core, counted in 10 ms ticks (over \
             {} s a tick is {:.3} %).\n\n",
            self.jobs,
            opts.every.as_secs(),
            opts.busy.as_secs(),
            opts.idle.as_secs(),
            opts.idle.as_secs(),
            1.0 / opts.idle.as_secs_f64().max(1.0),
        ));
        out.push_str("| figure | measured | target | |\n|---|---|---|---|\n");
        out.push_str(&format!(
            "| idle CPU | {} | < {TARGET_IDLE_CPU_PERCENT} % | {} |\n",
            cpu(self.idle_cpu_percent),
            verdict(self.cpu_met())
        ));
        out.push_str(&format!(
            "| idle RSS | {:.1} MiB | < {TARGET_RSS_MIB} MB | {} |\n",
            self.idle_rss_mib,
            verdict(self.rss_met())
        ));
        out.push_str(&format!(
            "| drift p99 ({} runs) | {:.1} ms | < {TARGET_DRIFT_P99_MS} ms | {} |\n",
            self.runs,
            self.drift_p99_ms,
            verdict(self.drift_met())
        ));
        out.push_str(&format!(
            "| drift p50 / max | {:.1} / {:.1} ms | | |\n",
            self.drift_p50_ms, self.drift_max_ms
        ));
        out.push_str(&format!(
            "| busy CPU (runs included) | {} | | |\n\n",
            cpu(self.busy_cpu_percent)
        ));
        out.push_str(how);
        out.push('\n');
        out
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs both phases (real time: `busy + idle` plus about a second).
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let tap = Arc::new(StartTap::default());
    let (busy_cpu, _) = phase(
        &opts.dir,
        "busy",
        opts.jobs,
        opts.every,
        opts.busy,
        tap.clone(),
    )
    .await?;
    let (idle_cpu, rss) = phase(
        &opts.dir,
        "idle",
        opts.jobs,
        Duration::from_secs(3600),
        opts.idle,
        Arc::new(StartTap::default()),
    )
    .await?;
    let starts = tap.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut drift: Vec<f64> = starts
        .iter()
        .map(|(at, due)| (*at - *due).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0)
        .collect();
    drift.sort_by(f64::total_cmp);
    Ok(BenchReport {
        jobs: opts.jobs,
        runs: drift.len(),
        drift_p50_ms: percentile(&drift, 50.0),
        drift_p99_ms: percentile(&drift, 99.0),
        drift_max_ms: drift.last().copied().unwrap_or(0.0),
        busy_cpu_percent: busy_cpu,
        idle_cpu_percent: idle_cpu,
        idle_rss_mib: rss as f64 / (1024.0 * 1024.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_target_is_named_in_the_report() {
        let report = BenchReport {
            jobs: 100,
            runs: 400,
            drift_p50_ms: 4.0,
            drift_p99_ms: 75.0,
            drift_max_ms: 80.0,
            busy_cpu_percent: Some(2.0),
            idle_cpu_percent: Some(0.02),
            idle_rss_mib: 11.0,
        };
        assert!(!report.meets_targets());
        let opts = BenchOptions {
            jobs: 100,
            every: Duration::from_secs(5),
            busy: Duration::from_secs(20),
            idle: Duration::from_secs(60),
            dir: PathBuf::from("/tmp"),
        };
        let md = report.markdown(&opts, "how");
        assert!(
            md.contains("| drift p99 (400 runs) | 75.0 ms | < 50 ms | MISSED |"),
            "{md}"
        );
        assert!(
            md.contains("| idle CPU | 0.020 % | < 0.1 % | met |"),
            "{md}"
        );
        let unknown = BenchReport {
            idle_cpu_percent: None,
            drift_p99_ms: 10.0,
            ..report
        };
        assert!(
            !unknown.meets_targets(),
            "an unknown CPU figure is not a pass"
        );
    }

    #[test]
    fn percentiles_pick_by_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }
}
