//! The `runner` daemon: thin command-line wrapper over the `runner` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use runner::daemon::env::{DaemonEnv, Fanout};
use runner::daemon::install::Service;
use runner::daemon::lock::StateLock;
use runner::daemon::logs::{LogWriter, Redactor, RotatingFile};
use runner::daemon::metrics::Metrics;
use runner::daemon::notify::{Notifier, Outbox, Pinger, QUEUE_CAPACITY};
use runner::daemon::refusal;
use runner::daemon::settings::{self, DaemonSettings};
use runner::daemon::status::{StateFiles, Status};
use runner::daemon::status_file;
use runner::env::tokio::TcpConnector;
use runner::secrets::OsSecrets;
use steadfast_core::config::{Config, SecretResolver, Source};
use steadfast_core::say;
use steadfast_core::scheduler::{Exit, Runner, StartError};

/// Exit codes, documented in `--help`.
mod exit {
    /// Clean shutdown, or a run-once that succeeded.
    pub(crate) const OK: u8 = 0;
    /// A run failed, or a fatal error stopped the runner.
    pub(crate) const FAILURE: u8 = 1;
    /// Bad configuration or usage.
    pub(crate) const USAGE: u8 = 2;
    /// Another runner holds the state directory.
    pub(crate) const LOCKED: u8 = 3;
    /// The state database is corrupt, unreadable or from a newer runner: the file is
    /// kept as it is and the runner refuses to start (a restart cannot fix it).
    pub(crate) const STATE: u8 = 4;
    /// Restart requested (memory over its fatal threshold): EX_TEMPFAIL, so a
    /// supervisor with `KeepAlive` / `Restart=on-failure` starts a fresh process.
    pub(crate) const RESTART: u8 = 75;
}

const AFTER_HELP: &str = "\
Exit codes:
  0   clean shutdown (SIGINT/SIGTERM) or run-once succeeded
  1   a run failed, or a fatal error stopped the runner
  2   bad configuration or usage
  3   another runner is using the same state directory
  4   the state database (state_dir/state.db) is corrupt, unreadable or from a newer
      runner: it is kept untouched, an alert is sent, and nothing runs
  75  memory over its fatal threshold: restart me (launchd/systemd do)
  141 stdout was closed early (a reader such as `head` exited)

Examples:
  runner check --config examples/offline.toml
  runner run --config examples/offline.toml
  runner status --config examples/offline.toml
  runner install --launchd --config examples/offline.toml
  runner run-once disk-report --config examples/offline.toml";

/// Steadfast: runs scheduled jobs for weeks without a human.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The configuration file (relative paths inside it start at its directory).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file; prints every problem with file, line, key and hint.
    #[command(after_help = "\
Exit codes: 0 valid, 2 invalid.

Examples:
  runner check --config examples/offline.toml
  runner check -c /etc/steadfast/runner.toml")]
    Check(ConfigArg),
    /// Run the daemon until SIGINT or SIGTERM (one per state directory).
    #[command(after_help = "\
What happens to runs and slots (every slot of every job is journaled in
<state_dir>/state.db as run, resumed or missed with a reason):
  SIGTERM/SIGINT  no new step starts; a running step gets [runner] shutdown_grace to
                  finish (then its process group is killed); the run stays open in the
                  journal and resumes at the next start after its finished steps, with
                  the same run id and idempotency keys. Exit 0.
  crash, kill -9  the open run resumes the same way at the next start; a step cut off
                  mid-way is sent again with the same idempotency key. Command steps
                  die with the runner (Linux: parent-death signal) and their process
                  groups are journaled, so the next start stops any it left running
                  (SIGTERM, SIGKILL after shutdown_grace) before a step runs again.
  restart         slots that passed while the runner was down are run or recorded
                  missed by the job's catch_up (latest | all | none) and
                  catch_up_window; `runner status` and /metrics count them by reason;
                  a slots_missed alert per job says how many (alert_missed = false
                  turns it off).
  first start     an older runner's state files (tokens, heartbeats, checkpoints,
                  breakers) are imported into the store and renamed *.migrated.
