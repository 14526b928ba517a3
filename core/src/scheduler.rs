//! The runner: one task per job, each behind its own error boundary (pattern 4), plus
//! the heartbeat monitor (pattern 3).
//!
//! A job's task waits for its next due time, runs the job through the state machine
//! (`idle -> running -> success | failure -> cooldown -> idle`), records its heartbeat
//! and computes the next due time. A panic or error in one job's run is caught at that
//! job's boundary and never stops or delays another. Without isolation (the naive
//! profile) a fatal error anywhere stops the whole runner, as the field report's first
//! version did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use crate::alert::{Alert, AlertKind, AlertSink};
use crate::boundary::Boundary;
use crate::breaker::{BreakerState, Breakers};
use crate::checkpoint::Checkpoints;
use crate::config::{Config, JobConfig, Overlap};
use crate::env::{Env, MemoryProbe, Rng};
use crate::event::{Event, EventKind, SkipReason};
use crate::heartbeat::Heartbeats;
use crate::heartbeat::{HealthProbe, Monitor};
use crate::job::{RunContext, RunId, RunOutcome, Services, execute, sleep_until_wall};
pub use crate::job_status::{JobStatus, StatusBoard};
use crate::retry::{Retrier, RetryBudgets, RetryStyle};
use crate::schedule::{Schedule, ScheduleError};
use crate::state_machine::{Task, TaskState};
use crate::taxonomy::{ErrorClass, FailureKind, StepError};
use crate::token::TokenManager;
use crate::window::Windows;

/// How long the retry budget's reserve window is.
const BUDGET_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many skipped-slot events per run (a long outage must not flood logs).
const MAX_SKIP_EVENTS: u32 = 16;

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
    started: DateTime<Utc>,
    /// Pattern 3: the heartbeat monitor and the memory watch run (alerting with them).
    heartbeat: bool,
}

