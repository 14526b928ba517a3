//! The runner: one task per job, each behind its own error boundary (pattern 4), plus
//! the heartbeat monitor (pattern 3) and the breakers' prober ([`prober`]: a health
//! request when a cooldown ends, pattern 7).
//!
//! A job's task ([`job_loop`]) first accounts for what happened while the runner was
//! not running (interrupted runs resumed, missed slots caught up or recorded missed by
//! the job's policy, [`catch_up`]), then waits for each next slot, runs it through the
//! state machine (`idle -> running -> success | failure -> cooldown -> idle`) and
//! journals how it ended. A panic or error in one job's run is caught at that job's
//! boundary ([`guard`]) and never stops or delays another. Without isolation (the naive
//! profile) a fatal error anywhere stops the whole runner, as the field report's first
//! version did.
//!
//! # What a crash, a restart and a SIGTERM do
//! - A crash or `kill -9` mid-run leaves the slot `running` in the journal, and the
//!   process groups of its running command steps in the store. The next start first
//!   stops those groups (SIGTERM, SIGKILL after `shutdown_grace`), then resumes the run under the same run id, after its last journaled step (the steps it
//!   finished are not repeated; a step cut off mid-way is sent again with the same
//!   idempotency key).
//! - Slots that passed while the runner was down are run or recorded missed by the
//!   job's `catch_up` policy (`latest` by default: the newest one runs, the older ones
//!   are recorded missed); none vanishes.
//! - A sleep (the machine's, or a stopped process) is a restart that kept its process:
//!   the slots it slept through go through the same `catch_up` policy, missed ones
//!   journaled `asleep`; one `wake` event says how far the wall clock jumped
//!   ([`crate::wake`]). A wall clock stepped back never runs a slot twice.
//! - SIGTERM: no new step starts; a running step gets `shutdown_grace` to finish; the
//!   run is left `running` in the journal and resumed at the next start. A token refresh
//!   in flight is waited for (up to its `refresh_timeout`) so its answer is kept.

mod alert_gate;
pub mod catch_up;
mod guard;
mod job_loop;
mod prober;
mod reaper;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use crate::alert::{Alert, AlertSink};
use crate::boundary::Boundary;
use crate::breaker::{BreakerState, Breakers};
use crate::checkpoint::Resume;
use crate::config::{Config, JobConfig};
use crate::db::{Db, DbError};
use crate::env::Env;
use crate::event::{Event, EventKind};
use crate::heartbeat::Heartbeats;
use crate::heartbeat::{HealthProbe, Monitor};
use crate::job::{Contracts, Needs, RunId, RunOutcome, Services};
pub use crate::job_status::{JobStatus, StatusBoard};
use crate::retry::{Gates, Retrier, RetryBudgets, RetryStyle};
use crate::schedule::{Schedule, ScheduleError};
use crate::state_machine::TaskState;
use crate::taxonomy::{FailureKind, StepError};
use crate::token::TokenManager;
use crate::window::Windows;
use alert_gate::AlertGate;
use guard::run_guarded;
use job_loop::JobLoop;

/// How long the retry budget's reserve window is.
const BUDGET_WINDOW: Duration = Duration::from_secs(3600);
/// How many seconds ahead `run_once` looks for a free run id.
const MAX_RUN_ONCE_PROBES: u32 = 3600;
/// Journal rows older than this are pruned at start (each job's latest row stays).
const JOURNAL_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A job's schedule is invalid.
    #[error("job `{job}`: {source}")]
    Schedule {
        /// The job.
        job: String,
        /// The schedule error.
        #[source]
        source: ScheduleError,
    },
    /// The state database cannot be opened or migrated.
    #[error(transparent)]
    Store(#[from] DbError),
}

/// Why [`Runner::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested.
    Shutdown,
    /// Without isolation, a fatal error in `job` stopped everything.
    FatalStop {
        /// The job.
        job: String,
        /// What happened.
        reason: String,
    },
    /// Memory is over the fatal threshold: exit so the supervisor restarts the process
    /// (checkpoints make the restart lose nothing).
    MemoryRestart,
}

/// A signal from a job task to the runner.
#[derive(Debug)]
enum Stop {
    Fatal { job: String, reason: String },
    Memory,
}

