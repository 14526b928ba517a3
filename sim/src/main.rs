//! `sim`: run, replay and sweep deterministic chaos simulations of the runner core.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sim::driver::simulate;
use sim::metrics::evaluate;
use sim::report::{Report, replay_command};
use sim::scenario::{Profile, Scenario, profile, swarm};
use steadfast_core::say;

/// mimalloc rather than the system allocator: the simulated runner allocates per
/// request, query and event, and the system allocator was a tenth of `sim bench`'s time
/// (and let a two-thread sweep's memory grow to a gigabyte).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes (documented in `--help` and the README).
mod exit {
    /// Every invariant held.
    pub(crate) const OK: u8 = 0;
    /// A safety invariant was violated.
    pub(crate) const VIOLATED: u8 = 1;
    /// Bad input or usage.
    pub(crate) const USAGE: u8 = 2;
    /// Liveness: after faults healed a job did not recover within its bound.
    pub(crate) const LIVENESS: u8 = 3;
}

const AFTER_HELP: &str = "\
Exit codes:
  0    every invariant held
  1    an invariant was violated (the report says which; the replay command reproduces it)
  2    bad input or usage (every problem in a scenario file is listed with file:line, key, hint)
  3    liveness failure: after the faults healed, a job did not recover within its bound
  141  stdout was closed early (a reader such as `head` exited); the rest was not printed

Examples:
  sim run                                      # the embedded default scenario, seed 1
  sim run scenarios/token-expiry.toml --profile naive --seed 7
  sim run scenarios/default.toml --check-determinism
  sim replay 7 --scenario scenarios/token-expiry.toml
  sim replay 42                                # a swarm world drawn from seed 42 alone
  sim sweep --swarm --seeds 200 --jobs 2
  sim sweep scenarios/crash-mid-commit.toml --first-seed 1000 --seeds 50
  sim calibrate                                # fit [calibration] of scenarios/mac-mini-3-weeks.toml
  sim calibrate --check                        # fit and prediction tables, no fit";

