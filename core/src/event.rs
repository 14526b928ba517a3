//! Structured events: one per state transition, attempt, retry decision and finding.
//!
//! Every event is a flat record so it maps one to one onto a JSON log line (production,
//! through `tracing`) and onto a line of the simulator's `trace.jsonl`. Events never carry
//! secrets: only names of credentials, never their values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::breaker::BreakerState;
use crate::job::RunId;
use crate::state_machine::TaskState;
use crate::taxonomy::ErrorClass;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The runner started (or restarted after a crash).
    RunnerStarted,
    /// The runner stopped on purpose (shutdown, or a fatal error without isolation).
    RunnerStopped,
    /// A task moved between states of the state machine.
    Transition,
    /// A run began (fresh or resumed from a checkpoint).
    RunStarted,
    /// A run finished; `outcome` says how.
    RunFinished,
    /// A due run was skipped (overlap, window closed, job stopped).
    RunSkipped,
    /// One attempt of a step began.
    Attempt,
    /// One attempt of a step ended in an error.
    AttemptFailed,
    /// A step succeeded.
    StepSucceeded,
    /// A step was skipped and the run continues degraded.
    StepSkipped,
    /// A retry was scheduled after `delay_ms`.
    RetryScheduled,
    /// The retry policy gave up (attempts, budget, deadline or window).
    RetryGaveUp,
    /// A run or retry waits for its time window to open.
    WindowWait,
    /// A step's progress was persisted.
    CheckpointSaved,
    /// A run resumed after its last completed step.
    CheckpointResumed,
    /// A completed step was not repeated on resume.
    StepReplayed,
    /// An access token was refreshed (`detail` says proactive or reactive).
    TokenRefreshed,
    /// A token refresh failed.
    TokenRefreshFailed,
    /// A circuit breaker changed state.
    BreakerTransition,
    /// A call was refused because the breaker is open.
    BreakerRejected,
    /// A service's gate now holds its calls until `detail`'s instant (a Retry-After,
    /// a quota reset, an open breaker).
    GateHeld,
    /// A step waits at its service's gate (or is deferred when the gate opens after
    /// the run's deadline).
    GateWait,
    /// The heartbeat monitor flagged a job, the memory or a service.
    HeartbeatFinding,
    /// An alert was raised for a human.
    Alert,
    /// A job stopped for good until a human fixes it.
    JobStopped,
    /// A job task panicked; the boundary caught it.
    JobPanicked,
    /// A command step's process group left by a previous runner was found at start
    /// (and stopped, or found gone); `detail` says which.
    ProcessReaped,
    /// The state database cannot be opened or read; the runner refuses to start.
    StateUnreadable,
    /// The runner woke from a sleep or stop, or its wall clock was stepped; `jump_ms`
    /// says how far the wall clock moved beyond what an awake runner would have seen.
    Wake,
}

impl EventKind {
    /// The snake_case name used in logs and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunnerStarted => "runner_started",
            Self::RunnerStopped => "runner_stopped",
            Self::Transition => "transition",
            Self::RunStarted => "run_started",
            Self::RunFinished => "run_finished",
            Self::RunSkipped => "run_skipped",
            Self::Attempt => "attempt",
            Self::AttemptFailed => "attempt_failed",
            Self::StepSucceeded => "step_succeeded",
            Self::StepSkipped => "step_skipped",
            Self::RetryScheduled => "retry_scheduled",
            Self::RetryGaveUp => "retry_gave_up",
            Self::WindowWait => "window_wait",
            Self::CheckpointSaved => "checkpoint_saved",
            Self::CheckpointResumed => "checkpoint_resumed",
            Self::StepReplayed => "step_replayed",
            Self::TokenRefreshed => "token_refreshed",
            Self::TokenRefreshFailed => "token_refresh_failed",
            Self::BreakerTransition => "breaker_transition",
            Self::BreakerRejected => "breaker_rejected",
            Self::GateHeld => "gate_held",
            Self::GateWait => "gate_wait",
            Self::HeartbeatFinding => "heartbeat_finding",
            Self::Alert => "alert",
            Self::JobStopped => "job_stopped",
            Self::JobPanicked => "job_panicked",
            Self::ProcessReaped => "process_reaped",
            Self::StateUnreadable => "state_unreadable",
            Self::Wake => "wake",
        }
    }
}

/// A state named by a transition event: a task's or a breaker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StateName {
    /// A job's task state.
    Task(TaskState),
    /// A circuit breaker's state.
    Breaker(BreakerState),
}

