//! One run of one job: its steps in order, each through every pattern.
//!
//! A run resumes from its checkpoint (pattern 5), waits for its step's time window
//! (pattern 6), gets a fresh token (pattern 2), asks the service's breaker (pattern 7),
//! makes the call, classifies any failure (pattern 4) and retries with backoff, jitter
//! and budget (pattern 1). A step whose service is down is skipped and the run is
//! degraded; a fatal failure ends the run for a human to look at.
//!
//! # Layout
//! - [`attempt`]: one attempt of one step (HTTP or command).
//! - [`contract`]: whether an answer holds what its step expects.
//! - [`needs`]: which earlier steps a step waits for.
//! - [`template`]: `{{step.output}}` placeholders and JSON-pointer extraction.

pub mod attempt;
pub mod contract;
pub mod needs;
pub mod run_id;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::boundary::Boundary;
use crate::breaker::Breakers;
use crate::checkpoint::{Resume, idempotency_key};
use crate::config::{Config, JobConfig, RetryPolicy, StepConfig};
use crate::db::{Db, DbError, StepRecord};
use crate::env::Env;
use crate::event::{Event, EventKind, Outcome};
use crate::retry::{Gates, GiveUp, Retrier, RetryDecision, RetryInput};
use crate::taxonomy::{ErrorClass, FailureKind, StepError};
use crate::token::TokenManager;
use crate::window::Windows;
pub use contract::Contracts;
pub use needs::Needs;

pub use run_id::{ParseRunIdError, RunId};
use template::Vars;

/// Everything a run needs that outlives it, shared by all jobs.
///
/// Each pattern is here in the form the runner's profile chose when it was built (an
/// absent layer or a strategy), so a run never asks which patterns are on.
#[derive(Debug)]
pub struct Services<E: Env> {
    /// The environment.
    pub env: E,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Pattern 1: retry style and budgets.
    pub retrier: Retrier,
    /// Pattern 2: token managers by credential (proactive or reactive refresh).
    pub tokens: BTreeMap<String, Arc<TokenManager<E>>>,
    /// Pattern 4: how far one failure reaches.
    pub boundary: Boundary,
    /// The durable store: the journal of runs and everything else that must survive.
    pub db: Arc<Db<E>>,
    /// Pattern 5: whether a run resumes after its last finished step (with stable
    /// idempotency keys) or starts over.
    pub resume: Resume,
    /// Pattern 6: time windows by action (none when the pattern is off).
    pub windows: Windows,
    /// Pattern 7: circuit breakers by service (none when the pattern is off).
    pub breakers: Breakers<E>,
    /// Pattern 4: whether answers are checked against their step's contract.
    pub contracts: Contracts,
    /// Pattern 4: which earlier steps a step waits for.
    pub needs: Needs,
    /// Pattern 1: per-service "not before" instants every job consults (none held
    /// when the pattern is off).
    pub gates: Gates<E>,
    /// How schedules and run deadlines keep time across sleeps and clock steps.
    pub clock: crate::wake::ClockMode,
}

pub use crate::db::Hold;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Every step completed.
    Succeeded,
    /// Some steps were skipped because their service was down; the rest completed.
    ///
    /// With step dependencies on, only steps nothing else needs can be skipped in a
    /// degraded run: a step skipped for a prerequisite fails the run instead.
    Degraded {
        /// The skipped steps.
        skipped: Vec<String>,
    },
    /// A step's window closed and opens only after the run's deadline; progress is
    /// kept and the next run resumes it.
    Deferred {
        /// The step waiting.
        step: String,
        /// When it may run.
        until: DateTime<Utc>,
        /// What it waits for.
        hold: Hold,
    },
    /// The run failed; its progress is kept for the next run.
    Failed(StepError),
    /// The run failed in a way that needs a human; the job stops.
    Fatal(StepError),
    /// Shutdown stopped the run between steps; the next start resumes it.
    Interrupted,
}

impl RunOutcome {
    /// The outcome as events, status and metrics name it.
    pub fn kind(&self) -> Outcome {
        match self {
            Self::Succeeded => Outcome::Succeeded,
            Self::Degraded { .. } => Outcome::Degraded,
            Self::Deferred { .. } => Outcome::Deferred,
            Self::Failed(_) => Outcome::Failed,
            Self::Fatal(_) => Outcome::Fatal,
            Self::Interrupted => Outcome::Interrupted,
        }
    }
}