/// Steadfast's chaos simulator: the runner core, unchanged, in a deterministic world.
#[derive(Debug, Parser)]
#[command(name = "sim", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario and write report.json, report.md and trace.jsonl.
    #[command(
        after_help = "Example:\n  sim run scenarios/default.toml --seed 3 --profile naive --out out/naive"
    )]
    Run {
        /// The scenario file (default: the embedded default scenario).
        scenario: Option<PathBuf>,
        /// The seed (default: the scenario's `world.seed`).
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        common: Common,
        /// Run twice and fail (exit 1) if the trace hashes differ.
        #[arg(long)]
        check_determinism: bool,
    },
    /// Reproduce a run exactly from its seed (same trace hash).
    #[command(
        after_help = "Examples:\n  sim replay 7 --scenario scenarios/token-expiry.toml\n  sim replay 42   # the swarm world of seed 42"
    )]
    Replay {
        /// The seed printed by the run to reproduce.
        seed: u64,
        /// The scenario; without it, the swarm world drawn from the seed alone.
        #[arg(long)]
        scenario: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Run many seeds in parallel; list every failing seed with the invariants it broke
    /// and the command that replays it.
    #[command(
        after_help = "Seeds run are --first-seed .. --first-seed + --seeds - 1. Each failing seed is printed as\n  seed 7: broke no_silent_loss, liveness: sim replay 7 --scenario FILE --profile P\nand the exit code is the worst seed's (1 a safety invariant, 3 liveness only).\n\nExamples:\n  sim sweep scenarios/default.toml --seeds 50\n  sim sweep --swarm --seeds 200 --jobs 2\n  sim sweep --swarm --first-seed 10000 --seeds 500   # the next 500 swarm worlds"
    )]
    Sweep {
        /// The scenario file (default: the embedded default scenario).
        scenario: Option<PathBuf>,
        /// Draw a swarm world per seed instead of the scenario's faults.
        #[arg(long, conflicts_with = "scenario")]
        swarm: bool,
        /// How many seeds.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// The first seed (the sweep runs this one and the next `--seeds - 1`).
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Worker threads (default: the number of cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        jobs: Option<u64>,
        /// The profile: self-healing, naive, or no-<pattern> (default: the scenario's).
        #[arg(long)]
        profile: Option<String>,
    },
    /// Write reports/field-report.md and .html: naive, self-healing and every ablation
    /// over several seeds, and the jitter experiment.
    #[command(
        after_help = "Examples:\n  sim report                       # scenarios/mac-mini-3-weeks.toml, else scenarios/default.toml\n  sim report scenarios/default.toml --seeds 3 --out reports/"
    )]
    Report {
        /// The scenario (default: scenarios/mac-mini-3-weeks.toml if it exists, else
        /// scenarios/default.toml).
        scenario: Option<PathBuf>,
        /// Seeds per profile (1..=N).
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// Output folder.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// The commit to name in the report (default: `git rev-parse --short HEAD`).
        #[arg(long)]
        commit: Option<String>,
    },
    /// Fit the world's unstated fault intensities ([calibration]) to the field report's
    /// "before" column with the naive profile, write them back into the scenario, then
    /// print the fit and the self-healing prediction against the "after" column.
    #[command(
        after_help = "The knobs (leak_scale, network_scale, storm_scale) are searched one at a time over fixed\n\
candidate values, minimising the summed squared relative error of the seed means against\n\
the report's before figures; at most --max-runs simulations. Progress goes to stderr, the\n\
tables to stdout.\n\n\
Examples:\n  sim calibrate                                     # scenarios/mac-mini-3-weeks.toml, seeds 1-5\n  \
sim calibrate --check                             # no fit: the tables for the values in the file\n  \
sim calibrate scenarios/mac-mini-3-weeks.toml --max-runs 100 --write /tmp/fitted.toml"
    )]
    Calibrate {
        /// The scenario (default: scenarios/mac-mini-3-weeks.toml).
        scenario: Option<PathBuf>,
        /// Seeds per evaluated point (1..=N).
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// At most this many simulations for the search.
        #[arg(long, default_value_t = 200)]
        max_runs: usize,
        /// Passes over the knobs.
        #[arg(long, default_value_t = 2)]
        passes: usize,
        /// Where to write the fitted scenario (default: the scenario file itself).
        #[arg(long)]
        write: Option<PathBuf>,
        /// Do not fit: print the fit and prediction tables for the file's values.
        #[arg(long)]
        check: bool,
    },
    /// Measure simulated seconds per wall second on the reference world.
    Bench {
        /// The world to time (default: the embedded 21-day reference world).
        scenario: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// The runner profile: self-healing, naive, or no-<pattern> (see `profile` names).
    #[arg(long)]
    profile: Option<String>,
    /// Where to write the report (default: out/<scenario>-<profile>-<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run {
            scenario,
            seed,
            common,
            check_determinism,
        } => match load(scenario.as_deref()) {
            Ok(s) => run(&s, seed, &common, check_determinism),
            Err(code) => code,
        },
        Command::Replay {
            seed,
            scenario,
            common,
        } => {
            let s = match scenario.as_deref() {
                Some(path) => load(Some(path)),
                None => Ok(swarm::swarm(&Scenario::default_scenario(), seed)),
            };
            match s {
                Ok(s) => run(&s, Some(seed), &common, false),
                Err(code) => code,
            }
        }
        Command::Sweep {
            scenario,
            swarm,
            seeds,
            first_seed,
            jobs,
            profile,
        } => match load(scenario.as_deref()) {
            Ok(s) => sweep(
                &s,
                swarm,
                first_seed,
                seeds,
                jobs.map(|j| j as usize),
                profile.as_deref(),
            ),
            Err(code) => code,
        },
        Command::Report {
            scenario,
            seeds,
            out,
            jobs,
            commit,
        } => sim::study::command(scenario.as_deref(), seeds, &out, jobs, commit),
        Command::Calibrate {
            scenario,
            seeds,
            jobs,
            max_runs,
            passes,
            write,
            check,
        } => {
            let path = scenario.unwrap_or_else(|| PathBuf::from(FIELD_WORLD));
            let options = sim::calibrate::Options {
                seeds: (1..=seeds.max(1)).collect(),
                threads: threads(jobs),
                max_runs,
                passes,
            };
            calibrate(&path, &options, write.as_deref(), check)
        }
        Command::Bench { scenario } => {
            let s = match scenario.as_deref() {
                Some(path) => load(Some(path)),
                None => Scenario::parse(
                    include_str!("../../scenarios/bench.toml"),
                    Path::new("scenarios/bench.toml"),
                    None,
                )
                .map_err(|d| {
                    eprintln!("{d}");
                    exit::USAGE
                }),
            };
            match s {
                Ok(s) => bench(&s),
                Err(code) => code,
            }
        }
    };
    ExitCode::from(code)
}

