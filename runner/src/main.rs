//! The `runner` daemon: thin command-line wrapper over the `runner` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use runner::alert::{Alert, AlertSink};
use runner::config::{Config, OsSecrets, parse_config};
use runner::env::tokio::TokioEnv;
use runner::scheduler::{Exit, Runner};

/// Exit codes, documented in `--help`.
mod exit {
    /// Clean shutdown, or a run-once that succeeded.
    pub(crate) const OK: u8 = 0;
    /// A run failed, or a fatal error stopped the runner.
    pub(crate) const FAILURE: u8 = 1;
    /// Bad configuration or usage.
    pub(crate) const USAGE: u8 = 2;
    /// Restart requested (memory over its fatal threshold): EX_TEMPFAIL, so a
    /// supervisor with `KeepAlive` / `Restart=on-failure` starts a fresh process.
    pub(crate) const RESTART: u8 = 75;
}

const AFTER_HELP: &str = "\
Exit codes:
  0   clean shutdown (SIGINT/SIGTERM) or run-once succeeded
  1   a run failed, or a fatal error stopped the runner
  2   bad configuration or usage
  75  memory over its fatal threshold: restart me (launchd/systemd do)

Examples:
  runner check --config examples/offline.toml
  runner run --config examples/offline.toml
  runner run-once heartbeat-demo --config examples/offline.toml";

/// Steadfast: runs scheduled jobs for weeks without a human.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file; prints every problem with file, line, key and hint.
    #[command(after_help = "Example:\n  runner check --config examples/http-oauth.toml")]
    Check {
        /// The configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the daemon until SIGINT or SIGTERM.
    #[command(after_help = "Example:\n  runner run --config examples/offline.toml")]
    Run {
        /// The configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run one job now, in the foreground, and exit with its outcome.
    #[command(
        name = "run-once",
        after_help = "Example:\n  runner run-once heartbeat-demo --config examples/offline.toml"
    )]
    RunOnce {
        /// The job's name.
        job: String,
        /// The configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Logs alerts as JSON lines on stderr until the notifiers land.
#[derive(Debug, Clone, Copy)]
struct LogAlerts;

impl AlertSink for LogAlerts {
    fn alert(&self, alert: Alert) {
        tracing::error!(target: "steadfast::alert", kind = ?alert.kind, job = alert.job.as_deref(), message = %alert.message, "alert");
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: failed to read {}: {e}", path.display());
            return Err(ExitCode::from(exit::USAGE));
        }
    };
    parse_config(&text, path, &OsSecrets).map_err(|diags| {
        eprintln!("{diags}");
        ExitCode::from(exit::USAGE)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            println!(
                "{}: ok ({} job(s), {} service(s), {} credential(s))",
                config.display(),
                cfg.jobs.len(),
                cfg.services.len(),
                cfg.credentials.len()
            );
            Ok(ExitCode::from(exit::OK))
        }
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let rt = tokio::runtime::Runtime::new().context("failed to start the tokio runtime")?;
            rt.block_on(async {
                let runner = Runner::new(TokioEnv::new(), cfg, LogAlerts).await?;
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    shutdown_signal().await;
                    let _ = tx.send(true);
                });
                Ok(match runner.run(rx).await {
                    Exit::Shutdown => ExitCode::from(exit::OK),
                    Exit::FatalStop { .. } => ExitCode::from(exit::FAILURE),
                    Exit::MemoryRestart => ExitCode::from(exit::RESTART),
                })
            })
        }
        Command::RunOnce { job, config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let rt = tokio::runtime::Runtime::new().context("failed to start the tokio runtime")?;
            rt.block_on(async {
                let runner = Runner::new(TokioEnv::new(), cfg, LogAlerts).await?;
                match runner.run_once(&job).await {
                    None => {
                        eprintln!(
                            "error: no job named `{job}` (hint: `runner check` lists the jobs)"
                        );
                        Ok(ExitCode::from(exit::USAGE))
                    }
                    Some(outcome) => {
                        println!("{job}: {}", outcome.label());
                        Ok(match outcome {
                            runner::job::RunOutcome::Succeeded
                            | runner::job::RunOutcome::Degraded { .. } => ExitCode::from(exit::OK),
                            _ => ExitCode::from(exit::FAILURE),
                        })
                    }
                }
            })
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    biased;
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