/// What one step came to.
enum StepResult {
    Done(BTreeMap<String, String>),
    Skip(StepError),
    Defer(DateTime<Utc>, Hold),
    Fail(StepError),
    /// The runner shut down while the step waited (for its window or gate).
    Halted,
}

/// A run's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDeadline {
    /// A budget of monotonic time, read against the wall clock when needed: a sleep
    /// (the wall clock jumps, monotonic time does not) spends none of it, so a healthy
    /// run is not given up on wake.
    Budget(tokio::time::Instant),
    /// A wall-clock instant fixed at the start (the naive habit: a sleep spends it).
    Wall(DateTime<Utc>),
}

impl RunDeadline {
    /// The deadline as a wall-clock instant, read at `now`.
    pub fn at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Budget(end) => {
                let left = end.saturating_duration_since(tokio::time::Instant::now());
                now + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::MAX)
            }
            Self::Wall(at) => *at,
        }
    }
}

/// Identifies the run being executed.
#[derive(Debug, Clone)]
pub struct RunContext<'a> {
    /// The job.
    pub job: &'a JobConfig,
    /// The run: the slot it runs, resumed or fresh.
    pub run: RunId,
    /// No retry is scheduled past this.
    pub deadline: RunDeadline,
    /// Becomes true when the runner shuts down: no new step starts after that.
    pub halt: watch::Receiver<bool>,
}