A corrupt or unreadable state.db is kept untouched: the runner logs an error, sends an
alert (the same problem at most once a day: launchd restarts it every 10 s) and exits 4
without running anything.
Logs: JSON lines on stdout and in <state_dir>/runner.log (rotated).

Exit codes: 0 stopped, 1 fatal stop, 2 bad config, 3 state dir in use, 4 state.db
corrupt or unreadable, 75 restart me.

Examples:
  runner run --config examples/offline.toml
  RUST_LOG=debug runner run --config examples/http-oauth.toml")]
    Run(ConfigArg),
    /// Show jobs, heartbeats, next runs, breakers and token expiry from the state directory.
    #[command(after_help = "\
Works whether or not the daemon runs: it only reads the state files. STATE is the job's
state machine state while a daemon runs (idle, running, stopped), `-` otherwise;
FAILURES is the job's failed runs in a row, carried over daemon restarts; MISSED the
slots the journal records as not run (--json: by reason: downtime, overlap, window,
stopped); RESUMED the runs started again after an interruption. Warnings list slots
lost, process groups a killed runner left, and a corrupt state.db. Token files
are read for their expiry only. Needs no secrets.

Examples:
  runner status --config examples/offline.toml
  runner status --config examples/http-oauth.toml --json | jq '.jobs[] | select(.heartbeat != \"ok\")'")]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a launchd LaunchAgent or a systemd user unit for this binary and config.
    #[command(after_help = "\
Uses the absolute path of this binary and of the config. The service restarts the
runner when it exits unsuccessfully (crash, exit 75), not after a clean stop.

Examples:
  runner install --launchd --config ~/steadfast/runner.toml
  runner install --systemd --config ~/steadfast/runner.toml
  runner install --launchd --config ~/steadfast/runner.toml --dry-run")]
    Install {
        #[command(flatten)]
        config: ConfigArg,
        /// A macOS LaunchAgent in ~/Library/LaunchAgents.
        #[arg(long, conflicts_with = "systemd", required_unless_present = "systemd")]
        launchd: bool,
        /// A systemd user unit in ~/.config/systemd/user.
        #[arg(long)]
        systemd: bool,
        /// Print the file instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run one job now, in the foreground, and exit with its outcome.
    #[command(
        name = "run-once",
        after_help = "\
Takes the state directory's lock, so stop the daemon first. Resumes the job's
interrupted run if it has one. Runs one extra slot, due now, in the journal.

Exit codes: 0 succeeded (or degraded), 1 failed, 2 unknown job or bad config, 3 daemon
running, 4 state.db corrupt or unreadable.

Examples:
  runner run-once disk-report --config examples/offline.toml
  runner run-once email-monitor --config examples/http-oauth.toml"
    )]
    RunOnce {
        /// The job's name.
        job: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Measure idle CPU, RSS and schedule drift with many jobs (developers).
    #[command(
        name = "bench-idle",
        hide = true,
        after_help = "\
Runs the production core in this process on a scratch state directory: first a busy
phase (every job due on the same instants), then an idle phase (nothing due). Prints
the figures as JSON; --report also writes them as Markdown against the targets
(idle CPU < 0.1 %, RSS < 30 MB, drift p99 < 50 ms).

Exit codes: 0 every target met, 1 a target missed, 2 the bench could not run.

Examples:
  runner bench-idle
  runner bench-idle --jobs 100 --every-secs 5 --busy-secs 30 --idle-secs 60 --report reports/daemon-bench.md"
    )]
    BenchIdle(BenchArgs),
}

/// Resolves every secret to a placeholder: `status` and `install` read the
/// configuration's structure and must work without the secrets present.
#[derive(Debug, Clone, Copy)]
struct NoSecretsNeeded;

impl SecretResolver for NoSecretsNeeded {
    fn env(&self, _name: &str) -> Option<String> {
        Some("http://unused.invalid/".into())
    }
    fn file(&self, _path: &Path) -> std::io::Result<String> {
        Ok("http://unused.invalid/".into())
    }
}

