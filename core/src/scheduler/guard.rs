//! A run's error boundary: its own task, with a hard deadline.
//!
//! The deadline is a monotonic budget (with the wall clock it would be spent by a
//! sleep, and a healthy run given up on wake); the naive profile keeps a wall instant.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::JobConfig;
use crate::env::Env;
use crate::event::{Event, EventKind};
use crate::job::{RunContext, RunDeadline, RunId, RunOutcome, Services, execute};
use crate::taxonomy::{ErrorClass, FailureKind, StepError};
use crate::wake::ClockMode;

/// How long past its deadline a run may take to wind down before it is cancelled.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// Runs `run` of `job` inside its own task (the error boundary) with a hard deadline.
///
/// A panic is caught here and becomes a fatal outcome for this job only. A run that
/// outlives its deadline (a step stuck in a call that ignores its timeout) is
/// cancelled; the journal keeps the steps it finished.
pub(crate) async fn run_guarded<E: Env>(
    svc: &Arc<Services<E>>,
    job: &JobConfig,
    run: RunId,
    halt: watch::Receiver<bool>,
) -> RunOutcome {
    let env = svc.env.clone();
    let deadline = match svc.clock {
        ClockMode::Wall => RunDeadline::Budget(tokio::time::Instant::now() + job.deadline),
        ClockMode::Monotonic => RunDeadline::Wall(
            env.now() + chrono::Duration::from_std(job.deadline).unwrap_or_default(),
        ),
    };
    let svc2 = svc.clone();
    let job2 = job.clone();
    let handle = tokio::spawn(async move {
        let ctx = RunContext {
            job: &job2,
            run,
            deadline,
            halt,
        };
        execute(&svc2, &ctx).await
    });
    let abort = handle.abort_handle();
    // The run dies with its job's task (aborted at the end of shutdown's grace, or by a
    // crash in tests): a run must never go on unseen behind a runner that has gone.
    let _run_dies_with_us = AbortOnDrop(abort.clone());
    match tokio::time::timeout(job.deadline + DEADLINE_GRACE, handle).await {
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

/// Aborts a task when dropped (a finished task ignores it).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
