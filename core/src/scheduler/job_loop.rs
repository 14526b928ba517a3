//! One job's task: recovery at start, then every slot in turn, each journaled.
//!
//! At start the job accounts for the time the runner was not running: it resumes its
//! interrupted runs (same run ids), then lists the slots that passed since the last one
//! the journal knows (or since the job was first registered) and runs or records them
//! missed by its catch-up policy. Then it waits for each next slot.
//!
//! At each slot: a closed window on the first step records the slot missed (by design);
//! an open run of the job (a failed or deferred one that can still finish) is resumed
//! first, then the slot's own run starts; only if the old run is still open after its
//! turn is the slot recorded missed, for what held it (`overlap`, `window`, `gate`), as
//! the same cause would hold the slot's own work. How a run ended is journaled in one
//! transaction with the job's heartbeat and streak. Slots that passed while a run was in
//! progress go through the overlap policy (a slot the run ended less than two minutes
//! after is late, not overlapped: it runs now).
//!
//! A sleep is a restart that kept its process: a task that wakes late past its slot,
//! or finds after a run that the wall clock ran on while monotonic time did not, sends
//! the slots that passed through the same catch-up policy as a restart (missed ones
//! journaled `asleep`). A backward step only makes the wait longer: the cursor never
//! goes back, and the journal refuses to start a settled slot again. The naive profile
//! ([`ClockMode::Monotonic`]) waits on the monotonic clock instead and, after a sleep,
//! runs the slots it slept through back to back; after a backward step its monotonic
//! count runs a slot every interval while the wall clock re-lives the hour it ran.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use super::alert_gate::AlertGate;
use super::catch_up::{self, MissedRange};
use super::guard::run_guarded;
use super::{Stop, wait_true};
use crate::alert::{Alert, AlertKind};
use crate::checkpoint::Resume;
use crate::config::{CatchUp, JobConfig, Overlap};
use crate::db::journal::StartError;
use crate::db::{DbError, MissReason, SlotRecord};
use crate::env::{Env, MemoryProbe, Rng};
use crate::event::{Event, EventKind, Outcome, SkipReason};
use crate::job::attempt::sweep_progress;
use crate::job::{Hold, RunId, RunOutcome, Services, sleep_until_wall};
use crate::job_status::{JobStatus, StatusBoard};
use crate::schedule::Schedule;
use crate::state_machine::{Idle, Task, TaskState};
use crate::taxonomy::ErrorClass;
use crate::wake::{ClockMode, Drift};

/// An open run (failed or deferred) is resumed by later slots at most this many times
/// in all before it is settled as failed and a fresh run takes the next slot.
const MAX_ATTEMPTS: u32 = 5;

/// A task that wakes this long after its slot was not running in between (sleeping
/// waits are sliced into minutes, so an awake runner is never this late).
const LATE: Duration = Duration::from_secs(120);
/// A task this late that finds the slot after its own already passed overslept too
/// (a short job stopped for seconds): its slots go to the catch-up policy as well.
const MIN_LATE: Duration = Duration::from_secs(5);

/// Why the loop ends.
#[derive(Debug)]
pub(super) struct Ended;

/// One job's task.
pub(super) struct JobLoop<E: Env> {
    pub(super) svc: Arc<Services<E>>,
    /// Pattern 3's memory watch: resident memory over this asks for a fresh process.
    pub(super) memory_limit: Option<u64>,
    pub(super) status: Arc<StatusBoard>,
    pub(super) alerts: Arc<AlertGate<E>>,
    pub(super) stop: mpsc::Sender<Stop>,
    pub(super) halt: watch::Receiver<bool>,
    pub(super) job: JobConfig,
    pub(super) schedule: Schedule,
}

