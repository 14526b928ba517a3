//! The task state machine: `idle -> running -> success | failure -> cooldown -> idle`.
//!
//! States are types, so an illegal transition (say `idle -> success`) does not compile:
//! each transition consumes the task in one state and returns it in the next, emitting
//! one `transition` event. `degraded` is a success variant. [`TaskState`] is the
//! runtime view of the same states, for status reports.

use std::marker::PhantomData;

use crate::env::Env;
use crate::event::{Event, EventKind};
use crate::job::RunId;

/// The runtime view of a task's state, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its next due time.
    Idle,
    /// A run is in progress.
    Running,
    /// The last run succeeded (possibly degraded).
    Success,
    /// The last run failed.
    Failure,
    /// Resting after a run before it may be scheduled again.
    Cooldown,
    /// Stopped for good by a fatal error; needs a human.
    Stopped,
}

impl TaskState {
    /// The snake_case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Cooldown => "cooldown",
            Self::Stopped => "stopped",
        }
    }
}

/// Marker: waiting.
#[derive(Debug)]
pub struct Idle;
/// Marker: running.
#[derive(Debug)]
pub struct Running;
/// Marker: succeeded; `degraded` when some step was skipped.
#[derive(Debug)]
pub struct Success {
    /// Some step was skipped because its service was down.
    pub degraded: bool,
}
/// Marker: failed.
#[derive(Debug)]
pub struct Failure;
/// Marker: cooling down.
#[derive(Debug)]
pub struct Cooldown;

/// A job's task in state `S`. Only the transitions defined below exist.
#[derive(Debug)]
pub struct Task<E: Env, S> {
    env: E,
    job: String,
    run_id: Option<RunId>,
    state: S,
    _marker: PhantomData<S>,
}

impl<E: Env> Task<E, Idle> {
    /// A new task, idle.
    pub fn new(env: E, job: impl Into<String>) -> Self {
        Self {
            env,
            job: job.into(),
            run_id: None,
            state: Idle,
            _marker: PhantomData,
        }
    }

    /// `idle -> running` for run `run_id`.
    pub fn start(self, run_id: RunId) -> Task<E, Running> {
        let mut next = self.move_to(Running, TaskState::Idle, TaskState::Running, None);
        next.run_id = Some(run_id);
        next.emit_transition(TaskState::Idle, TaskState::Running, None);
        next
    }

    /// `idle -> stopped`: a fatal error outside a run (e.g. bad config found at start).
    pub fn stop(self, reason: &str) -> TaskState {
        self.emit_transition(TaskState::Idle, TaskState::Stopped, Some(reason));
        TaskState::Stopped
    }
}

impl<E: Env> Task<E, Running> {
    /// `running -> success` (degraded when a step was skipped).
    pub fn succeed(self, degraded: bool) -> Task<E, Success> {
        let detail = degraded.then_some("degraded");
        self.move_to(
            Success { degraded },
            TaskState::Running,
            TaskState::Success,
            detail,
        )
    }

    /// `running -> success` for a run that stopped at a closed time window with its
    /// progress saved: it did all it was allowed to, and resumes when the window opens.
    pub fn defer(self) -> Task<E, Success> {
        self.move_to(
            Success { degraded: false },
            TaskState::Running,
            TaskState::Success,
            Some("deferred to its time window"),
        )
    }

    /// `running -> failure`.
    pub fn fail(self, reason: &str) -> Task<E, Failure> {
        self.move_to(
            Failure,
            TaskState::Running,
            TaskState::Failure,
            Some(reason),
        )
    }

    /// The run id of this run (set by `start`, the only way into `Running`).
    pub fn run_id(&self) -> Option<&RunId> {
        self.run_id.as_ref()
    }
}

impl<E: Env> Task<E, Success> {
    /// Whether the run was degraded.
    pub fn degraded(&self) -> bool {
        self.state.degraded
    }

    /// `success -> cooldown`.
    pub fn cool_down(self) -> Task<E, Cooldown> {
        self.move_to(Cooldown, TaskState::Success, TaskState::Cooldown, None)
    }
}

impl<E: Env> Task<E, Failure> {
    /// `failure -> cooldown`.
    pub fn cool_down(self) -> Task<E, Cooldown> {
        self.move_to(Cooldown, TaskState::Failure, TaskState::Cooldown, None)
    }

    /// `failure -> stopped`: the failure was fatal; the job needs a human.
    pub fn stop(self, reason: &str) -> TaskState {
        self.emit_transition(TaskState::Failure, TaskState::Stopped, Some(reason));
        TaskState::Stopped
    }
}

impl<E: Env> Task<E, Cooldown> {
    /// `cooldown -> idle`.
    pub fn rest(self) -> Task<E, Idle> {
        let mut idle = self.move_to(Idle, TaskState::Cooldown, TaskState::Idle, None);
        idle.run_id = None;
        idle
    }
}

impl<E: Env, S> Task<E, S> {
    /// The job this task belongs to.
    pub fn job(&self) -> &str {
        &self.job
    }

    fn move_to<T>(
        self,
        state: T,
        from: TaskState,
        to: TaskState,
        detail: Option<&str>,
    ) -> Task<E, T> {
        let next = Task {
            env: self.env,
            job: self.job,
            run_id: self.run_id,
            state,
            _marker: PhantomData,
        };
        // `start` emits after the run id is set.
        if to != TaskState::Running {
            next.emit_transition(from, to, detail);
        }
        next
    }

    fn emit_transition(&self, from: TaskState, to: TaskState, detail: Option<&str>) {
        let mut event = Event::new(EventKind::Transition)
            .job(self.job.clone())
            .transition(from, to);
        if let Some(run_id) = &self.run_id {
            event = event.run_id(run_id);
        }
        if let Some(detail) = detail {
            event = event.detail(detail);
        }
        self.env.emit(event);
    }
}