fn load(path: Option<&Path>) -> Result<Scenario, u8> {
    match path {
        None => Ok(Scenario::default_scenario()),
        Some(p) => Scenario::load(p).map_err(|d| {
            eprintln!("{d}");
            exit::USAGE
        }),
    }
}

fn resolve_profile(scenario: &Scenario, name: Option<&str>) -> Result<Profile, u8> {
    match name {
        None => Ok(scenario.profile),
        Some(n) => Profile::named(n).ok_or_else(|| {
            eprintln!(
                "error: unknown profile `{n}` (hint: one of {})",
                profile::names().collect::<Vec<_>>().join(", ")
            );
            exit::USAGE
        }),
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {percent:>3}% simulated {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn run(base: &Scenario, seed: Option<u64>, common: &Common, twice: bool) -> u8 {
    let profile = match resolve_profile(base, common.profile.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or(base.world.seed);
    // A `[swarm]` section adds the faults this seed draws to the timeline.
    let (scenario, drawn) = swarm::with_seed(base, seed);
    let scenario = &scenario;
    let out = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("out/{}-{}-{seed}", scenario.name, profile.name)));
    say!("seed: {seed}");
    say!(
        "scenario: {} ({})",
        scenario.name,
        scenario
            .file
            .as_ref()
            .map_or("embedded".to_string(), |f| f.display().to_string())
    );
    say!("profile: {}", profile.name);
    say!(
        "world: {} from {} ({}), tick {}s, {} job(s), {} fault(s)",
        humanize(scenario.world.duration.as_secs()),
        scenario
            .world
            .start
            .with_timezone(&scenario.world.zone)
            .format("%Y-%m-%d %H:%M"),
        scenario.world.zone,
        scenario.world.tick.as_secs_f64(),
        scenario.config.jobs.len(),
        scenario.faults.len()
    );
    if scenario.name == "swarm" {
        for line in swarm::describe(&scenario.faults) {
            say!("  fault: {line}");
        }
    }
    for line in swarm::describe(&drawn) {
        say!("  drawn by the seed: {line}");
    }
    say!("out: {}", out.display());
    let bar = progress_bar(common.quiet);
    let started = Instant::now();
    let result = simulate(scenario, seed, profile, &mut |done| {
        bar.set_position((done * 1000.0) as u64);
    });
    bar.finish_and_clear();
    let run = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::VIOLATED;
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let verdict = evaluate(scenario, &run);
    let report = Report::new(scenario, &run, &verdict, wall);
    if let Err(e) = report.write(&out, &run) {
        eprintln!(
            "error: failed to write the report to {}: {e}",
            out.display()
        );
        return exit::USAGE;
    }
    summary(&report);
    if twice {
        let again = match simulate(scenario, seed, profile, &mut |_| {}) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::VIOLATED;
            }
        };
        let hash = again.world.trace().digest();
        if hash != report.trace_hash {
            eprintln!(
                "determinism: FAILED: trace hashes differ ({} vs {hash})",
                report.trace_hash
            );
            return exit::VIOLATED;
        }
        say!("determinism: ok (two runs, trace hash {hash})");
    }
    report.exit_code
}