impl<E: Env> JobLoop<E> {
    pub(super) async fn run(mut self) {
        let env = self.svc.env.clone();
        let task = Task::new(env.clone(), self.job.name.clone());
        let Ok((mut task, mut cursor)) = self.recover(task).await else {
            return;
        };
        // The naive profile's last slot start: its start time and the monotonic instant
        // it started at.
        let mut last_start: Option<(DateTime<Utc>, tokio::time::Instant)> = None;
        loop {
            let due = self.schedule.next_after(cursor);
            let jitter_ms = env
                .rng()
                .between(0, self.job.start_jitter.as_millis() as u64);
            let start_at = due + chrono::Duration::milliseconds(jitter_ms as i64);
            self.update(|s| {
                s.state = TaskState::Idle;
                s.next_run = Some(start_at);
            });
            let naive = self.svc.clock == ClockMode::Monotonic;
            if naive {
                // The time to the slot is read from the wall clock once and waited on
                // the monotonic clock, which a sleep stops; and the schedule is kept in
                // monotonic time too: the slot is due one interval after the last one
                // started, as that clock counts. Whichever says sooner wins. Without a
                // backward step the wall's reading is never the later one; after one,
                // the monotonic count runs the hour the wall clock re-lives again.
                let by_wall = (start_at - env.now()).to_std().unwrap_or_default();
                let left = last_start.map_or(by_wall, |(prev, mono)| {
                    let by_mono = (start_at - prev)
                        .to_std()
                        .unwrap_or_default()
                        .saturating_sub(mono.elapsed());
                    by_wall.min(by_mono)
                });
                tokio::select! {
                    biased;
                    _ = wait_true(&mut self.halt) => return,
                    _ = tokio::time::sleep(left) => {}
                }
                last_start = Some((start_at, tokio::time::Instant::now()));
            } else {
                tokio::select! {
                    biased;
                    _ = wait_true(&mut self.halt) => return,
                    _ = sleep_until_wall(&env, start_at) => {}
                }
                let now = env.now();
                let late = now - start_at;
                let overslept = late > to_chrono(LATE)
                    || (late > to_chrono(MIN_LATE) && self.schedule.next_after(due) <= now);
                if overslept {
                    // The wall clock ran on while this task did not (the machine slept,
                    // the process was stopped, the clock stepped): the slots that passed
                    // go through the catch-up policy, as after a restart, never in a burst.
                    let Ok((next, through)) = self.woke(task, cursor, late).await else {
                        return;
                    };
                    task = next;
                    cursor = through;
                    continue;
                }
            }
            cursor = due;
            let mut drift = Drift::start(env.now());
            let Ok(next) = self.slot(task, due).await else {
                return;
            };
            let jump = drift.observe(env.now(), Duration::ZERO);
            let ended = if naive {
                // Slots that passed during the run as the monotonic clock sees them
                // (the run began at its start time and took what that clock measured):
                // a sleep hides its slots, which then run back to back.
                let seen = start_at + to_chrono(jump.mono);
                self.overlapped(next, cursor, seen).await
            } else if jump.unseen() > to_chrono(LATE) {
                // The machine slept during the run: what passed is downtime, not overlap.
                self.woke(next, cursor, jump.unseen()).await
            } else {
                self.overlapped(next, cursor, env.now()).await
            };
            let Ok((next, through)) = ended else {
                return;
            };
            task = next;
            cursor = through;
        }
    }

    /// Accounts for the time the runner was not running; returns the idle task and the
    /// last slot accounted for.
    async fn recover(
        &mut self,
        mut task: Task<E, Idle>,
    ) -> Result<(Task<E, Idle>, DateTime<Utc>), Ended> {
        let env = self.svc.env.clone();
        let db = self.svc.db.clone();
        let name = self.job.name.clone();
        let record = match db.register_job(&name, env.now()).await {
            Ok(r) => r,
            Err(e) => return Err(self.store_broken(&e, "cannot register the job").await),
        };
        let stopped = record.stopped_reason.is_some();
        if stopped && let Err(e) = db.clear_stop(&name).await {
            self.finding(&e);
        }
        // Runs a crash, kill or shutdown cut off: resume them first, in order.
        for open in db.unfinished(&name).unwrap_or_default() {
            task = self.open_run(task, &open).await?.0;
        }
        let after = db
            .last_slot(&name)
            .ok()
            .flatten()
            .map_or(record.registered_at, |last| last.max(record.registered_at));
        let now = env.now();
        let plan = catch_up::plan(
            &self.schedule,
            after,
            now,
            self.job.catch_up,
            self.job.catch_up_window,
        );
        let reason = if stopped {
            MissReason::Stopped
        } else {
            MissReason::Downtime
        };
        self.record_missed(&plan.missed, reason).await;
        self.tell_missed(&plan.missed, reason, plan.run.len()).await;
        if !plan.run.is_empty() {
            env.emit(Event::new(EventKind::RunSkipped).job(&name).detail(format!(
                "{} slot(s) passed while the runner was down; catching up {} ({})",
                plan.run.len() as u64 + plan.missed.iter().map(|r| r.count).sum::<u64>(),
                plan.run.len(),
                self.job.catch_up.as_str()
            )));
        }
        for due in &plan.run {
            task = self.slot(task, *due).await?;
        }
        Ok((task, plan.through.unwrap_or(after).max(after)))
    }

