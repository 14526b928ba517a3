//! `sim report`: the field report reproduced from real runs, as Markdown and HTML.
//!
//! A study runs a scenario under several profiles and seeds in parallel threads, keeps
//! a small summary of each run (its [`Metrics`](crate::metrics::Metrics) from
//! [`evaluate`], per-day counts and per-job health bands taken from the trace), runs the
//! jitter experiment, and renders one document two ways. Nothing in the report is a
//! constant except the field report's own numbers, which are quoted as such.
//!
//! - [`stats`]: mean and spread over seeds.
//! - [`svg`]: hand-written SVG charts.
//! - [`jitter`]: N jobs sharing one rate-limited API under each jitter mode.
//! - [`showcase`]: the focused world in which each pattern shows what it buys.
//! - [`doc`]: the report as blocks (headings, tables, charts) built from the runs.
//! - [`markdown`] and [`html`]: the two renderings.

pub mod doc;
pub mod html;
pub mod jitter;
pub mod markdown;
pub mod showcase;
pub mod stats;
pub mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use steadfast_core::event::{Event, EventKind, Outcome, SkipReason};

use crate::driver::{SimError, SimRun, simulate};
use crate::metrics::{Metrics, evaluate};
use crate::scenario::{Profile, Scenario, profile};
use svg::{Band, Health};

/// Resolution of the health timeline.
const HEALTH_STEP_MINUTES: i64 = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct StudyOptions {
    /// The world of the before/after and ablation tables.
    pub scenario: Scenario,
    /// Seeds, each run under every profile.
    pub seeds: Vec<u64>,
    /// Profiles, in report order (`naive` and `self-healing` feed the before/after
    /// table; `self-healing` and `no-*` the ablation).
    pub profiles: Vec<Profile>,
    /// The jitter experiment's world, if it is to run.
    pub jitter: Option<Scenario>,
    /// Whether to run each pattern's focused world ([`showcase`]).
    pub showcase: bool,
    /// Worker threads.
    pub threads: usize,
    /// The command line that produced the report (named in it).
    pub command: String,
    /// The commit that produced it (named in it).
    pub commit: String,
}

impl StudyOptions {
    /// The full study: `naive`, `self-healing` and every ablation profile, seeds `1..=seeds`.
    pub fn full(scenario: Scenario, seeds: u64, jitter: Option<Scenario>) -> Self {
        let profiles = profile::ALL.to_vec();
        Self {
            scenario,
            seeds: (1..=seeds.max(1)).collect(),
            profiles,
            jitter,
            showcase: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            command: String::new(),
            commit: String::new(),
        }
    }
}

/// Counts of one simulated day (24 h from the world's start, not a calendar day).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DayCounts {
    /// Slots that produced nothing and raised no alert (as [`evaluate`] counts them).
    pub lost: u64,
    /// 429 answers the world gave (per-minute limit, daily quota, storms).
    pub rate_limited: u64,
}

/// What the report keeps of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    /// Profile name.
    pub profile: &'static str,
    /// Seed.
    pub seed: u64,
    /// The measures from [`evaluate`].
    pub metrics: Metrics,
    /// The field report's figures as calibration reads them ([`crate::calibrate::measures`]).
    pub field: crate::calibrate::Measures,
    /// Simulated days.
    pub days: f64,
    /// Per simulated day.
    pub per_day: Vec<DayCounts>,
    /// Per job: health bands in hours from the start.
    pub health: Vec<(String, Vec<Band>)>,
    /// Whether every invariant and liveness held.
    pub exit_code: u8,
    /// Wall time of the simulation.
    pub simulate_seconds: f64,
    /// Wall time of measuring it ([`evaluate`] and the charts' data).
    pub measure_seconds: f64,
}

/// Every run of a study plus the jitter experiment.
#[derive(Debug, Clone)]
pub struct Study {
    /// What was asked for.
    pub options: StudyOptions,
    /// Runs, in profile order then seed order.
    pub runs: Vec<RunSummary>,
    /// The jitter experiment, if it ran.
    pub jitter: Option<jitter::JitterStudy>,
    /// Each pattern's focused world, both ways (empty when not run).
    pub showcase: Vec<showcase::ShowcaseResult>,
    /// Wall time of the whole study.
    pub wall_seconds: f64,
}

impl Study {
    /// The runs of one profile.
    pub fn runs_of(&self, profile: &str) -> Vec<&RunSummary> {
        self.runs.iter().filter(|r| r.profile == profile).collect()
    }