impl StateName {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task(s) => s.as_str(),
            Self::Breaker(s) => s.as_str(),
        }
    }
}

impl From<TaskState> for StateName {
    fn from(s: TaskState) -> Self {
        Self::Task(s)
    }
}

impl From<BreakerState> for StateName {
    fn from(s: BreakerState) -> Self {
        Self::Breaker(s)
    }
}

/// How a run ended, as events, status and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step completed.
    Succeeded,
    /// Some steps were skipped because their service was down; the rest completed.
    Degraded,
    /// A step waits for a window that opens after the run's deadline.
    Deferred,
    /// The run failed; a later run may resume it.
    Failed,
    /// The run failed in a way that needs a human; the job stops.
    Fatal,
    /// Shutdown stopped the run between steps; the next start resumes it.
    Interrupted,
}

impl Outcome {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Degraded => "degraded",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::Fatal => "fatal",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the run did what it could: succeeded, degraded or deferred by a window.
    pub fn is_ok(self) -> bool {
        matches!(self, Self::Succeeded | Self::Degraded | Self::Deferred)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a due run did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its first step's time window is closed.
    Window,
    /// The previous run of the job was still in progress.
    Overlap,
}

impl SkipReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Window => "window",
            Self::Overlap => "overlap",
        }
    }
}

/// One structured event. Optional fields are omitted from the JSON when absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Wall-clock time, stamped by [`crate::env::Env::emit`].
    pub at: DateTime<Utc>,
    /// What happened.
    pub event: EventKind,
    /// The job concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The run concerned (stable across a resume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The step concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt number, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The service (for breakers, calls and health findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The error class of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
    /// The delay chosen before the next attempt or run, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// State before a transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<StateName>,
    /// State after a transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<StateName>,
    /// How a run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why a due run did not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<SkipReason>,
    /// A short human-readable detail (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How far the wall clock jumped (a wake or a clock step), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jump_ms: Option<i64>,
}

impl Event {
    /// A new event of `kind`; the time is stamped when it is emitted.
    pub fn new(kind: EventKind) -> Self {
        Self {
            at: DateTime::<Utc>::UNIX_EPOCH,
            event: kind,
            job: None,
            run_id: None,
            step: None,
            attempt: None,
            service: None,
            class: None,
            delay_ms: None,
            from: None,
            to: None,
            outcome: None,
            reason: None,
            detail: None,
            jump_ms: None,
        }
    }

    /// Sets the wall clock's jump.
    pub fn jump(mut self, jump: chrono::Duration) -> Self {
        self.jump_ms = Some(jump.num_milliseconds());
        self
    }