/// Reads and validates the config (core and daemon sections), printing every problem.
fn load(path: &Path, secrets: &dyn SecretResolver) -> Result<(Config, DaemonSettings), ExitCode> {
    // The parser resolves relative paths against the file's directory: give it an
    // absolute one so the state dir does not depend on where `runner` was started.
    let path = match std::path::absolute(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: failed to resolve {}: {e}", path.display());
            return Err(ExitCode::from(exit::USAGE));
        }
    };
    // Bounded and UTF-8 checked by the core's reader; only opening is done here.
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "error: failed to open {}: {e} (hint: pass the file with --config)",
                path.display()
            );
            return Err(ExitCode::from(exit::USAGE));
        }
    };
    let (config, daemon) = Source::read(&path, file)
        .and_then(|source| settings::parse(&source, secrets))
        .map_err(|diags| {
            eprintln!("{diags}");
            ExitCode::from(exit::USAGE)
        })?;
    Ok((config, daemon))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// JSON logs to stdout and the state dir's rotating file, secrets redacted.
fn init_logs(config: &Config, daemon: &DaemonSettings, stdout: bool) -> anyhow::Result<()> {
    let file = RotatingFile::new(
        &config.runner.state_dir,
        daemon.logs.file_max_bytes,
        daemon.logs.files,
    )
    .with_context(|| {
        format!(
            "failed to open the log file in {}",
            config.runner.state_dir.display()
        )
    })?;
    let writer = LogWriter::new(Some(Arc::new(file)), stdout, Redactor::from_config(config));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init()
        .map_err(|e| anyhow::anyhow!("failed to start logging: {e}"))
}

/// The HTTPS connector `[tls]` describes; a store it cannot use is a config error.
fn connector(daemon: &DaemonSettings) -> Result<TcpConnector, ExitCode> {
    TcpConnector::with_settings(&daemon.tls).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(exit::USAGE)
    })
}

/// Names shown at most when a job name is unknown.
const JOBS_LISTED: usize = 8;

/// A near miss, then the configured jobs (the first few of a long list).
fn job_hint(cfg: &Config, given: &str) -> String {
    let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
    let listed = names[..names.len().min(JOBS_LISTED)].join(", ");
    let more = match names.len().saturating_sub(JOBS_LISTED) {
        0 => String::new(),
        n => format!(" and {n} more (`runner status` lists them all)"),
    };
    format!(
        "{}the jobs are {listed}{more}",
        steadfast_core::config::did_you_mean(given, names.iter().copied())
    )
}

fn lock(config: &Config) -> Result<StateLock, ExitCode> {
    StateLock::acquire(&config.runner.state_dir).map_err(|e| {
        eprintln!("error: {e}");
        match e {
            runner::daemon::lock::LockError::Held { .. } => ExitCode::from(exit::LOCKED),
            _ => ExitCode::from(exit::FAILURE),
        }
    })
}

/// The daemon's parts around the core: environment, notifier, metrics.
struct Parts {
    env: DaemonEnv,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
}