/// The runner core.
#[derive(Debug)]
pub struct Runner<E: Env> {
    svc: Arc<Services<E>>,
    heartbeats: Arc<Heartbeats<E>>,
    schedules: Vec<(JobConfig, Schedule)>,
    status: Arc<StatusBoard>,
    alerts: Arc<dyn AlertSinkDyn>,
    /// The runner's own alerts of one key go out at most once per this window, across
    /// restarts (none: every one goes out).
    alert_dedup: Option<Duration>,
    started: DateTime<Utc>,
    /// Pattern 3: the heartbeat monitor and the memory watch run (alerting with them).
    heartbeat: bool,
    /// Pattern 7: the health requests the prober sends when a breaker's cooldown ends
    /// (none when the pattern is off).
    probes: Vec<HealthProbe>,
}

/// Builds every pattern of a run in the form the configuration's profile chose, once:
/// with [`Runner::new`] (the heartbeat monitor) the only place that reads
/// `config.patterns`.
fn build_services<E: Env>(env: E, config: Config, db: Arc<Db<E>>) -> Services<E> {
    let patterns = config.patterns;
    let budgets = patterns.retry_budget.then(|| {
        RetryBudgets::new(
            config.retry.budget_ratio,
            config.retry.budget_min_retries,
            BUDGET_WINDOW,
        )
    });
    let style = RetryStyle {
        mode: patterns.retry,
        jitter: patterns.jitter,
    };
    let tokens = config
        .credentials
        .iter()
        .map(|(name, cred)| {
            let manager = TokenManager::new(
                env.clone(),
                cred.clone(),
                db.clone(),
                patterns.proactive_refresh,
            );
            (name.clone(), Arc::new(manager))
        })
        .collect();
    let boundary = if patterns.isolation {
        Boundary::PerJob
    } else {
        Boundary::Whole
    };
    let windows = if patterns.windows {
        Windows::new(config.runner.time_zone, config.windows.clone())
    } else {
        Windows::anytime(config.runner.time_zone)
    };
    let breakers = if patterns.breakers {
        Breakers::new(env.clone(), db.clone(), &config.services)
    } else {
        Breakers::none(env.clone(), db.clone())
    };
    let contracts = if patterns.contracts {
        Contracts::Checked
    } else {
        Contracts::Ignored
    };
    let needs = if patterns.needs {
        Needs::Declared
    } else {
        Needs::Outputs
    };
    let gates = if patterns.gates {
        Gates::new(env.clone(), db.clone())
    } else {
        Gates::none(env.clone(), db.clone())
    };
    Services {
        db,
        contracts,
        needs,
        gates,
        resume: if patterns.checkpoints {
            Resume::FromLastStep
        } else {
            Resume::FromScratch
        },
        retrier: Retrier::new(style, budgets),
        tokens,
        boundary,
        windows,
        breakers,
        clock: patterns.clock,
        env,
        config: Arc::new(config),
    }
}

/// Job -> the services its http steps call, in step order, each once.
fn job_services(jobs: &[JobConfig]) -> BTreeMap<String, Vec<String>> {
    jobs.iter()
        .map(|job| {
            let mut services: Vec<String> = Vec::new();
            for step in &job.steps {
                if let crate::config::StepKind::Http(http) = &step.kind
                    && !services.iter().any(|s| s == http.service.as_str())
                {
                    services.push(http.service.as_str().to_string());
                }
            }
            (job.name.clone(), services)
        })
        .collect()
}

/// Object-safe alias so the runner can hold any sink.
trait AlertSinkDyn: Send + Sync + std::fmt::Debug {
    fn send(&self, alert: Alert);
}

#[derive(Debug)]
struct SinkBox<A>(A);

impl<A: AlertSink + std::fmt::Debug> AlertSinkDyn for SinkBox<A> {
    fn send(&self, alert: Alert) {
        self.0.alert(alert);
    }
}