fn summary(r: &Report) {
    let m = &r.metrics;
    say!(
        "result: {} runs: {} ok, {} degraded, {} failed, {} lost ({:.2}% lost), {} missed while the host was away; uptime {:.2}%; {} intervention(s)",
        m.scheduled_runs,
        m.succeeded_runs,
        m.degraded_runs,
        m.failed_runs,
        m.lost_runs,
        m.lost_task_rate * 100.0,
        m.host_away_runs,
        m.uptime_ratio * 100.0,
        m.manual_interventions
    );
    say!(
        "  rate-limit violations (429s) {}, calls inside a Retry-After {}, expired-token calls {}, duplicates {}, window violations {}, calls to open breakers {}, silent deaths {} ({} detected)",
        m.rate_limit_violations,
        m.calls_inside_retry_after,
        m.token_expired_errors,
        m.duplicate_side_effects,
        m.window_violations,
        m.calls_to_open_breaker,
        m.silent_deaths,
        m.silent_deaths_detected
    );
    for i in &r.invariants {
        say!(
            "  invariant {}: {} ({})",
            i.name,
            if i.holds { "holds" } else { "VIOLATED" },
            i.detail
        );
    }
    say!(
        "trace: {} events, sha256 {}; {:.1} simulated days in {:.2}s wall",
        r.trace_events,
        r.trace_hash,
        r.simulated_seconds / 86_400.0,
        r.wall_seconds
    );
    if r.exit_code != exit::OK {
        say!("reproduce: {}", r.replay);
    }
}

fn humanize(secs: u64) -> String {
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{}m", secs / 60)
    }
}

/// One seed's result in a sweep.
struct SeedResult {
    seed: u64,
    code: u8,
    /// What failed: invariant names, `liveness`, or the simulation error.
    broke: Vec<String>,
    replay: String,
}

fn sweep(
    base: &Scenario,
    use_swarm: bool,
    first_seed: u64,
    seeds: u64,
    jobs: Option<usize>,
    profile: Option<&str>,
) -> u8 {
    let profile = match resolve_profile(base, profile) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let Some(last_seed) = first_seed.checked_add(seeds - 1) else {
        eprintln!(
            "error: --first-seed {first_seed} with --seeds {seeds} runs past the largest seed (hint: start at most at {})",
            u64::MAX - (seeds - 1)
        );
        return exit::USAGE;
    };
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    say!(
        "sweep: seeds {first_seed}..={last_seed} ({seeds}) of {} with profile {} on {jobs} thread(s)",
        if use_swarm {
            "swarm worlds"
        } else {
            base.name.as_str()
        },
        profile.name
    );
    let next = std::sync::atomic::AtomicU64::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(seeds)
    } else {
        ProgressBar::hidden()
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= seeds {
                        break;
                    }
                    let seed = first_seed + i;
                    let scenario = if use_swarm {
                        swarm::swarm(base, seed)
                    } else {
                        swarm::with_seed(base, seed).0
                    };
                    let (code, broke) = match simulate(&scenario, seed, profile, &mut |_| {}) {
                        Ok(run) => {
                            let verdict = evaluate(&scenario, &run);
                            let mut broke: Vec<String> = verdict
                                .invariants
                                .iter()
                                .filter(|i| !i.holds)
                                .map(|i| i.name.clone())
                                .collect();
                            if verdict.liveness.as_ref().is_some_and(|l| !l.holds) {
                                broke.push("liveness".to_string());
                            }
                            (verdict.exit_code(), broke)
                        }
                        Err(e) => (exit::VIOLATED, vec![format!("simulation error ({e})")]),
                    };
                    debug_assert!(matches!(code, exit::OK | exit::VIOLATED | exit::LIVENESS));
                    let replay = replay_command(&scenario, seed, profile.name);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(SeedResult {
                            seed,
                            code,
                            broke,
                            replay,
                        });
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|r| r.seed);
    let failing: Vec<&SeedResult> = results.iter().filter(|r| r.code != exit::OK).collect();
    for r in &failing {
        say!(
            "seed {}: broke {}: {}",
            r.seed,
            r.broke.join(", "),
            r.replay
        );
    }
    say!(
        "sweep: {} of {seeds} seed(s) passed",
        seeds as usize - failing.len()
    );
    failing.iter().map(|r| r.code).max().unwrap_or(exit::OK)
}

/// The field report's world.
const FIELD_WORLD: &str = "scenarios/mac-mini-3-weeks.toml";