/// Must run inside the runtime (the outbox spawns its delivery task). Jobs and
/// alerts share the connector, so webhooks trust what `[tls]` says too.
fn parts(config: &Config, daemon: &DaemonSettings, connector: TcpConnector) -> Parts {
    let (outbox, _task) = Outbox::spawn_with(QUEUE_CAPACITY, connector.clone());
    let outbox = Arc::new(outbox);
    let metrics = Arc::new(Metrics::new());
    for name in config.services.keys() {
        metrics.service(name);
    }
    let files = StateFiles::read(&config.runner.state_dir);
    let breakers = files
        .breakers
        .iter()
        .map(|(k, v)| (k.clone(), v.state))
        .collect();
    metrics.seed(&breakers, &files.last_success);
    metrics.attach_journal(&config.runner.state_dir);
    let mut events = Fanout::logging().with(metrics.clone());
    if !daemon.notify.pings.is_empty() {
        events = events.with(Arc::new(Pinger::new(
            daemon.notify.pings.clone(),
            outbox.clone(),
        )));
    }
    Parts {
        env: DaemonEnv::with_connector(connector, events),
        notifier: Notifier::new(&daemon.notify, outbox.clone()),
        metrics,
        outbox,
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(ConfigArg { config }) => {
            let cfg = match load(&config, &OsSecrets) {
                Ok((c, d)) => {
                    // As `run` would: `roots = "system"` without a system store fails here.
                    if let Err(code) = connector(&d) {
                        return Ok(code);
                    }
                    c
                }
                Err(code) => return Ok(code),
            };
            say!(
                "{}: ok ({} job(s), {} service(s), {} credential(s))",
                config.display(),
                cfg.jobs.len(),
                cfg.services.len(),
                cfg.credentials.len()
            );
            Ok(ExitCode::from(exit::OK))
        }
        Command::Run(ConfigArg { config }) => {
            let (cfg, daemon) = match load(&config, &OsSecrets) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let rt = daemon_runtime()?;
            // SIGTERM and SIGINT are ours before the lock says a daemon runs here, so a
            // stop sent the moment the lock appears is a clean shutdown, not a kill.
            let shutdown = {
                let _in_runtime = rt.enter();
                shutdown_signal()
            };
            let _lock = match lock(&cfg) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            init_logs(&cfg, &daemon, true)?;
            let connector = match connector(&daemon) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            rt.block_on(daemon_main(cfg, daemon, connector, shutdown))
        }
        Command::Status {
            config: ConfigArg { config },
            json,
        } => {
            let cfg = match load(&config, &NoSecretsNeeded) {
                Ok((c, _)) => c,
                Err(code) => return Ok(code),
            };
            let files = StateFiles::read(&cfg.runner.state_dir);
            let status = Status::compute(&cfg, files, chrono::Utc::now());
            if json {
                say!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                say!("{}", status.table().trim_end_matches('\n'));
            }
            Ok(ExitCode::from(exit::OK))
        }
        Command::Install {
            config,
            launchd,
            systemd: _,
            dry_run,
        } => install(&config.config, launchd, dry_run),
        Command::RunOnce {
            job,
            config: ConfigArg { config },
        } => {
            let (cfg, daemon) = match load(&config, &OsSecrets) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if !cfg.jobs.iter().any(|j| j.name == job) {
                eprintln!(
                    "error: no job named `{job}` (hint: {})",
                    job_hint(&cfg, &job)
                );
                return Ok(ExitCode::from(exit::USAGE));
            }
            let _lock = match lock(&cfg) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            init_logs(&cfg, &daemon, true)?;
            let connector = match connector(&daemon) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let rt = daemon_runtime()?;
            rt.block_on(async {
                let p = parts(&cfg, &daemon, connector);
                let state_dir = cfg.runner.state_dir.clone();
                let notifier = Arc::new(p.notifier);
                if let Err(e) = migrate_files(&p.env, &cfg).await {
                    return Ok(refuse_state(&p.env, &notifier, &p.outbox, &state_dir, &e).await);
                }
                let runner = match Runner::new(p.env.clone(), cfg, notifier.clone()).await {
                    Ok(r) => {
                        refusal::clear(&state_dir);
                        r
                    }
                    Err(StartError::Store(e)) => {
                        return Ok(refuse_state(&p.env, &notifier, &p.outbox, &state_dir, &e).await);
                    }
                    Err(e) => return Err(e.into()),
                };
                let outcome = runner.run_once(&job).await;
                p.outbox.drain(Duration::from_secs(5)).await;
                Ok(match outcome {
                    None => ExitCode::from(exit::USAGE),
                    Some(outcome) => {
                        eprintln!("{job}: {}", outcome.kind());
                        match outcome {
                            steadfast_core::job::RunOutcome::Succeeded
                            | steadfast_core::job::RunOutcome::Degraded { .. } => {
                                ExitCode::from(exit::OK)
                            }
                            _ => ExitCode::from(exit::FAILURE),
                        }
                    }
                })
            })
        }
        Command::BenchIdle(args) => bench_idle(args),
    }
}