/// Runs one run of a job to its outcome.
///
/// With checkpoints on, the steps the run finished before (an interrupted, failed or
/// deferred attempt) are taken from the journal and not repeated, and each step this
/// attempt finishes is journaled before the next starts.
pub async fn execute<E: Env>(svc: &Services<E>, ctx: &RunContext<'_>) -> RunOutcome {
    let env = &svc.env;
    let job = ctx.job;
    let run_id = &ctx.run;
    let done_before = match resume(svc, ctx) {
        Ok(steps) => steps,
        Err(outcome) => return outcome,
    };
    let mut vars = Vars::new();
    vars.insert("run.id".into(), run_id.to_string());
    // The slot of this run, which a resumed run keeps.
    vars.insert("run.due".into(), run_id.due().to_rfc3339());
    vars.insert("job.name".into(), job.name.clone());
    for done in &done_before {
        for (k, v) in &done.outputs {
            vars.insert(format!("{}.{k}", done.name), v.clone());
        }
    }
    let mut skipped: Vec<String> = Vec::new();
    // Steps not done in this run, and why: what their dependents are skipped for.
    let mut not_done: BTreeMap<String, String> = BTreeMap::new();
    let mut last_skip: Option<StepError> = None;
    // The first step skipped for a prerequisite, when that fails the run.
    let mut blocked: Option<StepError> = None;
    // Steps deferred to a later run (a window or gate that opens after the deadline),
    // with when, in order.
    let mut deferred: Vec<(String, DateTime<Utc>, Hold)> = Vec::new();
    let mut completed = done_before.len();
    for (index, step) in job.steps.iter().enumerate() {
        if done_before.iter().any(|d| d.name == step.name) {
            env.emit(
                Event::new(EventKind::StepReplayed)
                    .job(&job.name)
                    .run_id(run_id)
                    .step(&step.name)
                    .detail("completed before; not repeated"),
            );
            continue;
        }
        if *ctx.halt.borrow() {
            // Shutdown: the steps left are journaled as not done; the next start resumes.
            return RunOutcome::Interrupted;
        }
        if let Some(b) = svc.needs.blocked(&job.steps, index, &not_done) {
            if let Some((_, until, hold)) = deferred.iter().find(|(d, ..)| *d == b.prerequisite) {
                // Waits with its prerequisite: the resumed run does both.
                env.emit(
                    Event::new(EventKind::StepSkipped)
                        .job(&job.name)
                        .run_id(run_id)
                        .step(&step.name)
                        .detail(format!(
                            "needs step `{}`, deferred to {}; deferred with it",
                            b.prerequisite,
                            until.to_rfc3339()
                        )),
                );
                let (until, hold) = (*until, *hold);
                deferred.push((step.name.clone(), until, hold));
                not_done.insert(
                    step.name.clone(),
                    format!("deferred with `{}`", b.prerequisite),
                );
                continue;
            }
            let detail = format!(
                "needs step `{}`, which was not done ({})",
                b.prerequisite, b.why
            );
            env.emit(
                Event::new(EventKind::StepSkipped)
                    .job(&job.name)
                    .run_id(run_id)
                    .step(&step.name)
                    .class(ErrorClass::Degraded)
                    .detail(detail.clone()),
            );
            if svc.needs.blocked_fails_run() && blocked.is_none() {
                blocked = Some(StepError::new(
                    FailureKind::PrerequisiteNotDone,
                    format!("step `{}` {detail}", step.name),
                ));
            }
            not_done.insert(
                step.name.clone(),
                format!("its prerequisite `{}` was not done", b.prerequisite),
            );
            skipped.push(step.name.clone());
            continue;
        }
        match run_step(svc, ctx, step, run_id, &vars).await {
            StepResult::Done(outputs) => {
                completed += 1;
                for (k, v) in &outputs {
                    vars.insert(format!("{}.{k}", step.name), v.clone());
                }
                if svc.resume == Resume::FromLastStep {
                    let record = StepRecord {
                        name: step.name.clone(),
                        idempotency_key: idempotency_key(run_id, &step.name),
                        outputs,
                        done_at: env.now(),
                    };
                    if let Err(e) = svc.db.step_done(run_id, &record).await {
                        return store_failure(&e, "failed to journal a finished step");
                    }
                    env.emit(
                        Event::new(EventKind::CheckpointSaved)
                            .job(&job.name)
                            .run_id(run_id)
                            .step(&step.name),
                    );
                }
            }
            StepResult::Skip(err) => {
                if !svc.boundary.skipped_step_degrades() {
                    return RunOutcome::Failed(err);
                }
                env.emit(
                    Event::new(EventKind::StepSkipped)
                        .job(&job.name)
                        .run_id(run_id)
                        .step(&step.name)
                        .class(ErrorClass::Degraded)
                        .detail(err.detail.clone()),
                );
                skipped.push(step.name.clone());
                not_done.insert(step.name.clone(), err.detail.clone());
                last_skip = Some(err);
            }
            StepResult::Defer(until, hold) => {
                if !svc.needs.deferral_continues() {
                    return RunOutcome::Deferred {
                        step: step.name.clone(),
                        until,
                        hold,
                    };
                }
                // The steps that do not need this one go on; it and its dependents
                // wait for a later run, which resumes them.
                not_done.insert(
                    step.name.clone(),
                    format!("deferred to {}", until.to_rfc3339()),
                );
                deferred.push((step.name.clone(), until, hold));
            }
            StepResult::Halted => return RunOutcome::Interrupted,
            StepResult::Fail(err) => {
                return if err.class == ErrorClass::Fatal {
                    RunOutcome::Fatal(err)
                } else {
                    RunOutcome::Failed(err)
                };
            }
        }
    }
    if let Some(err) = blocked {
        // A step the run exists for did not run: no output, so not a success of any kind.
        return RunOutcome::Failed(err);
    }
    if let Some((step, until, hold)) = deferred.into_iter().next() {
        // The first deferred step names the run's deferral; the resumed run repeats
        // none of the steps done here.
        return RunOutcome::Deferred { step, until, hold };
    }
    if completed == 0
        && let Some(err) = last_skip
    {
        // Every step was skipped: nothing was produced, so this is a failure, not a
        // degraded success.
        return RunOutcome::Failed(err);
    }
    if skipped.is_empty() {
        RunOutcome::Succeeded
    } else {
        RunOutcome::Degraded { skipped }
    }
}

/// The steps the run finished before, from the journal (none when runs start over).
///
/// Progress that cannot be read fails the run loudly: starting it over would repeat
/// its finished steps under new keys.
fn resume<E: Env>(svc: &Services<E>, ctx: &RunContext<'_>) -> Result<Vec<StepRecord>, RunOutcome> {
    if svc.resume == Resume::FromScratch {
        return Ok(Vec::new());
    }
    let env = &svc.env;
    match svc.db.steps_done(&ctx.run) {
        Ok(steps) => {
            if !steps.is_empty() {
                env.emit(
                    Event::new(EventKind::CheckpointResumed)
                        .job(&ctx.job.name)
                        .run_id(&ctx.run)
                        .detail(format!("{} step(s) already done", steps.len())),
                );
            }
            Ok(steps)
        }
        Err(e) => Err(store_failure(&e, "failed to read the run's progress")),
    }
}