    /// Whether a profile was run.
    pub fn has(&self, profile: &str) -> bool {
        self.runs.iter().any(|r| r.profile == profile)
    }
}

/// Runs `f` over `items` on `threads` scoped threads; results come back in item order.
pub fn parallel<I: Sync, T: Send>(
    items: &[I],
    threads: usize,
    f: impl Fn(&I) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<T>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let out = f(item);
                    slots.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Runs the study. `progress` gets one line per finished run (from worker threads).
pub fn run(options: StudyOptions, progress: &(dyn Fn(&str) + Sync)) -> Result<Study, SimError> {
    let started = Instant::now();
    let scenario = &options.scenario;
    let tasks: Vec<(Profile, u64)> = options
        .profiles
        .iter()
        .flat_map(|p| options.seeds.iter().map(move |s| (*p, *s)))
        .collect();
    let total = tasks.len();
    let done = AtomicUsize::new(0);
    let results = parallel(&tasks, options.threads, |(profile, seed)| {
        let t = Instant::now();
        // A `[swarm]` section adds the faults each seed draws to the timeline.
        let (scenario, _) = crate::scenario::swarm::with_seed(scenario, *seed);
        let scenario = &scenario;
        let out = simulate(scenario, *seed, *profile, &mut |_| {}).map(|run| {
            let simulated = t.elapsed().as_secs_f64();
            let mut summary = summarize(scenario, &run);
            summary.simulate_seconds = simulated;
            summary.measure_seconds = t.elapsed().as_secs_f64() - simulated;
            summary
        });
        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
        let timing = out.as_ref().map_or(String::new(), |s| {
            format!(
                ": simulated in {:.2}s, measured in {:.2}s",
                s.simulate_seconds, s.measure_seconds
            )
        });
        progress(&format!(
            "[{n}/{total}] {} seed {seed}{timing}",
            profile.name
        ));
        out
    });
    let runs = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let jitter = match &options.jitter {
        Some(world) => Some(jitter::run(
            world,
            &options.seeds,
            options.threads,
            progress,
        )?),
        None => None,
    };
    let showcase = if options.showcase {
        progress("showcase: each pattern's focused world, self-healing and without it");
        showcase::run(&options.seeds, options.threads)?
    } else {
        Vec::new()
    };
    Ok(Study {
        options,
        runs,
        jitter,
        showcase,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// What the report keeps of a finished run.
pub fn summarize(scenario: &Scenario, run: &SimRun) -> RunSummary {
    let verdict = evaluate(scenario, run);
    let days = run.simulated_seconds / 86_400.0;
    let n_days = (days.ceil() as usize).max(1);
    let mut per_day = vec![DayCounts::default(); n_days];
    let day_of = |at: DateTime<Utc>| -> usize {
        let d = (at - run.start).num_seconds().max(0) / 86_400;
        usize::try_from(d).unwrap_or(usize::MAX).min(n_days - 1)
    };
    // The metrics' own lost slots (`job@due`), so the chart and the table agree.
    for entry in &verdict.lost_slots {
        if let Some(at) = entry
            .split_once('@')
            .and_then(|(_, at)| DateTime::parse_from_rfc3339(at).ok())
        {
            per_day[day_of(at.with_timezone(&Utc))].lost += 1;
        }
    }
    // Every 429 the world answered, as the judge counts them.
    run.world.ledger().with_entries(|entries| {
        for e in entries.iter().filter(|e| e.status == 429) {
            per_day[day_of(e.at)].rate_limited += 1;
        }
    });
    RunSummary {
        profile: run.profile.name,
        seed: run.seed,
        metrics: verdict.metrics.clone(),
        field: crate::calibrate::measures(scenario, run),
        days,
        per_day,
        health: run
            .world
            .trace()
            .with_events(|trace| health_bands(run, trace)),
        exit_code: verdict.exit_code(),
        simulate_seconds: 0.0,
        measure_seconds: 0.0,
    }
}

fn to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Per-job health over the world, sampled every few minutes and merged into bands:
/// *down* when the runner is not running or the job is past its heartbeat threshold
/// without output, *failing* when its last finished run produced nothing, else *ok*.
fn health_bands(run: &SimRun, trace: &[Event]) -> Vec<(String, Vec<Band>)> {
    // Runner up/down changes, from the driver's timeline and the trace.
    let mut changes: Vec<(DateTime<Utc>, bool)> = run
        .timeline
        .iter()
        .filter(|e| {
            matches!(
                e.what.as_str(),
                "crash" | "silent_death" | "oom_kill" | "exit"
            )
        })
        .map(|e| (e.at, false))
        .collect();
    changes.extend(
        trace
            .iter()
            .filter(|e| e.event == EventKind::RunnerStarted)
            .map(|e| (e.at, true)),
    );
    changes.sort();
    let step = chrono::Duration::minutes(HEALTH_STEP_MINUTES);
    let hours = |t: DateTime<Utc>| (t - run.start).num_seconds() as f64 / 3600.0;
    let mut rows = Vec::new();
    for job in &run.config.jobs {
        let name = job.name.as_str();
        // (time, produced output?) of every finish, plus window skips as output.
        let mut marks: Vec<(DateTime<Utc>, bool)> = trace
            .iter()
            .filter(|e| e.job.as_deref() == Some(name))
            .filter_map(|e| match e.event {
                EventKind::RunFinished => Some((e.at, e.outcome.is_some_and(Outcome::is_ok))),
                EventKind::RunSkipped if e.reason == Some(SkipReason::Window) => Some((e.at, true)),
                _ => None,
            })
            .collect();
        marks.sort();
        let threshold = to_chrono(job.heartbeat_threshold);
        let (mut mi, mut ci) = (0usize, 0usize);
        let mut last_good = run.start;
        let mut last_ok = true;
        let mut up = true;
        let mut bands: Vec<Band> = Vec::new();
        let mut t = run.start;
        while t < run.end {
            while mi < marks.len() && marks[mi].0 <= t {
                last_ok = marks[mi].1;
                if last_ok {
                    last_good = marks[mi].0;
                }
                mi += 1;
            }
            while ci < changes.len() && changes[ci].0 <= t {
                up = changes[ci].1;
                ci += 1;
            }
            let health = if !up || t - last_good > threshold {
                Health::Down
            } else if !last_ok {
                Health::Failing
            } else {
                Health::Ok
            };
            let next = (t + step).min(run.end);
            match bands.last_mut() {
                Some(b) if b.health == health => b.end = hours(next),
                _ => bands.push(Band {
                    start: hours(t),
                    end: hours(next),
                    health,
                }),
            }
            t = next;
        }
        rows.push((job.name.clone(), bands));
    }
    rows
}

/// The short commit of the working tree, with `-dirty` when it has uncommitted changes.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    Some(commit)
}

/// The scenario `sim report` uses without an argument.
pub fn default_scenario_path() -> Option<PathBuf> {
    ["scenarios/mac-mini-3-weeks.toml", "scenarios/default.toml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Writes `field-report.md` and `field-report.html` into `dir`; returns their paths.
pub fn write(study: &Study, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let document = doc::build(study);
    let md = dir.join("field-report.md");
    let html = dir.join("field-report.html");
    std::fs::write(&md, markdown::render(&document))?;
    std::fs::write(&html, html::render(&document))?;
    Ok(vec![md, html])
}

/// Per-profile samples of every measure, by the measure's JSON name.
pub fn samples(runs: &[&RunSummary]) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in runs {
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&r.metrics) {
            for (k, v) in map {
                if let Some(x) = v.as_f64() {
                    out.entry(k).or_default().push(x);
                }
            }
        }
    }
    out
}

/// `sim report`: runs the study and writes the two files; returns the exit code
/// (0 written, 1 a simulation failed, 2 bad input or an unwritable folder).
pub fn command(
    scenario: Option<&Path>,
    seeds: u64,
    out: &Path,
    threads: Option<usize>,
    commit: Option<String>,
) -> u8 {
    let path = scenario
        .map(Path::to_path_buf)
        .or_else(default_scenario_path);
    let world = match &path {
        Some(p) => match Scenario::load(p) {
            Ok(s) => s,
            Err(d) => {
                eprintln!("{d}");
                return 2;
            }
        },
        None => Scenario::default_scenario(),
    };
    let herd = match jitter::scenario() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: the embedded jitter world is invalid: {e}");
            return 2;
        }
    };
    if seeds == 0 {
        eprintln!("error: --seeds must be at least 1 (hint: the default is 5)");
        return 2;
    }
    let mut options = StudyOptions::full(world, seeds, Some(herd));
    if let Some(t) = threads {
        options.threads = t.max(1);
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.insert(0, "sim".into());
    options.command = args.join(" ");
    options.commit = commit
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    eprintln!(
        "report: {} ({}), {} seed(s) x {} profile(s) + jitter experiment, {} thread(s), commit {}",
        options.scenario.name,
        path.as_ref()
            .map_or("embedded".into(), |p| p.display().to_string()),
        options.seeds.len(),
        options.profiles.len(),
        options.threads,
        options.commit
    );
    let study = match run(options, &|line| eprintln!("{line}")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match write(&study, out) {
        Ok(files) => {
            for f in files {
                eprintln!("wrote {}", f.display());
            }
            eprintln!("report: {:.1}s wall", study.wall_seconds);
            0
        }
        Err(e) => {
            eprintln!(
                "error: failed to write the report to {}: {e} (hint: check --out)",
                out.display()
            );
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stats::Summary;
    use super::*;

    fn default_world() -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/default.toml");
        Scenario::load(&path).unwrap()
    }

    /// The cells of the Markdown table row whose first cell is `label`.
    fn row<'a>(md: &'a str, label: &str) -> Vec<&'a str> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row `{label}` in:\n{md}"));
        line.trim_matches('|').split(" | ").map(str::trim).collect()
    }

    #[test]
    fn report_tables_hold_the_numbers_evaluate_gives() {
        let scenario = default_world();
        let names = ["naive", "self-healing", "no-retry"];
        let options = StudyOptions {
            scenario: scenario.clone(),
            seeds: vec![1],
            profiles: names.iter().map(|n| Profile::named(n).unwrap()).collect(),
            jitter: None,
            showcase: false,
            threads: 2,
            command: "sim report scenarios/default.toml --seeds 1".into(),
            commit: "abc1234".into(),
        };
        let lines = Mutex::new(0usize);
        let study = run(options, &|_| *lines.lock().unwrap() += 1).unwrap();
        assert_eq!(
            *lines.lock().unwrap(),
            names.len(),
            "one progress line per run"
        );
        let md = markdown::render(&doc::build(&study));
        assert!(md.contains("`sim report scenarios/default.toml --seeds 1`"));
        assert!(md.contains("`abc1234`"));
        let mut direct = BTreeMap::new();
        for name in names {
            let run = simulate(&scenario, 1, Profile::named(name).unwrap(), &mut |_| {}).unwrap();
            let m = evaluate(&scenario, &run).metrics;
            let summary = &study.runs_of(name)[0];
            assert_eq!(
                summary.metrics, m,
                "{name}: the study keeps what evaluate says"
            );
            let lost: u64 = summary.per_day.iter().map(|d| d.lost).sum();
            assert_eq!(
                lost, m.lost_runs,
                "{name}: lost per day adds up to lost_runs"
            );
            let limited: u64 = summary.per_day.iter().map(|d| d.rate_limited).sum();
            assert_eq!(
                limited, m.rate_limit_violations,
                "{name}: every 429 is a violation, on the day it was answered"
            );
            direct.insert(name, m);
        }
        let days = scenario.world.duration.as_secs_f64() / 86_400.0;
        let pct = |x: f64| format!("{:.2}%", x * 100.0);
        let lost = row(&md, "lost tasks (lost-task rate)");
        assert_eq!(lost[3], pct(direct["naive"].lost_task_rate));
        assert_eq!(lost[4], pct(direct["self-healing"].lost_task_rate));
        let per_day = |n: u64| doc::fmt_summary(&Summary::of(&[n as f64 / days]), doc::Unit::Count);
        let rl = row(&md, "rate-limit violations per day");
        assert_eq!(rl[3], per_day(direct["naive"].rate_limit_violations));
        assert_eq!(rl[4], per_day(direct["self-healing"].rate_limit_violations));
        // The ablation table: columns self-healing, no-retry.
        let retries = row(&md, "retries");
        assert_eq!(retries[1], direct["self-healing"].retries.to_string());
        assert_eq!(retries[2], direct["no-retry"].retries.to_string());
        assert_eq!(
            row(&md, "lost-task rate")[2],
            pct(direct["no-retry"].lost_task_rate)
        );
        assert!(md.contains("(`no-retry`)"), "a sentence for the pattern");
        // Naive and self-healing must differ somewhere, or the world tests nothing.
        assert_ne!(direct["naive"], direct["self-healing"]);
        // Both pages render, and the HTML carries the charts.
        let page = html::render(&doc::build(&study));
        assert_eq!(
            page.matches("<svg").count(),
            4,
            "two timelines and two per-day charts"
        );
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    }

    #[test]
    fn parallel_keeps_item_order() {
        let items: Vec<u64> = (0..50).collect();
        let out = parallel(&items, 3, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(parallel(&Vec::<u64>::new(), 2, |i| *i).is_empty());
    }
}