async fn daemon_main(
    cfg: Config,
    daemon: DaemonSettings,
    connector: TcpConnector,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let p = parts(&cfg, &daemon, connector);
    let (tx, rx) = tokio::sync::watch::channel(false);
    if let Some(http) = daemon.http {
        let listener = match tokio::net::TcpListener::bind(http.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "error: failed to listen on {}: {e} (hint: change [http] listen)",
                    http.listen
                );
                return Ok(ExitCode::from(exit::USAGE));
            }
        };
        tracing::info!(target: "steadfast", listen = %http.listen, "serving /healthz and /metrics");
        tokio::spawn(runner::daemon::metrics::serve(
            listener,
            p.metrics.clone(),
            rx.clone(),
        ));
    }
    let state_dir = cfg.runner.state_dir.clone();
    let notifier = Arc::new(p.notifier);
    if let Err(e) = migrate_files(&p.env, &cfg).await {
        return Ok(refuse_state(&p.env, &notifier, &p.outbox, &state_dir, &e).await);
    }
    let runner = match Runner::new(p.env.clone(), cfg, notifier.clone()).await {
        Ok(r) => {
            refusal::clear(&state_dir);
            r
        }
        Err(StartError::Store(e)) => {
            return Ok(refuse_state(&p.env, &notifier, &p.outbox, &state_dir, &e).await);
        }
        Err(e) => return Err(e.into()),
    };
    let board = runner.board();
    p.metrics.attach(board.clone());
    if let Some(previous) = status_file::load(&p.env, &state_dir).await {
        board.restore_failures(&previous.failure_streaks());
    }
    let status_writer = tokio::spawn(status_file::keep_written(
        p.env.clone(),
        board,
        state_dir,
        rx.clone(),
    ));
    let signal_tx = tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let exit = runner.run(rx).await;
    let _ = tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), status_writer).await;
    // Alerts raised while stopping still get their chance, bounded.
    p.outbox.drain(Duration::from_secs(5)).await;
    Ok(match exit {
        Exit::Shutdown => ExitCode::from(exit::OK),
        Exit::FatalStop { .. } => ExitCode::from(exit::FAILURE),
        Exit::MemoryRestart => ExitCode::from(exit::RESTART),
    })
}

/// Imports an older runner's state files into the store (once; they are renamed
/// `*.migrated`), before the runner reads the store.
async fn migrate_files(env: &DaemonEnv, cfg: &Config) -> Result<(), steadfast_core::db::DbError> {
    let db = steadfast_core::db::Db::open(env.clone(), &cfg.runner.state_dir).await?;
    runner::daemon::legacy::migrate(env, cfg, &db).await;
    Ok(())
}

/// The state database cannot be used: say so everywhere a human looks (stderr, an
/// error event in the log, an alert), keep the file exactly as it is, and exit with
/// [`exit::STATE`]. Starting over with an empty store would lose the journal (runs
/// repeated or forgotten) and the rotated refresh tokens.
async fn refuse_state(
    env: &DaemonEnv,
    notifier: &Notifier,
    outbox: &Outbox,
    state_dir: &Path,
    e: &steadfast_core::db::DbError,
) -> ExitCode {
    use steadfast_core::alert::{Alert, AlertKind, AlertSink as _};
    use steadfast_core::env::Env as _;
    use steadfast_core::event::{Event, EventKind};
    let file = state_dir.join(runner::env::tokio::DB_FILE);
    let message = format!(
        "cannot use the state database {}: {e}; nothing runs until it is fixed (the file is kept as it is)",
        file.display()
    );
    env.emit(Event::new(EventKind::StateUnreadable).detail(message.clone()));
    // Under launchd a refused start is restarted every 10 s: one alert a day per problem.
    let now = env.now();
    if refusal::should_alert(state_dir, &message, now) {
        notifier.alert(Alert {
            at: now,
            kind: AlertKind::StateUnreadable,
            job: None,
            service: None,
            message: message.clone(),
        });
        refusal::record(state_dir, &message, now);
    }
    eprintln!(
        "error: {message} (hint: restore {} from a backup of the state directory; or, to start over, move it aside with its -wal and -shm files: the journal of runs is lost, and a credential whose provider rotates refresh tokens must be authorised again)",
        file.display()
    );
    outbox.drain(Duration::from_secs(5)).await;
    ExitCode::from(exit::STATE)
}