fn store_failure(e: &DbError, what: &str) -> RunOutcome {
    let err = StepError::new(e.kind(), format!("{what}: {e}"));
    if err.class == ErrorClass::Fatal {
        RunOutcome::Fatal(err)
    } else {
        RunOutcome::Failed(err)
    }
}

/// Runs one step: window, attempts, retries.
async fn run_step<E: Env>(
    svc: &Services<E>,
    ctx: &RunContext<'_>,
    step: &StepConfig,
    run_id: &RunId,
    vars: &Vars,
) -> StepResult {
    let env = &svc.env;
    let job = ctx.job;
    let policy: RetryPolicy = job.retry.unwrap_or(svc.config.retry);
    let action = step.action.as_deref();
    let service = attempt::service_of(step);
    let mut prev_delay = Duration::ZERO;
    let mut attempt = 0u32;
    // Every event of this step names the job, the run and the step.
    let event = |kind| {
        Event::new(kind)
            .job(&job.name)
            .run_id(run_id)
            .step(&step.name)
    };
    loop {
        // The window and the service's gate, until both are open; deferred (no call)
        // when either opens only after the run's deadline.
        loop {
            if !svc.windows.is_open(action, env.now()) {
                let open = svc.windows.next_open(action, env.now());
                let wait = (open - env.now()).to_std().unwrap_or_default();
                let event = event(EventKind::WindowWait).delay(wait);
                if open > ctx.deadline.at(env.now()) {
                    env.emit(event.detail("window opens after the run's deadline; deferred"));
                    return StepResult::Defer(open, Hold::Window);
                }
                env.emit(event.detail("waiting for the window to open"));
                if !wait_unless_halted(env, open, &ctx.halt).await {
                    return StepResult::Halted;
                }
                continue;
            }
            if let Some(service) = service
                && let Some(hold) = svc.gates.closed(service, env.now())
            {
                let wait = (hold.not_before - env.now()).to_std().unwrap_or_default();
                let event = event(EventKind::GateWait).service(service).delay(wait);
                if hold.not_before > ctx.deadline.at(env.now()) {
                    env.emit(event.detail(format!(
                        "{}: the service takes no calls before {}, after the run's deadline; deferred",
                        hold.reason,
                        hold.not_before.to_rfc3339()
                    )));
                    return StepResult::Defer(hold.not_before, Hold::Gate);
                }
                env.emit(event.detail(format!("{}: waiting for the service's gate", hold.reason)));
                if !wait_unless_halted(env, hold.not_before, &ctx.halt).await {
                    return StepResult::Halted;
                }
                continue;
            }
            break;
        }
        attempt += 1;
        env.emit(
            event(EventKind::Attempt)
                .attempt(attempt)
                .service(service.unwrap_or("local")),
        );
        let (result, used_token) =
            attempt::attempt_step(svc, &job.name, run_id, step, vars, attempt).await;
        let err = match result {
            Ok(outputs) => {
                env.emit(event(EventKind::StepSucceeded).attempt(attempt));
                return StepResult::Done(outputs);
            }
            Err(err) => err,
        };
        env.emit(
            event(EventKind::AttemptFailed)
                .attempt(attempt)
                .service(service.unwrap_or("local"))
                .class(err.class)
                .detail(format!("{}: {}", err.kind.label(), err.detail)),
        );
        if err.class == ErrorClass::Fatal {
            // Needs a human, whatever the service's gate says.
            return StepResult::Fail(err);
        }
        if let Some(service) = service
            && let Some(hold) = svc.gates.closed(service, env.now())
        {
            // The service said when to come back (or its breaker did): wait for that
            // within the deadline, or leave the step for a later run without calling.
            if hold.not_before > ctx.deadline.at(env.now()) {
                env.emit(
                    event(EventKind::GateWait)
                        .service(service)
                        .attempt(attempt)
                        .detail(format!(
                            "{}: the service takes no calls before {}, after the run's deadline; deferred",
                            hold.reason,
                            hold.not_before.to_rfc3339()
                        )),
                );
                return StepResult::Defer(hold.not_before, Hold::Gate);
            }
            if err.kind == FailureKind::BreakerOpen {
                // Rejected without a call: the wait at the gate is the cooldown, and
                // the first caller after it is the breaker's probe.
                continue;
            }
        }
        if err.kind == FailureKind::BreakerOpen
            && let Some(at) = svc.gates.after_probe(env.now(), ctx.deadline.at(env.now()))
        {
            // Half-open with another caller's probe out: ask again shortly.
            sleep_until_wall(env, at).await;
            continue;
        }
        match err.class {
            ErrorClass::Fatal => return StepResult::Fail(err),
            ErrorClass::Degraded => return StepResult::Skip(err),
            ErrorClass::Critical | ErrorClass::Recoverable => {}
        }
        if err.kind == FailureKind::Unauthorized
            && let (Some(token), Some(manager)) = (used_token, attempt::credential_of(svc, step))
        {
            // Pattern 2's fallback: one reactive refresh after a 401.
            if let Err(e) = manager.refresh_after_unauthorized(&token).await {
                let kind = e.kind();
                let refresh_err = StepError::new(kind, e.to_string());
                if refresh_err.class == ErrorClass::Fatal {
                    return StepResult::Fail(refresh_err);
                }
            }
        }
        let window_close = svc.windows.closes_at(action, env.now());
        let input = RetryInput {
            policy: &policy,
            attempt,
            prev_delay,
            error: &err,
            now: env.now(),
            deadline: ctx.deadline.at(env.now()),
            window_close,
        };
        match svc.retrier.decide(&input, service, env.rng()) {
            RetryDecision::GiveUp(GiveUp::Budget) => {
                env.emit(
                    event(EventKind::RetryGaveUp)
                        .attempt(attempt)
                        .class(ErrorClass::Degraded)
                        .detail("retry budget spent"),
                );
                return StepResult::Skip(StepError::new(
                    FailureKind::BudgetExhausted,
                    format!("retry budget of `{}` spent", service.unwrap_or("local")),
                ));
            }
            RetryDecision::Retry(delay) => {
                env.emit(
                    event(EventKind::RetryScheduled)
                        .attempt(attempt)
                        .class(err.class)
                        .delay(delay),
                );
                tokio::time::sleep(delay).await;
                prev_delay = delay;
            }
            RetryDecision::GiveUp(reason) => {
                env.emit(
                    event(EventKind::RetryGaveUp)
                        .attempt(attempt)
                        .class(err.class)
                        .detail(reason.as_str()),
                );
                if reason == GiveUp::Window {
                    return StepResult::Defer(
                        svc.windows
                            .next_open(action, window_close.unwrap_or_else(|| env.now())),
                        Hold::Window,
                    );
                }
                // Retries are spent on a transient error: the service is down for this
                // run. Degrade (skip the step, continue the others).
                let detail = format!("{} after {attempt} attempt(s)", err.kind.label());
                return StepResult::Skip(
                    StepError::new(FailureKind::ServiceDown, detail)
                        .with_retry_after(err.retry_after),
                );
            }
        }
    }
}

/// Sleeps until the wall clock reaches `at` unless the runner shuts down first;
/// `false` when it did.
async fn wait_unless_halted<E: Env>(
    env: &E,
    at: DateTime<Utc>,
    halt: &watch::Receiver<bool>,
) -> bool {
    let mut halt = halt.clone();
    let halted = async move {
        if halt.wait_for(|h| *h).await.is_err() {
            // Nobody can halt this run any more: wait for the clock alone.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        () = halted => false,
        () = sleep_until_wall(env, at) => true,
    }
}

/// Sleeps until the wall clock reaches `at`, in bounded slices so a wall-clock jump
/// (suspend, NTP) is noticed within a minute.
pub async fn sleep_until_wall<E: Env>(env: &E, at: DateTime<Utc>) {
    const SLICE: Duration = Duration::from_secs(60);
    loop {
        let now = env.now();
        if now >= at {
            return;
        }
        let left = (at - now).to_std().unwrap_or_default();
        tokio::time::sleep(left.min(SLICE)).await;
    }
}