fn threads(jobs: Option<usize>) -> usize {
    jobs.or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

fn calibrate(
    path: &Path,
    options: &sim::calibrate::Options,
    write: Option<&Path>,
    check: bool,
) -> u8 {
    use sim::calibrate::{self as cal};
    let mut scenario = match load(Some(path)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let seeds = &options.seeds;
    let naive_runs = if check {
        say!(
            "calibrate --check: {} as written ({})",
            path.display(),
            cal::describe(&scenario.calibration)
        );
        let naive = Profile::named("naive").unwrap_or(scenario.profile);
        match cal::evaluate_point(
            &scenario,
            scenario.calibration,
            naive,
            seeds,
            options.threads,
        ) {
            Ok(runs) => runs,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::VIOLATED;
            }
        }
    } else {
        eprintln!(
            "calibrate: {} with the naive profile over seeds {:?}, at most {} runs, {} pass(es)",
            path.display(),
            seeds,
            options.max_runs,
            options.passes
        );
        let fit = match cal::fit(&scenario, options, &|line| eprintln!("{line}")) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::VIOLATED;
            }
        };
        say!(
            "fitted: {} (error {:.3}) after {} runs{}",
            cal::describe(&fit.best.calibration),
            fit.best.error,
            fit.runs,
            if fit.bounded {
                "; the search stopped at --max-runs"
            } else {
                ""
            }
        );
        let target = write.unwrap_or(path);
        let command = format!(
            "sim calibrate {} --seeds {} --max-runs {} --passes {}",
            path.display(),
            seeds.len(),
            options.max_runs,
            options.passes
        );
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: failed to read {}: {e}", path.display());
                return exit::USAGE;
            }
        };
        let block = cal::block(&fit.best.calibration, &command, seeds, fit.best.error);
        let written = match cal::with_block(&text, &block) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        };
        if let Err(e) = std::fs::write(target, written) {
            eprintln!("error: failed to write {}: {e}", target.display());
            return exit::USAGE;
        }
        // The file written must read back with the fitted values.
        match Scenario::load(target) {
            Ok(s) if s.calibration == fit.best.calibration => scenario = s,
            Ok(_) => {
                eprintln!(
                    "error: {} reads back with other [calibration] values",
                    target.display()
                );
                return exit::VIOLATED;
            }
            Err(d) => {
                eprintln!("{d}");
                return exit::USAGE;
            }
        }
        say!("wrote {}", target.display());
        fit.best.runs
    };
    let healing = Profile::named("self-healing").unwrap_or(scenario.profile);
    eprintln!("predicting: self-healing on the fitted world over seeds {seeds:?}");
    let healing_runs = match cal::evaluate_point(
        &scenario,
        scenario.calibration,
        healing,
        seeds,
        options.threads,
    ) {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::VIOLATED;
        }
    };
    print!("{}", cal::table(&naive_runs, &healing_runs, seeds));
    let extra = |runs: &[cal::Measures]| {
        let deaths: Vec<f64> = runs.iter().map(|m| m.process_deaths).collect();
        sim::study::stats::Summary::of(&deaths)
    };
    let (n, h) = (extra(&naive_runs), extra(&healing_runs));
    say!(
        "\nprocess deaths over the whole world: naive {:.1} ({:.0}-{:.0}), self-healing {:.1} ({:.0}-{:.0})",
        n.mean,
        n.min,
        n.max,
        h.mean,
        h.min,
        h.max
    );
    exit::OK
}

fn bench(scenario: &Scenario) -> u8 {
    let profile = scenario.profile;
    let started = Instant::now();
    let run = match simulate(scenario, scenario.world.seed, profile, &mut |_| {}) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::VIOLATED;
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let verdict = evaluate(scenario, &run);
    let calls = verdict.metrics.calls as f64;
    say!(
        "bench: {} ({} jobs), {:.1} simulated days in {wall:.3}s wall",
        scenario.name,
        scenario.config.jobs.len(),
        run.simulated_seconds / 86_400.0
    );
    say!(
        "  {:.0} simulated seconds per wall second; {:.0} calls ({:.0} per wall second); {} runs",
        run.simulated_seconds / wall.max(1e-9),
        calls,
        calls / wall.max(1e-9),
        verdict.metrics.scheduled_runs
    );
    exit::OK
}