fn install(config: &Path, launchd: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
    let (cfg, _) = match load(config, &NoSecretsNeeded) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("failed to find this binary's path")?;
    let config = std::path::absolute(config)?;
    let config = config.canonicalize().unwrap_or(config);
    let service = Service {
        exe,
        config,
        state_dir: cfg.runner.state_dir.clone(),
        shutdown_grace: cfg.runner.shutdown_grace,
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set (hint: run as the user who owns the config)")?;
    let (path, text, how) = if launchd {
        let path = Service::launchd_path(&home);
        let how = Service::launchd_instructions(&path);
        (path, service.launchd_plist(), how)
    } else {
        (
            Service::systemd_path(&home),
            service.systemd_unit(),
            Service::systemd_instructions(),
        )
    };
    if dry_run {
        say!("# would write {}\n{text}", path.display());
        eprintln!("{how}");
        return Ok(ExitCode::from(exit::OK));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let existed = path.exists();
    std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
    say!(
        "{} {}",
        if existed { "replaced" } else { "wrote" },
        path.display()
    );
    say!("{how}");
    Ok(ExitCode::from(exit::OK))
}

/// Options of the hidden `bench-idle` command.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Jobs to schedule.
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// Interval of each job in the busy phase, in seconds.
    #[arg(long, default_value_t = 5)]
    every_secs: u64,
    /// Length of the busy phase, in seconds.
    #[arg(long, default_value_t = 20)]
    busy_secs: u64,
    /// Length of the idle phase, in seconds (CPU time is counted in 10 ms ticks: 60 s
    /// resolves 0.02 %).
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Also write the figures as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

fn bench_idle(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("steadfast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Logs go to a rotating file as in production (not to the terminal).
    let file = RotatingFile::new(&dir, 10 * 1024 * 1024, 2)?;
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(LogWriter::new(
            Some(Arc::new(file)),
            false,
            Redactor::default(),
        ))
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .try_init();
    let opts = runner::daemon::bench::BenchOptions {
        jobs: args.jobs,
        every: Duration::from_secs(args.every_secs),
        busy: Duration::from_secs(args.busy_secs),
        idle: Duration::from_secs(args.idle_secs),
        dir: dir.clone(),
    };
    let rt = daemon_runtime()?;
    // The 1-minute load average (Linux): a busy machine delays starts.
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string));
    let report = rt.block_on(runner::daemon::bench::run(&opts))?;
    let _ = std::fs::remove_dir_all(&dir);
    say!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = &args.report {
        let how = format!(
            "Taken with `runner bench-idle --jobs {} --every-secs {} --busy-secs {} --idle-secs {}` \
             ({} build, runner {}) on a machine with {} CPU(s), load average before the \
             run: {}.",
            args.jobs,
            args.every_secs,
            args.busy_secs,
            args.idle_secs,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            env!("CARGO_PKG_VERSION"),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_before.as_deref().unwrap_or("unknown"),
        );
        std::fs::write(path, report.markdown(&opts, &how))
            .with_context(|| format!("failed to write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::from(if report.meets_targets() {
        exit::OK
    } else {
        exit::FAILURE
    }))
}

/// The daemon's runtime. Blocking work (file writes with fsync, process spawns) goes
/// to a bounded pool: when a hundred jobs fall due on the same instant, a hundred
/// blocking threads would crowd the scheduler's own threads off a small machine's
/// cores and start the last jobs late.
fn daemon_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .context("failed to start the tokio runtime")
}

/// Threads for blocking work at most (tokio's default is 512).
const MAX_BLOCKING_THREADS: usize = 8;

/// Listens for SIGTERM and SIGINT from now on (registration happens here, not at the
/// first poll) and resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        biased;
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                (Some(mut one), None) | (None, Some(mut one)) => {
                    one.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