/// Builds every pattern of a run in the form the configuration's profile chose, once:
/// with [`Runner::new`] (the heartbeat monitor) the only place that reads
/// `config.patterns`.
fn build_services<E: Env>(env: E, config: Config) -> Services<E> {
    let patterns = config.patterns;
    let state_dir = &config.runner.state_dir;
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
            let timeout = Duration::from_secs(30);
            let manager = TokenManager::new(
                env.clone(),
                cred.clone(),
                state_dir,
                patterns.proactive_refresh,
                timeout,
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
        Breakers::new(env.clone(), state_dir, &config.services)
    } else {
        Breakers::none(env.clone(), state_dir)
    };
    Services {
        checkpoints: patterns
            .checkpoints
            .then(|| Checkpoints::new(env.clone(), state_dir)),
        retrier: Retrier::new(style, budgets),
        tokens,
        boundary,
        windows,
        breakers,
        env,
        config: Arc::new(config),
    }
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
            let schedule =
                Schedule::new(&job.schedule, config.runner.time_zone).map_err(|source| {
                    StartError::Schedule {
                        job: job.name.clone(),
                        source,
                    }
                })?;
            schedules.push((job.clone(), schedule));
        }
        let svc = build_services(env.clone(), config);
        if let Err(e) = svc.breakers.restore().await {
            env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
        }
        let config = &svc.config;
        let thresholds: Vec<(String, Duration)> = config
            .jobs
            .iter()
            .map(|j| (j.name.clone(), j.heartbeat_threshold))
            .collect();
        let (heartbeats, corrupt) = Heartbeats::open(env.clone(), &state_dir, &thresholds).await;
        if let Some(e) = corrupt {
            env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
        }
        let status = config
            .jobs
            .iter()
            .map(|j| {
                let s = JobStatus {
                    state: TaskState::Idle,
                    last_outcome: None,
                    last_success: heartbeats.last_success(&j.name),
                    next_run: None,
                    consecutive_failures: 0,
                };
                (j.name.clone(), s)
            })
            .collect();
        let started = env.now();
        let heartbeat = svc.config.patterns.heartbeat;
        Ok(Self {
            svc: Arc::new(svc),
            heartbeat,
            heartbeats: Arc::new(heartbeats),
            schedules,
            status: Arc::new(StatusBoard::new(status)),
            alerts: Arc::new(SinkBox(alerts)),
            started,
        })
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

    /// Runs one job once, now, in the foreground (debugging). `None` for an unknown job.
    pub async fn run_once(&self, job: &str) -> Option<RunOutcome> {
        let (job, schedule) = self.schedules.iter().find(|(j, _)| j.name == job)?;
        let now = self.svc.env.now();
        let outcome = run_guarded(&self.svc, job, schedule, now, RunId::new(&job.name, now)).await;
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
        let mut tasks = tokio::task::JoinSet::new();
        for (job, schedule) in self.schedules.iter().cloned() {
            let job_loop = JobLoop {
                svc: self.svc.clone(),
                memory_limit: self
                    .heartbeat
                    .then_some(self.svc.config.runner.memory_fatal_bytes),
                heartbeats: self.heartbeats.clone(),
                status: self.status.clone(),
                alerts: self.alerts.clone(),
                stop: stop_tx.clone(),
                halt: halt_rx.clone(),
                job,
                schedule,
            };
            tasks.spawn(job_loop.run());
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
            let svc = self.svc.clone();
            let monitor = monitor.watch_breakers(
                Box::new(move || svc.breakers.open_since()),
                self.svc.config.runner.breaker_alert_after,
            );
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

/// One job's task.
struct JobLoop<E: Env> {
    svc: Arc<Services<E>>,
    /// Pattern 3's memory watch: resident memory over this asks for a fresh process.
    memory_limit: Option<u64>,
    heartbeats: Arc<Heartbeats<E>>,
    status: Arc<StatusBoard>,
    alerts: Arc<dyn AlertSinkDyn>,
    stop: mpsc::Sender<Stop>,
    halt: watch::Receiver<bool>,
    job: JobConfig,
    schedule: Schedule,
}

impl<E: Env> JobLoop<E> {
    async fn run(mut self) {
        let env = self.svc.env.clone();
        let name = self.job.name.clone();
        let mut task = Task::new(env.clone(), name.clone());
        // After downtime, at most one catch-up run: now, if a slot was missed or a run
        // was interrupted (its checkpoint is still there).
        // The catch-up run is the missed slot's own run (same run id), started now.
        let now = env.now();
        let interrupted = match &self.svc.checkpoints {
            Some(checkpoints) => match checkpoints.load(&name).await {
                Ok(Some(cp)) => Some(cp.started_at.min(now)),
                _ => None,
            },
            None => None,
        };
        let missed = self
            .schedule
            .missed(self.heartbeats.last_success(&name), now);
        let mut due = interrupted
            .or(missed)
            .unwrap_or_else(|| self.schedule.next_after(now));
        loop {
            let jitter_ms = env
                .rng()
                .between(0, self.job.start_jitter.as_millis() as u64);
            let start_at = due + chrono::Duration::milliseconds(jitter_ms as i64);
            self.update(|s| {
                s.state = TaskState::Idle;
                s.next_run = Some(start_at);
            });
            tokio::select! {
                biased;
                _ = wait_true(&mut self.halt) => return,
                _ = sleep_until_wall(&env, start_at) => {}
            }
            if self.first_step_closed(start_at) {
                // Nothing of this job may run now: the slot is skipped, and the job is
                // alive and behaving as configured, so it counts as a check.
                env.emit(
                    Event::new(EventKind::RunSkipped)
                        .job(&name)
                        .reason(SkipReason::Window)
                        .detail("outside the time window of its first step"),
                );
                let _ = self.heartbeats.record_success(&name, env.now()).await;
                due = self.schedule.next_after(env.now().max(due));
                continue;
            }
            // Watching memory is part of the heartbeat pattern; over the fatal line the
            // runner asks its supervisor for a fresh process rather than wait for OOM.
            if self
                .memory_limit
                .is_some_and(|limit| self.svc.env.memory().resident_bytes() > limit)
            {
                let reason = "memory over the fatal threshold".to_string();
                self.alert(AlertKind::Memory, &reason);
                let _ = self.stop.send(Stop::Memory).await;
                return;
            }
            let run_id = RunId::new(&self.job.name, due);
            let running = task.start(run_id.clone());
            self.update(|s| s.state = TaskState::Running);
            env.emit(Event::new(EventKind::RunStarted).job(&name).run_id(&run_id));
            let outcome =
                run_guarded(&self.svc, &self.job, &self.schedule, due, run_id.clone()).await;
            let mut event = Event::new(EventKind::RunFinished)
                .job(&name)
                .run_id(&run_id)
                .outcome(outcome.kind());
            if let RunOutcome::Failed(e) | RunOutcome::Fatal(e) = &outcome {
                event = event.class(e.class).detail(e.detail.clone());
            }
            env.emit(event);
            let cooldown = match outcome {
                RunOutcome::Succeeded | RunOutcome::Degraded { .. } => {
                    let degraded = matches!(outcome, RunOutcome::Degraded { .. });
                    if let Err(e) = self.heartbeats.record_success(&name, env.now()).await {
                        let err = StepError::new(
                            e.io_error()
                                .map(FailureKind::from)
                                .unwrap_or(FailureKind::Io),
                            format!("failed to record heartbeat: {e}"),
                        );
                        if err.class == ErrorClass::Fatal {
                            let failed = running.fail(&err.detail);
                            self.fatal(failed.stop(&err.detail), &err.detail).await;
                            return;
                        }
                    }
                    let success = running.succeed(degraded);
                    self.update(|s| {
                        s.last_outcome = Some(outcome.kind());
                        s.last_success = Some(env.now());
                        s.consecutive_failures = 0;
                    });
                    success.cool_down()
                }
                RunOutcome::Deferred { .. } => {
                    // The job did all its windows allow and saved its progress: it is
                    // alive and behaving as configured, which is what a heartbeat says.
                    let _ = self.heartbeats.record_success(&name, env.now()).await;
                    self.update(|s| s.last_outcome = Some(outcome.kind()));
                    running.defer().cool_down()
                }
                RunOutcome::Failed(ref e) => {
                    self.update(|s| {
                        s.last_outcome = Some(outcome.kind());
                        s.consecutive_failures += 1;
                    });
                    running.fail(&e.detail).cool_down()
                }
                RunOutcome::Fatal(ref e) => {
                    self.update(|s| s.last_outcome = Some(outcome.kind()));
                    let failed = running.fail(&e.detail);
                    self.fatal(failed.stop(&e.detail), &e.detail).await;
                    return;
                }
            };
            task = cooldown.rest();
            let now = env.now();
            let next = self.schedule.next_after(now.max(due));
            let missed = self.count_missed(due, now);
            if missed > 0 {
                env.emit(
                    Event::new(EventKind::RunSkipped)
                        .job(&name)
                        .reason(SkipReason::Overlap)
                        .detail(format!(
                            "{missed} slot(s) passed while the run was in progress"
                        )),
                );
            }
            due = if missed > 0 && self.job.overlap == Overlap::Queue {
                now
            } else {
                next
            };
        }
    }

    fn first_step_closed(&self, at: DateTime<Utc>) -> bool {
        let action = self.job.steps.first().and_then(|s| s.action.as_deref());
        !self.svc.windows.is_open(action, at)
    }

    /// Slots strictly between `due` and `now` that the run overlapped (bounded).
    fn count_missed(&self, due: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
        let mut n = 0;
        let mut t = self.schedule.next_after(due);
        while t <= now && n < MAX_SKIP_EVENTS {
            n += 1;
            t = self.schedule.next_after(t);
        }
        n
    }

    async fn fatal(&self, state: TaskState, reason: &str) {
        let env = &self.svc.env;
        self.update(|s| s.state = state);
        env.emit(
            Event::new(EventKind::JobStopped)
                .job(&self.job.name)
                .class(ErrorClass::Fatal)
                .detail(reason.to_string()),
        );
        self.alert(AlertKind::Fatal, reason);
        if self.svc.boundary.fatal_stops_runner() {
            let _ = self
                .stop
                .send(Stop::Fatal {
                    job: self.job.name.clone(),
                    reason: reason.to_string(),
                })
                .await;
        }
    }

    fn alert(&self, kind: AlertKind, message: &str) {
        let env = &self.svc.env;
        env.emit(
            Event::new(EventKind::Alert)
                .job(&self.job.name)
                .detail(message.to_string()),
        );
        self.alerts.send(Alert {
            at: env.now(),
            kind,
            job: Some(self.job.name.clone()),
            service: None,
            message: message.to_string(),
        });
    }

    fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        self.status.update(&self.job.name, f);
    }
}

/// Runs one run inside its own task (the error boundary) with a hard deadline.
async fn run_guarded<E: Env>(
    svc: &Arc<Services<E>>,
    job: &JobConfig,
    schedule: &Schedule,
    due: DateTime<Utc>,
    run_id: RunId,
) -> RunOutcome {
    let _ = schedule;
    let env = svc.env.clone();
    let start = env.now();
    let deadline = start + chrono::Duration::from_std(job.deadline).unwrap_or_default();
    let svc2 = svc.clone();
    let job2 = job.clone();
    let handle = tokio::spawn(async move {
        let ctx = RunContext {
            job: &job2,
            fresh_run_id: run_id,
            due,
            deadline,
        };
        execute(&svc2, &ctx).await
    });
    let abort = handle.abort_handle();
    // The hard stop: a run that outlives its deadline (say a step stuck in a call that
    // ignores its timeout) is cancelled; its checkpoint keeps what was done.
    match tokio::time::timeout(job.deadline + Duration::from_secs(1), handle).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join)) if join.is_panic() => {
            let detail = "the job panicked; caught at its boundary".to_string();
            env.emit(
                Event::new(EventKind::JobPanicked)
                    .job(&job.name)
                    .class(ErrorClass::Fatal)
                    .detail(detail.clone()),
            );
            RunOutcome::Fatal(StepError::new(FailureKind::Panic, detail))
        }
        Ok(Err(_cancelled)) => RunOutcome::Failed(StepError::new(FailureKind::Io, "run cancelled")),
        Err(_) => {
            abort.abort();
            RunOutcome::Failed(StepError::new(
                FailureKind::Timeout,
                format!("run passed its deadline of {}s", job.deadline.as_secs()),
            ))
        }
    }
}