    /// Sets the time.
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = at;
        self
    }

    /// Sets the job.
    pub fn job(mut self, job: impl Into<String>) -> Self {
        self.job = Some(job.into());
        self
    }

    /// Sets the run id.
    pub fn run_id(mut self, run_id: &RunId) -> Self {
        self.run_id = Some(run_id.clone());
        self
    }

    /// Sets the step.
    pub fn step(mut self, step: impl Into<String>) -> Self {
        self.step = Some(step.into());
        self
    }

    /// Sets the attempt number.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the service.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Sets the error class.
    pub fn class(mut self, class: ErrorClass) -> Self {
        self.class = Some(class);
        self
    }

    /// Sets the chosen delay.
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the from/to states of a transition.
    pub fn transition(mut self, from: impl Into<StateName>, to: impl Into<StateName>) -> Self {
        self.from = Some(from.into());
        self.to = Some(to.into());
        self
    }

    /// Sets the outcome of a run.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Sets why a due run did not start.
    pub fn reason(mut self, reason: SkipReason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// One JSON line, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        // Serialising a struct of strings, numbers and a timestamp cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An event sink that logs through `tracing` (the production sink).
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl crate::env::EventSink for TracingSink {
    fn emit(&self, e: Event) {
        let class = e.class.map(ErrorClass::as_str);
        let at = e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        macro_rules! log_at {
            ($level:expr) => {
                tracing::event!(
                    target: "steadfast",
                    $level,
                    at = %at,
                    event = e.event.as_str(),
                    job = e.job.as_deref(),
                    run_id = e.run_id.as_ref().map(tracing::field::display),
                    step = e.step.as_deref(),
                    attempt = e.attempt,
                    service = e.service.as_deref(),
                    class = class,
                    delay_ms = e.delay_ms,
                    from = e.from.map(StateName::as_str),
                    to = e.to.map(StateName::as_str),
                    outcome = e.outcome.map(Outcome::as_str),
                    reason = e.reason.map(SkipReason::as_str),
                    detail = e.detail.as_deref(),
                )
            };
        }
        match e.event {
            EventKind::Alert
            | EventKind::JobStopped
            | EventKind::JobPanicked
            | EventKind::StateUnreadable => {
                log_at!(tracing::Level::ERROR)
            }
            EventKind::AttemptFailed
            | EventKind::RetryGaveUp
            | EventKind::TokenRefreshFailed
            | EventKind::BreakerRejected
            | EventKind::HeartbeatFinding
            | EventKind::ProcessReaped
            | EventKind::StepSkipped => log_at!(tracing::Level::WARN),
            _ => log_at!(tracing::Level::INFO),
        }
    }
}

/// How many events a [`MemorySink`] keeps by default.
pub const DEFAULT_MEMORY_SINK_LIMIT: usize = 1_000_000;

/// An event sink that keeps events in memory, bounded: the tests' sink and the
/// simulator's trace (one type, so both count what they drop the same way).
///
/// Cheap to clone; clones share the events. Once `limit` events are kept, later ones
/// are dropped and counted in [`MemorySink::dropped`].
#[derive(Debug, Clone)]
pub struct MemorySink {
    inner: Arc<MemorySinkInner>,
}

#[derive(Debug)]
struct MemorySinkInner {
    events: Mutex<Vec<Event>>,
    limit: usize,
    dropped: AtomicU64,
}

impl MemorySink {
    /// Keeps at most `limit` events; later ones are dropped and counted.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            inner: Arc::new(MemorySinkInner {
                events: Mutex::new(Vec::new()),
                limit,
                dropped: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.inner.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lends the events so far to `f` without copying them (emitting inside `f` would
    /// deadlock: it is for readers).
    pub fn with_events<R>(&self, f: impl FnOnce(&[Event]) -> R) -> R {
        f(&self.lock())
    }

    /// A copy of the events so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// A copy of the events from index `start` on (for incremental readers).
    pub fn since(&self, start: usize) -> Vec<Event> {
        self.lock()
            .get(start..)
            .map(<[Event]>::to_vec)
            .unwrap_or_default()
    }

    /// Shows `visit` the events from index `start` on without copying them; returns the
    /// index after the last one (the next call's `start`).
    pub fn visit_since(&self, start: usize, mut visit: impl FnMut(&Event)) -> usize {
        let events = self.lock();
        for e in events.get(start..).unwrap_or_default() {
            visit(e);
        }
        events.len()
    }

    /// Takes the events so far, leaving the sink empty (indices start again at 0; the
    /// dropped count is kept).
    pub fn drain(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock())
    }

    /// Events kept so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped because the sink was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::SeqCst)
    }

    /// The events as JSON lines (the simulator's `trace.jsonl`), each ending in a newline.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in self.lock().iter() {
            out.push_str(&e.to_json_line());
            out.push('\n');
        }
        out
    }

    /// SHA-256 of [`Self::to_jsonl`], hex: equal digests mean identical runs.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(self.to_jsonl().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Default for MemorySink {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MEMORY_SINK_LIMIT)
    }
}

impl crate::env::EventSink for MemorySink {
    fn emit(&self, event: Event) {
        let mut events = self.lock();
        if events.len() < self.inner.limit {
            events.push(event);
        } else {
            self.inner.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::EventSink as _;

    #[test]
    fn a_full_sink_counts_what_it_drops() {
        let sink = MemorySink::with_limit(2);
        for _ in 0..5 {
            sink.emit(Event::new(EventKind::Attempt));
        }
        assert_eq!((sink.len(), sink.dropped()), (2, 3));
        let drained = sink.drain();
        assert_eq!((drained.len(), sink.len(), sink.dropped()), (2, 0, 3));
    }

    #[test]
    fn clones_share_the_events_and_readers_resume_where_they_stopped() {
        let sink = MemorySink::default();
        let clone = sink.clone();
        clone.emit(Event::new(EventKind::RunStarted).job("a"));
        let mut seen = Vec::new();
        let next = sink.visit_since(0, |e| seen.push(e.event));
        clone.emit(Event::new(EventKind::RunFinished).job("a"));
        let next = sink.visit_since(next, |e| seen.push(e.event));
        assert_eq!(next, 2);
        assert_eq!(seen, [EventKind::RunStarted, EventKind::RunFinished]);
        assert_eq!(sink.since(1).len(), 1);
        assert_eq!(sink.to_jsonl().lines().count(), 2);
        assert_eq!(sink.digest().len(), 64);
        assert_ne!(sink.digest(), MemorySink::default().digest());
    }
}