    /// After the task woke `late` past its slot: the slots in `(cursor, now]` are run
    /// or recorded missed by the catch-up policy. Returns the last slot accounted for.
    async fn woke(
        &mut self,
        mut task: Task<E, Idle>,
        cursor: DateTime<Utc>,
        late: chrono::Duration,
    ) -> Result<(Task<E, Idle>, DateTime<Utc>), Ended> {
        let env = self.svc.env.clone();
        let now = env.now();
        let plan = catch_up::plan(
            &self.schedule,
            cursor,
            now,
            self.job.catch_up,
            self.job.catch_up_window,
        );
        if plan.through.is_none() {
            return Ok((task, cursor));
        }
        let passed = plan.run.len() as u64 + plan.missed.iter().map(|r| r.count).sum::<u64>();
        env.emit(
            Event::new(EventKind::RunSkipped)
                .job(&self.job.name)
                .detail(format!(
                    "woke {}s after a slot: {passed} slot(s) passed; catching up {} ({})",
                    late.num_seconds(),
                    plan.run.len(),
                    self.job.catch_up.as_str()
                )),
        );
        self.record_missed(&plan.missed, MissReason::Asleep).await;
        self.tell_missed(&plan.missed, MissReason::Asleep, plan.run.len())
            .await;
        for due in &plan.run {
            task = self.slot(task, *due).await?;
        }
        Ok((task, plan.through.unwrap_or(cursor).max(cursor)))
    }

    /// One due slot: skipped by its window, absorbed by an open run, or run.
    async fn slot(
        &mut self,
        task: Task<E, Idle>,
        due: DateTime<Utc>,
    ) -> Result<Task<E, Idle>, Ended> {
        let env = self.svc.env.clone();
        let name = self.job.name.clone();
        if *self.halt.borrow() {
            // Shutting down: the slot is left to the next start's catch-up.
            return Err(Ended);
        }
        if self.first_step_closed(env.now()) {
            // Nothing of this job may run now: the slot is skipped by design, and the
            // job is alive and behaving as configured, which counts as a heartbeat.
            env.emit(
                Event::new(EventKind::RunSkipped)
                    .job(&name)
                    .run_id(&RunId::new(&name, due))
                    .reason(SkipReason::Window)
                    .detail("outside the time window of its first step"),
            );
            self.record_missed(&[single(due)], MissReason::Window).await;
            return Ok(task);
        }
        // Watching memory is part of the heartbeat pattern; over the fatal line the
        // runner asks its supervisor for a fresh process rather than wait for OOM.
        if self
            .memory_limit
            .is_some_and(|limit| env.memory().resident_bytes() > limit)
        {
            let reason = "memory over the fatal threshold".to_string();
            self.alert(AlertKind::Memory, &reason).await;
            let _ = self.stop.send(Stop::Memory).await;
            return Err(Ended);
        }
        let open = self.svc.db.unfinished(&name).unwrap_or_default();
        // Only a run whose last attempt ended before this slot was due: one just tried
        // (at start, say) is not tried again at once for a slot that is already past.
        let Some(open) = open
            .into_iter()
            .find(|o| o.finished_at.is_none_or(|tried| tried < due))
        else {
            return Ok(self.execute(task, RunId::new(&name, due)).await?.0);
        };
        // The job's previous run is still open (failed, or deferred to a window or a
        // service's gate): it is resumed first, then this slot runs its own run. When
        // the old run is still open after its turn, whatever held it holds this slot's
        // work too: the slot is recorded missed with that reason, and the next slot
        // tries the old run again.
        let (task, left) = self.open_run(task, &open).await?;
        let Left::Open(reason) = left else {
            if *self.halt.borrow() {
                // Shutting down: the slot is left to the next start's catch-up.
                return Err(Ended);
            }
            return Ok(self.execute(task, RunId::new(&name, due)).await?.0);
        };
        let skip = match reason {
            MissReason::Window => SkipReason::Window,
            _ => SkipReason::Overlap,
        };
        env.emit(
            Event::new(EventKind::RunSkipped)
                .job(&name)
                .run_id(&RunId::new(&name, due))
                .reason(skip)
                .detail(format!(
                    "run {} is still open ({reason}); the slot goes to it",
                    open.run_id()
                )),
        );
        self.record_missed(&[single(due)], reason).await;
        Ok(task)
    }