impl<E: Env> Runner<E> {
    /// Builds the runner and restores its persisted state (breakers, heartbeats).
    /// Corrupt state files are reported as events and started fresh.
    pub async fn new<A: AlertSink + std::fmt::Debug>(
        env: E,
        config: Config,
        alerts: A,
    ) -> Result<Self, StartError> {
        let state_dir = config.runner.state_dir.clone();
        let mut schedules = Vec::with_capacity(config.jobs.len());
        for job in &config.jobs {
            schedules.push((job.clone(), job.schedule.clone()));
        }
        let db = Arc::new(Db::open(env.clone(), &state_dir).await?);
        let retention = chrono::Duration::from_std(JOURNAL_RETENTION).unwrap_or_default();
        if let Err(e) = db.prune(env.now() - retention).await {
            env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
        }
        // Before any step runs again: what a killed runner left running is stopped.
        reaper::reap(&env, &db, config.runner.shutdown_grace).await;
        let svc = build_services(env.clone(), config, db.clone());
        if let Err(e) = svc.breakers.restore() {
            env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
        }
        if let Err(e) = svc.gates.restore() {
            env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
        }
        let config = &svc.config;
        let status = config
            .jobs
            .iter()
            .map(|j| {
                let record = db.job(&j.name).ok().flatten();
                let s = JobStatus {
                    state: TaskState::Idle,
                    last_outcome: None,
                    last_success: record.as_ref().and_then(|r| r.last_ok_at),
                    next_run: None,
                    consecutive_failures: record.map_or(0, |r| r.failure_streak),
                };
                (j.name.clone(), s)
            })
            .collect();
        let status = Arc::new(StatusBoard::new(status));
        let thresholds: Vec<(String, Duration)> = config
            .jobs
            .iter()
            .map(|j| (j.name.clone(), j.heartbeat_threshold))
            .collect();
        let heartbeats = Heartbeats::new(db, &thresholds, status.clone());
        let started = env.now();
        let heartbeat = svc.config.patterns.heartbeat;
        // Pattern 7's prober: health requests when cooldowns end (none when off).
        let probes = if svc.config.patterns.probes {
            HealthProbe::from_services(svc.config.services.values())
        } else {
            Vec::new()
        };
        Ok(Self {
            svc: Arc::new(svc),
            heartbeat,
            probes,
            heartbeats: Arc::new(heartbeats),
            schedules,
            status,
            alerts: Arc::new(SinkBox(alerts)),
            alert_dedup: None,
            started,
        })
    }

    /// Sends the runner's own alerts of one kind for one job at most once per `window`,
    /// remembered in the store so a restart loop does not repeat them (the heartbeat
    /// monitor alerts once per episode regardless).
    pub fn dedup_alerts(mut self, window: Duration) -> Self {
        self.alert_dedup = Some(window);
        self
    }

    /// The live status of every job, by name.
    pub fn status(&self) -> BTreeMap<String, JobStatus> {
        self.status.snapshot()
    }

    /// The shared status board, for readers that outlive [`Runner::run`]'s borrow
    /// (the daemon's status file, `/metrics`). Jobs' failure streaks from an earlier
    /// process can be restored through it before the runner starts.
    pub fn board(&self) -> Arc<StatusBoard> {
        self.status.clone()
    }

    /// The state of every breaker.
    pub fn breaker_states(&self) -> BTreeMap<String, BreakerState> {
        self.svc.breakers.states()
    }

    /// The expiry of every credential's current access token.
    pub fn token_expiries(&self) -> BTreeMap<String, Option<DateTime<Utc>>> {
        self.svc
            .tokens
            .iter()
            .map(|(name, t)| (name.clone(), t.expires_at()))
            .collect()
    }

    /// Waits for every credential's refresh in flight (each bounded by its timeout).
    async fn settle_tokens(&self) {
        for manager in self.svc.tokens.values() {
            manager.settle().await;
        }
    }

    /// Runs one job once, now, in the foreground (debugging), as an extra slot due now
    /// in the journal. `None` for an unknown job.
    pub async fn run_once(&self, job: &str) -> Option<RunOutcome> {
        let (job, _) = self.schedules.iter().find(|(j, _)| j.name == job)?;
        let env = &self.svc.env;
        // Run ids name whole seconds: a second foreground run within the same second
        // (a script calling run-once in a loop) takes the next free second.
        let mut run = RunId::new(&job.name, env.now());
        for _ in 0..MAX_RUN_ONCE_PROBES {
            if !matches!(self.svc.db.slot(&run), Ok(Some(_))) {
                break;
            }
            run = RunId::new(&job.name, run.due() + chrono::Duration::seconds(1));
        }
        let outcome = match self.svc.db.start_run(&run, env.now()).await {
            Ok(_) => {
                let (_keep, halt) = watch::channel(false);
                run_guarded(&self.svc, job, run.clone(), halt).await
            }
            Err(e) => RunOutcome::Failed(StepError::new(FailureKind::Io, e.to_string())),
        };
        // A refresh the run started (and perhaps gave up waiting for) keeps its answer.
        self.settle_tokens().await;
        let settled = match &outcome {
            RunOutcome::Interrupted => Ok(0),
            RunOutcome::Failed(e) | RunOutcome::Fatal(e) => {
                self.svc
                    .db
                    .finish_run(&run, outcome.kind(), Some(&e.detail), env.now())
                    .await
            }
            _ => {
                self.svc
                    .db
                    .finish_run(&run, outcome.kind(), None, env.now())
                    .await
            }
        };
        if settled.is_ok() && outcome != RunOutcome::Interrupted {
            crate::job::attempt::sweep_progress(&self.svc, job, &run).await;
        }
        if let Err(e) = settled {
            env.emit(
                Event::new(EventKind::HeartbeatFinding)
                    .job(&job.name)
                    .detail(e.to_string()),
            );
        }
        Some(outcome)
    }