    /// An open run found in the journal: resumed if it can still finish, else settled.
    async fn open_run(
        &mut self,
        task: Task<E, Idle>,
        open: &SlotRecord,
    ) -> Result<(Task<E, Idle>, Left), Ended> {
        let env = self.svc.env.clone();
        let run = open.run_id();
        let too_old = env.now() - open.due
            > chrono::Duration::from_std(self.job.catch_up_window).unwrap_or(chrono::Duration::MAX);
        // Without checkpoints the run starts over from its first step (the naive
        // habit: whatever it had sent goes out again, without idempotency keys).
        if (open.attempt >= MAX_ATTEMPTS && open.outcome != Some(Outcome::Deferred)) || too_old {
            let why = format!(
                "given up after {} attempt(s){}",
                open.attempt,
                if too_old {
                    ", older than the catch-up window"
                } else {
                    ""
                }
            );
            match self.svc.db.close_run(&run, &why, env.now()).await {
                Ok(()) => sweep_progress(&self.svc, &self.job, &run).await,
                Err(e) => {
                    self.finding(&e);
                    return Ok((task, Left::Open(MissReason::Overlap)));
                }
            }
            return Ok((task, Left::Closed));
        }
        self.execute(task, run).await
    }

    /// Starts (or resumes) `run`, runs it through the state machine and journals how
    /// it ended; says whether it is still open.
    async fn execute(
        &mut self,
        task: Task<E, Idle>,
        run: RunId,
    ) -> Result<(Task<E, Idle>, Left), Ended> {
        let env = self.svc.env.clone();
        let db = self.svc.db.clone();
        let name = self.job.name.clone();
        let attempt = match db.start_run(&run, env.now()).await {
            Ok(a) => a,
            Err(e @ StartError::Settled { .. }) => {
                // The journal already says how this slot ended: never run it again.
                env.emit(
                    Event::new(EventKind::RunSkipped)
                        .job(&name)
                        .run_id(&run)
                        .detail(e.to_string()),
                );
                return Ok((task, Left::Closed));
            }
            Err(StartError::Db(e)) => {
                return Err(self.store_broken(&e, "cannot start a run").await);
            }
        };
        let running = task.start(run.clone());
        self.update(|s| s.state = TaskState::Running);
        let mut started = Event::new(EventKind::RunStarted)
            .job(&name)
            .run_id(&run)
            .attempt(attempt);
        if attempt > 1 {
            started = started.detail("resumed");
        }
        env.emit(started);
        let outcome = run_guarded(&self.svc, &self.job, run.clone(), self.halt.clone()).await;
        let mut event = Event::new(EventKind::RunFinished)
            .job(&name)
            .run_id(&run)
            .attempt(attempt)
            .outcome(outcome.kind());
        if let RunOutcome::Failed(e) | RunOutcome::Fatal(e) = &outcome {
            event = event.class(e.class).detail(e.detail.clone());
        }
        env.emit(event);
        let now = env.now();
        let resumable = self.svc.resume == Resume::FromLastStep && attempt < MAX_ATTEMPTS;
        let journaled = match &outcome {
            RunOutcome::Interrupted => Ok(None),
            RunOutcome::Deferred { hold, .. } => db.note_deferral(&run, *hold, now).await.map(Some),
            RunOutcome::Failed(e) if resumable => db
                .note_attempt(&run, Outcome::Failed, Some(&e.detail), now)
                .await
                .map(Some),
            RunOutcome::Failed(e) | RunOutcome::Fatal(e) => db
                .finish_run(&run, outcome.kind(), Some(&e.detail), now)
                .await
                .map(Some),
            _ => db
                .finish_run(&run, outcome.kind(), None, now)
                .await
                .map(Some),
        };
        let left = match &outcome {
            RunOutcome::Interrupted => Left::Open(MissReason::Overlap),
            RunOutcome::Deferred { hold, .. } => Left::Open(match hold {
                Hold::Window => MissReason::Window,
                Hold::Gate => MissReason::Gate,
            }),
            RunOutcome::Failed(_) if resumable => Left::Open(MissReason::Overlap),
            _ => Left::Closed,
        };
        let finished = left == Left::Closed;
        if finished && journaled.is_ok() {
            // The run will never be resumed: its steps' progress files go with it.
            sweep_progress(&self.svc, &self.job, &run).await;
        }
        let streak = match journaled {
            Ok(streak) => streak,
            Err(e) => {
                // The run happened but its end is not journaled: the slot stays open and
                // the next start resumes it (its steps are done, so nothing repeats).
                let failed = running.fail(&e.to_string());
                return match e.kind().class() {
                    ErrorClass::Fatal => {
                        let detail = format!("cannot journal the end of run {run}: {e}");
                        self.fatal(failed.stop(&detail), &detail).await;
                        Err(Ended)
                    }
                    _ => {
                        self.finding(&e);
                        Ok((failed.cool_down().rest(), Left::Open(MissReason::Overlap)))
                    }
                };
            }
        };
        self.update(|s| {
            s.last_outcome = Some(outcome.kind());
            if let Some(n) = streak {
                s.consecutive_failures = n;
            }
            if outcome.kind().is_ok() && left != Left::Open(MissReason::Gate) {
                s.last_success = Some(now);
            }
        });
        let cooldown = match outcome {
            RunOutcome::Succeeded => running.succeed(false).cool_down(),
            RunOutcome::Degraded { .. } => running.succeed(true).cool_down(),
            RunOutcome::Deferred {
                hold: Hold::Window, ..
            } => running.defer().cool_down(),
            // Held at a service's gate: nothing was produced, whatever was done before.
            RunOutcome::Deferred {
                ref step, until, ..
            } => running
                .fail(&format!(
                    "step `{step}` deferred: its service takes no calls before {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ))
                .cool_down(),
            RunOutcome::Failed(ref e) => running.fail(&e.detail).cool_down(),
            RunOutcome::Interrupted => {
                running.fail("interrupted by shutdown; resumed at the next start");
                return Err(Ended);
            }
            RunOutcome::Fatal(ref e) => {
                let failed = running.fail(&e.detail);
                self.fatal(failed.stop(&e.detail), &e.detail).await;
                return Err(Ended);
            }
        };
        Ok((cooldown.rest(), left))
    }

    /// Slots that passed (until `now`) while the run of `due` was in progress: recorded missed
    /// (`overlap = "skip"`), or the latest of them run now (`"queue"`). Returns the
    /// last slot accounted for.
    async fn overlapped(
        &mut self,
        task: Task<E, Idle>,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(Task<E, Idle>, DateTime<Utc>), Ended> {
        let window = self.job.catch_up_window;
        let mut plan = match self.job.overlap {
            Overlap::Queue => catch_up::plan(&self.schedule, due, now, CatchUp::Latest, window),
            Overlap::Skip => {
                // A slot the run ended less than `LATE` after is late, not overlapped
                // (a resumed run and the slot's own one ran back to back, say): it is
                // started now, as Kubernetes starts a skipped schedule that is still
                // inside its starting deadline. Older ones are skipped.
                let skipped = catch_up::plan(
                    &self.schedule,
                    due,
                    now - to_chrono(LATE),
                    CatchUp::None,
                    window,
                );
                let from = skipped.through.unwrap_or(due).max(due);
                let late = catch_up::plan(&self.schedule, from, now, CatchUp::Latest, window);
                catch_up::Plan {
                    run: late.run,
                    missed: skipped.missed.into_iter().chain(late.missed).collect(),
                    through: late.through.or(skipped.through),
                }
            }
        };
        plan.missed.retain(|r| r.count > 0);
        if plan.through.is_none() {
            return Ok((task, due));
        }
        let skipped: u64 = plan.missed.iter().map(|r| r.count).sum();
        if skipped > 0 {
            self.svc.env.emit(
                Event::new(EventKind::RunSkipped)
                    .job(&self.job.name)
                    .reason(SkipReason::Overlap)
                    .detail(format!(
                        "{skipped} slot(s) passed while the run was in progress"
                    )),
            );
        }
        self.record_missed(&plan.missed, MissReason::Overlap).await;
        let mut task = task;
        for queued in &plan.run {
            task = self.slot(task, *queued).await?;
        }
        Ok((task, plan.through.unwrap_or(due)))
    }

    async fn record_missed(&self, ranges: &[MissedRange], reason: MissReason) {
        let env = &self.svc.env;
        for r in ranges {
            if let Err(e) = self
                .svc
                .db
                .record_missed(&self.job.name, r.first, r.last, r.count, reason, env.now())
                .await
            {
                self.finding(&e);
            }
        }
    }

    /// Says that the catch-up policy left slots unrun (`alert_missed`): one alert per
    /// job per restart or wake, so a slot is never missed in silence.
    async fn tell_missed(&self, missed: &[MissedRange], reason: MissReason, ran: usize) {
        let count: u64 = missed.iter().map(|r| r.count).sum();
        let (Some(first), Some(last)) = (
            missed.iter().map(|r| r.first).min(),
            missed.iter().map(|r| r.last).max(),
        ) else {
            return;
        };
        if count == 0 || !self.job.alert_missed {
            return;
        }
        let why = match reason {
            MissReason::Asleep => "while the machine slept or the process was stopped",
            MissReason::Stopped => "while the job was stopped by a fatal error",
            _ => "while the runner was down",
        };
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let message = format!(
            "{count} slot(s) from {} to {} missed {why}; catch_up = {} ran {ran}; journaled missed `{reason}`",
            at(first),
            at(last),
            self.job.catch_up.as_str()
        );
        self.alert(AlertKind::SlotsMissed, &message).await;
    }

    fn first_step_closed(&self, at: DateTime<Utc>) -> bool {
        let action = self.job.steps.first().and_then(|s| s.action.as_deref());
        !self.svc.windows.is_open(action, at)
    }

    /// A store failure the job can live with: reported, never silent.
    fn finding(&self, e: &DbError) {
        self.svc.env.emit(
            Event::new(EventKind::HeartbeatFinding)
                .job(&self.job.name)
                .class(ErrorClass::Degraded)
                .detail(e.to_string()),
        );
    }

    /// A store failure the job cannot go on with: it stops, loudly.
    async fn store_broken(&self, e: &DbError, what: &str) -> Ended {
        let reason = format!("{what}: {e}");
        self.fatal(TaskState::Stopped, &reason).await;
        Ended
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
        self.alert(AlertKind::Fatal, reason).await;
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

    async fn alert(&self, kind: AlertKind, message: &str) {
        let env = &self.svc.env;
        env.emit(
            Event::new(EventKind::Alert)
                .job(&self.job.name)
                .detail(message.to_string()),
        );
        let alert = Alert {
            at: env.now(),
            kind,
            job: Some(self.job.name.clone()),
            service: None,
            message: message.to_string(),
        };
        self.alerts.send(env, alert).await;
    }

    fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        self.status.update(&self.job.name, f);
    }
}

/// Whether a run is still open after its turn, and what a slot it held is missed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Finished, failed for good, or settled: the journal will not start it again.
    Closed,
    /// Still open (failed and resumable, deferred, interrupted, or its end not
    /// journaled); a slot that went to it is missed for this reason.
    Open(MissReason),
}

/// A range of one slot.
fn single(due: DateTime<Utc>) -> MissedRange {
    MissedRange {
        first: due,
        last: due,
        count: 1,
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