    /// Runs every job until `shutdown` becomes true (or, without isolation, until a
    /// fatal error; or until memory demands a restart).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Exit {
        let env = self.svc.env.clone();
        env.emit(
            Event::new(EventKind::RunnerStarted).detail(format!("{} job(s)", self.schedules.len())),
        );
        let (stop_tx, mut stop_rx) = mpsc::channel::<Stop>(16);
        let (halt_tx, halt_rx) = watch::channel(false);
        let gate = Arc::new(AlertGate {
            db: self.svc.db.clone(),
            window: self.alert_dedup,
            sink: self.alerts.clone(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (job, schedule) in self.schedules.iter().cloned() {
            let job_loop = JobLoop {
                svc: self.svc.clone(),
                memory_limit: self
                    .heartbeat
                    .then_some(self.svc.config.runner.memory_fatal_bytes),
                status: self.status.clone(),
                alerts: gate.clone(),
                stop: stop_tx.clone(),
                halt: halt_rx.clone(),
                job,
                schedule,
            };
            tasks.spawn(job_loop.run());
        }
        tasks.spawn(prober::run(
            self.svc.clone(),
            self.probes.clone(),
            halt_rx.clone(),
        ));
        if self.svc.clock == crate::wake::ClockMode::Wall {
            tasks.spawn(crate::wake::watch(env.clone(), halt_rx.clone()));
        }
        if self.heartbeat {
            let monitor = Monitor::new(
                env.clone(),
                self.heartbeats.clone(),
                HealthProbe::from_services(self.svc.config.services.values()),
                self.svc.config.runner.memory_warn_bytes,
                AlertForward(self.alerts.clone()),
                self.started,
            );
            let (svc, gated) = (self.svc.clone(), self.svc.clone());
            let monitor = monitor
                .watch_breakers(
                    Box::new(move || svc.breakers.open_since()),
                    self.svc.config.runner.breaker_alert_after,
                )
                .watch_gates(
                    Box::new(move |service, now| {
                        gated.gates.closed(service, now).map(|h| h.not_before)
                    }),
                    job_services(&self.svc.config.jobs),
                )
                .wake_grace(self.svc.clock == crate::wake::ClockMode::Wall);
            tasks.spawn(monitor.run(self.svc.config.runner.monitor_interval, halt_rx.clone()));
        }
        drop(stop_tx);
        let exit = tokio::select! {
            biased;
            _ = wait_true(&mut shutdown) => Exit::Shutdown,
            stop = stop_rx.recv() => match stop {
                Some(Stop::Fatal { job, reason }) => Exit::FatalStop { job, reason },
                Some(Stop::Memory) => Exit::MemoryRestart,
                // Every job has stopped for a human. Stay up (the monitor keeps
                // alerting, status stays readable) rather than exit into a restart loop.
                None => {
                    wait_true(&mut shutdown).await;
                    Exit::Shutdown
                }
            },
        };
        // Stop scheduling; running steps get the grace period to finish.
        let _ = halt_tx.send(true);
        let grace = self.svc.config.runner.shutdown_grace;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        // A refresh in flight completes and is kept, or its rotated token is lost.
        self.settle_tokens().await;
        env.emit(Event::new(EventKind::RunnerStopped).detail(match &exit {
            Exit::Shutdown => "shutdown".to_string(),
            Exit::FatalStop { job, reason } => {
                format!("fatal error in `{job}` stopped the runner: {reason}")
            }
            Exit::MemoryRestart => "memory over the fatal threshold; restarting".to_string(),
        }));
        exit
    }
}

/// Forwards monitor alerts to the runner's sink.
#[derive(Debug, Clone)]
struct AlertForward(Arc<dyn AlertSinkDyn>);

impl AlertSink for AlertForward {
    fn alert(&self, alert: Alert) {
        self.0.send(alert);
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: nobody can ask for shutdown any more.
            std::future::pending::<()>().await;
        }
    }
}
