//! The journal: every slot of every job, from the moment it is due to how it ended.
//!
//! A slot is one due time of one job's schedule, named by its [`RunId`]. Each slot the
//! runner has seen is in exactly one state:
//!
//! - **running**: a run started (its `attempt` counts starts, resumes included) and has
//!   not finished. After a crash, `kill -9` or shutdown this is an interrupted run; the
//!   next start resumes it under the same run id, skipping the steps it finished.
//! - **done**: the run finished with an outcome. Finishing is one transaction: the
//!   outcome, the job's heartbeat and failure streak, so a crash cannot split them.
//! - **missed**: the slot was not run, and why ([`MissReason`]). Missed slots with one
//!   reason are one row covering a range, so a month of downtime is one row, not 3,000.
//!
//! Recovery, catch-up, overdue and "next run" are derived from these rows, never from
//! heartbeat times or files being present. Steps are kept with their outputs and
//! idempotency keys, so a resumed run sends the same keys and sees the same outputs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::time::{from_ms, to_ms};
use super::{Db, DbError};
use crate::env::Env;
use crate::event::Outcome;
use crate::job::RunId;

/// Where a slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Started and not finished (in progress, or interrupted).
    Running,
    /// Finished with an outcome.
    Done,
    /// Not run.
    Missed,
}

impl SlotState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Missed => "missed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "done" => Self::Done,
            "missed" => Self::Missed,
            _ => return None,
        })
    }
}

/// Why a slot was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// The runner was not running when it was due, and the catch-up policy did not run
    /// it (an older slot under `latest`, any slot under `none`, or one older than the
    /// catch-up window).
    Downtime,
    /// Its first step's time window was closed.
    Window,
    /// The job's previous run was still in progress.
    Overlap,
    /// The job was stopped by a fatal error until a human restarted the runner.
    Stopped,
    /// The machine slept (or the process was stopped, or the wall clock stepped
    /// forward) over it, and the catch-up policy did not run it: downtime of a runner
    /// that was never restarted.
    Asleep,
    /// An earlier run of the job was waiting for a service's gate (a Retry-After, a
    /// spent quota, an open breaker) and was resumed in its place; the gate held this
    /// slot's work as well.
    Gate,
}

impl MissReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downtime => "downtime",
            Self::Window => "window",
            Self::Overlap => "overlap",
            Self::Stopped => "stopped",
            Self::Asleep => "asleep",
            Self::Gate => "gate",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "downtime" => Self::Downtime,
            "window" => Self::Window,
            "overlap" => Self::Overlap,
            "stopped" => Self::Stopped,
            "asleep" => Self::Asleep,
            "gate" => Self::Gate,
            _ => return None,
        })
    }

    /// Whether the slot was skipped by the job's own configuration (its window), which
    /// is the job doing what it should, not a loss.
    pub fn is_by_design(self) -> bool {
        self == Self::Window
    }
}

impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runner does with slots that passed while it was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run the latest missed slot (if inside the catch-up window); the older ones are
    /// recorded as missed. systemd's `Persistent=true`.
    Latest,
    /// Run every missed slot inside the catch-up window, oldest first (bounded).
    All,
    /// Run none; record them all as missed.
    None,
}

impl CatchUp {
    /// The snake_case name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::All => "all",
            Self::None => "none",
        }
    }
}

/// What a deferred run waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hold {
    /// A step's time window, closed until after the run's deadline: by design, so the
    /// job counts as alive.
    Window,
    /// A service's gate (a Retry-After, a spent quota, an open breaker): the job does
    /// nothing until it opens, which is not a heartbeat.
    Gate,
}

impl Hold {
    /// The snake_case name (kept in the journal's `reason` column of a deferred run).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Window => "window",
            Self::Gate => "gate",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "window" => Self::Window,
            "gate" => Self::Gate,
            _ => return None,
        })
    }
}

/// One row of the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotRecord {
    /// The job.
    pub job: String,
    /// The (first) slot's due time.
    pub due: DateTime<Utc>,
    /// The last slot the row covers (`due` for a run).
    pub last_due: DateTime<Utc>,
    /// How many slots the row covers.
    pub slot_count: u64,
    /// Where the slot is.
    pub state: SlotState,
    /// Starts of the run, resumes included (0 for missed slots).
    pub attempt: u32,
    /// How a done run ended.
    pub outcome: Option<Outcome>,
    /// Why a slot was missed.
    pub missed: Option<MissReason>,
    /// A failed run's reason, in a human's words (never a secret).
    pub detail: Option<String>,
    /// What a deferred run waits for.
    pub hold: Option<Hold>,
    /// When the run first started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished, when the slots were recorded missed, or (an open run) when
    /// its last attempt ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl SlotRecord {
    /// The run this row is (its first slot).
    pub fn run_id(&self) -> RunId {
        RunId::new(&self.job, self.due)
    }
}

/// A step a run completed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// The step.
    pub name: String,
    /// The key it sent (and a resume sends again).
    pub idempotency_key: String,
    /// Its outputs, for the steps after it.
    pub outputs: BTreeMap<String, String>,
    /// When it completed.
    pub done_at: DateTime<Utc>,
}

/// A job's row: when the runner first knew it, its heartbeat and streak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The first start that knew the job; no slot before it was ever due.
    pub registered_at: DateTime<Utc>,
    /// The end of its last run that did what it could (succeeded, degraded, deferred).
    pub last_ok_at: Option<DateTime<Utc>>,
    /// Failed runs in a row.
    pub failure_streak: u32,
    /// Why a fatal error stopped it, until the next start.
    pub stopped_reason: Option<String>,
}

/// Why a run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The slot already has a record that is not a running run: running it would repeat
    /// (or contradict) what the journal says happened.
    #[error("slot {run} is already {state:?}; it is not run again")]
    Settled {
        /// The run.
        run: RunId,
        /// Its state.
        state: SlotState,
    },
}

const SLOT_COLUMNS: &str =
    "job, due, last_due, slot_count, state, attempt, outcome, reason, started_at, finished_at";

fn slot_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SlotRecord> {
    let state: String = row.get(4)?;
    let outcome: Option<String> = row.get(6)?;
    let reason: Option<String> = row.get(7)?;
    let state = SlotState::parse(&state).unwrap_or(SlotState::Running);
    let missed = match state {
        SlotState::Missed => reason.as_deref().and_then(MissReason::parse),
        _ => None,
    };
    let outcome = outcome.as_deref().and_then(parse_outcome);
    let hold = match outcome {
        Some(Outcome::Deferred) => reason.as_deref().and_then(Hold::parse),
        _ => None,
    };
    let detail = match state {
        SlotState::Missed => None,
        _ => reason,
    };
    Ok(SlotRecord {
        job: row.get(0)?,
        due: from_ms(row.get(1)?),
        last_due: from_ms(row.get(2)?),
        slot_count: row.get::<_, i64>(3)?.max(0) as u64,
        state,
        attempt: row.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
        outcome,
        missed,
        detail,
        hold,
        started_at: row.get::<_, Option<i64>>(8)?.map(from_ms),
        finished_at: row.get::<_, Option<i64>>(9)?.map(from_ms),
    })
}

/// The row covering slot `due` of `job`: its own row, or a missed range over it.
///
/// Two indexed lookups rather than one "latest row at or before" query: SQLite
/// re-prepares a statement that orders a range scan with a bound parameter on every
/// execution, and this runs for every slot.
fn covering(c: &rusqlite::Connection, job: &str, due: i64) -> rusqlite::Result<Option<SlotRecord>> {
    let own = c
        .prepare_cached(&format!(
            "SELECT {SLOT_COLUMNS} FROM slots WHERE job = ?1 AND due = ?2"
        ))?
        .query_row(params![job, due], slot_from_row)
        .optional()?;
    if own.is_some() {
        return Ok(own);
    }
    c.prepare_cached(&format!(
        "SELECT {SLOT_COLUMNS} FROM slots WHERE job = ?1 AND slot_count > 1 AND due <= ?2 AND last_due >= ?2"
    ))?
    .query_row(params![job, due], slot_from_row)
    .optional()
}

fn parse_outcome(s: &str) -> Option<Outcome> {
    Some(match s {
        "succeeded" => Outcome::Succeeded,
        "degraded" => Outcome::Degraded,
        "deferred" => Outcome::Deferred,
        "failed" => Outcome::Failed,
        "fatal" => Outcome::Fatal,
        "interrupted" => Outcome::Interrupted,
        _ => return None,
    })
}

impl<E: Env> Db<E> {
    /// The job's row, created at `now` if the runner has never known the job.
    pub async fn register_job(&self, job: &str, now: DateTime<Utc>) -> Result<JobRecord, DbError> {
        let job = job.to_string();
        self.write("register a job", move |tx| {
            tx.prepare_cached("INSERT INTO jobs (job, registered_at) VALUES (?1, ?2) ON CONFLICT (job) DO NOTHING")?.execute(params![job, to_ms(now)],
            )?;
            tx.prepare_cached("SELECT registered_at, last_ok_at, failure_streak, stopped_reason FROM jobs WHERE job = ?1")?.query_row([&job],
                |r| {
                    Ok(JobRecord {
                        registered_at: from_ms(r.get(0)?),
                        last_ok_at: r.get::<_, Option<i64>>(1)?.map(from_ms),
                        failure_streak: r.get::<_, i64>(2)?.clamp(0, i64::from(u32::MAX)) as u32,
                        stopped_reason: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    /// The job's row, if the runner has known it.
    pub fn job(&self, job: &str) -> Result<Option<JobRecord>, DbError> {
        self.read("read a job", |c| {
            c.prepare_cached("SELECT registered_at, last_ok_at, failure_streak, stopped_reason FROM jobs WHERE job = ?1")?.query_row([job],
                |r| {
                    Ok(JobRecord {
                        registered_at: from_ms(r.get(0)?),
                        last_ok_at: r.get::<_, Option<i64>>(1)?.map(from_ms),
                        failure_streak: r.get::<_, i64>(2)?.clamp(0, i64::from(u32::MAX)) as u32,
                        stopped_reason: r.get(3)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Every job's row, by name (at most 10,000): one read where a caller
    /// would otherwise read each job in turn (the heartbeat monitor, every minute).
    pub fn jobs(&self) -> Result<BTreeMap<String, JobRecord>, DbError> {
        self.read("read the jobs", |c| {
            // The limit is part of the text: bound as a parameter, SQLite prepares the
            // statement again on every run. No ORDER BY: the map sorts, and a scan of
            // the table is cheaper than one through its key's index.
            let mut stmt = c.prepare_cached(
                "SELECT job, registered_at, last_ok_at, failure_streak, stopped_reason FROM jobs LIMIT 10000",
            )?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    JobRecord {
                        registered_at: from_ms(r.get(1)?),
                        last_ok_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
                        failure_streak: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                        stopped_reason: r.get(4)?,
                    },
                ))
            })?
            .collect()
        })
    }

    /// Clears a stop reason (a start is a human's restart).
    pub async fn clear_stop(&self, job: &str) -> Result<(), DbError> {
        let job = job.to_string();
        self.write("clear a job's stop", move |tx| {
            tx.prepare_cached("UPDATE jobs SET stopped_reason = NULL WHERE job = ?1")?
                .execute([job])?;
            Ok(())
        })
        .await
    }

    /// The last slot of `job` the journal accounts for, if any.
    pub fn last_slot(&self, job: &str) -> Result<Option<DateTime<Utc>>, DbError> {
        self.read("read a job's last slot", |c| {
            c.prepare_cached("SELECT last_due FROM slots WHERE job = ?1 ORDER BY due DESC LIMIT 1")?
                .query_row([job], |r| r.get::<_, Option<i64>>(0))
        })
        .map(|ms| ms.map(from_ms))
    }

    /// The journal row covering `run`'s slot, if any.
    pub fn slot(&self, run: &RunId) -> Result<Option<SlotRecord>, DbError> {
        self.read("read a slot", |c| covering(c, run.job(), to_ms(run.due())))
    }

    /// Runs of `job` that started and never finished, oldest first (bounded).
    pub fn unfinished(&self, job: &str) -> Result<Vec<SlotRecord>, DbError> {
        self.read("read unfinished runs", |c| {
            // Sorted here, not by SQL: an ORDER BY makes SQLite re-prepare the
            // statement on every execution, and this runs at every slot.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SLOT_COLUMNS} FROM slots WHERE state = 'running' AND job = ?1 LIMIT 64"
            ))?;
            let mut open: Vec<SlotRecord> = stmt
                .query_map([job], slot_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            open.sort_by_key(|r| r.due);
            Ok(open)
        })
    }

    /// The rows of `job` whose slots overlap `[from, to]`, oldest first (bounded).
    pub fn slots_between(
        &self,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SlotRecord>, DbError> {
        self.read("read slots", |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SLOT_COLUMNS} FROM (SELECT * FROM slots WHERE job = ?1 AND due <= ?2 ORDER BY due DESC LIMIT 1) AS c WHERE last_due >= ?2
                 UNION ALL
                 SELECT {SLOT_COLUMNS} FROM (SELECT * FROM slots WHERE job = ?1 AND due > ?2 AND due <= ?3 ORDER BY due LIMIT 10000) AS r
                 ORDER BY due"
            ))?;
            stmt.query_map(params![job, to_ms(from), to_ms(to)], slot_from_row)?
                .collect()
        })
    }

    /// Starts (or resumes) `run` at `now`; returns its attempt number.
    ///
    /// A slot with no row gets one (attempt 1); a running one (interrupted) is resumed
    /// (attempt + 1). A slot that is done or missed is refused: the journal already says
    /// how it ended, and running it again would repeat its side effects.
    pub async fn start_run(&self, run: &RunId, now: DateTime<Utc>) -> Result<u32, StartError> {
        let job = run.job().to_string();
        let due = to_ms(run.due());
        let started = self
            .write("start a run", move |tx| {
                let existing = covering(tx, &job, due)?
                    .map(|r| (r.state.as_str().to_string(), i64::from(r.attempt)));
                match existing {
                    None => {
                        tx.prepare_cached("INSERT INTO slots (job, due, last_due, slot_count, state, attempt, started_at) VALUES (?1, ?2, ?2, 1, 'running', 1, ?3)")?.execute(params![job, due, to_ms(now)],
                        )?;
                        Ok(Ok(1))
                    }
                    Some((state, attempt)) if state == "running" => {
                        tx.prepare_cached("UPDATE slots SET attempt = attempt + 1 WHERE job = ?1 AND due = ?2")?.execute(params![job, due],
                        )?;
                        Ok(Ok((attempt + 1).clamp(1, i64::from(u32::MAX)) as u32))
                    }
                    Some((state, _)) => Ok(Err(SlotState::parse(&state).unwrap_or(SlotState::Done))),
                }
            })
            .await?;
        started.map_err(|state| StartError::Settled {
            run: run.clone(),
            state,
        })
    }

    /// Records that `run` completed `step`.
    pub async fn step_done(&self, run: &RunId, step: &StepRecord) -> Result<(), DbError> {
        let job = run.job().to_string();
        let due = to_ms(run.due());
        let outputs = serde_json::to_string(&step.outputs).map_err(|e| DbError::Corrupt {
            what: "step outputs",
            detail: e.to_string(),
        })?;
        let step = step.clone();
        self.write("record a step", move |tx| {
            tx.prepare_cached("INSERT INTO steps (job, due, step, idempotency_key, outputs, done_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (job, due, step) DO UPDATE SET idempotency_key = excluded.idempotency_key, outputs = excluded.outputs, done_at = excluded.done_at")?.execute(params![job, due, step.name, step.idempotency_key, outputs, to_ms(step.done_at)],
            )?;
            Ok(())
        })
        .await
    }

    /// The steps `run` completed, in the order it completed them.
    ///
    /// A row that does not parse is an error, never skipped: resuming without it would
    /// repeat the step under a new key.
    pub fn steps_done(&self, run: &RunId) -> Result<Vec<StepRecord>, DbError> {
        let mut rows: Vec<(String, String, String, i64)> = self.read("read a run's steps", |c| {
            // Sorted below, not by SQL (see `unfinished`).
            let mut stmt = c.prepare_cached(
                "SELECT step, idempotency_key, outputs, done_at FROM steps WHERE job = ?1 AND due = ?2 LIMIT 1000",
            )?;
            stmt.query_map(params![run.job(), to_ms(run.due())], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })?;
        rows.sort_by(|a, b| (a.3, &a.0).cmp(&(b.3, &b.0)));
        rows.into_iter()
            .map(|(name, key, outputs, done_at)| {
                let outputs = serde_json::from_str(&outputs).map_err(|e| DbError::Corrupt {
                    what: "step outputs",
                    detail: format!("run {run}, step `{name}`: {e}"),
                })?;
                Ok(StepRecord {
                    name,
                    idempotency_key: key,
                    outputs,
                    done_at: from_ms(done_at),
                })
            })
            .collect()
    }

    /// Finishes `run` with `outcome`, in one transaction with the job's heartbeat and
    /// failure streak (and its stop, for a fatal outcome). Returns the new streak.
    pub async fn finish_run(
        &self,
        run: &RunId,
        outcome: Outcome,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u32, DbError> {
        let job = run.job().to_string();
        let due = to_ms(run.due());
        let detail = detail.map(str::to_string);
        let at = to_ms(now);
        let streak = self
            .write("finish a run", move |tx| {
                tx.prepare_cached("UPDATE slots SET state = 'done', outcome = ?3, reason = ?4, finished_at = ?5 WHERE job = ?1 AND due = ?2")?.execute(params![job, due, outcome.as_str(), detail, at],
                )?;
                tx.prepare_cached("DELETE FROM processes WHERE job = ?1 AND due = ?2")?.execute(params![job, due],
                )?;
                if outcome.is_ok() {
                    tx.prepare_cached("UPDATE jobs SET last_ok_at = ?2, failure_streak = 0 WHERE job = ?1")?.execute(params![job, at],
                    )?;
                } else {
                    tx.prepare_cached("UPDATE jobs SET failure_streak = failure_streak + 1 WHERE job = ?1")?.execute([&job],
                    )?;
                }
                if outcome == Outcome::Fatal {
                    tx.prepare_cached("UPDATE jobs SET stopped_reason = ?2 WHERE job = ?1")?.execute(params![job, detail.as_deref().unwrap_or("fatal error")],
                    )?;
                }
                failure_streak(tx, &job)
            })
            .await?;
        Ok(streak)
    }

    /// Records a deferred attempt of `run`: the slot stays running, waiting for `hold`.
    /// A wait for a window is the job behaving as configured and counts as a
    /// heartbeat; a wait at a service's gate produced nothing and does not (a job held
    /// for longer than its threshold is overdue). The streak is left as it is.
    pub async fn note_deferral(
        &self,
        run: &RunId,
        hold: Hold,
        now: DateTime<Utc>,
    ) -> Result<u32, DbError> {
        let job = run.job().to_string();
        let due = to_ms(run.due());
        let at = to_ms(now);
        let streak = self
            .write("note a deferral", move |tx| {
                tx.prepare_cached("UPDATE slots SET outcome = 'deferred', reason = ?3, finished_at = ?4 WHERE job = ?1 AND due = ?2 AND state = 'running'")?.execute(params![job, due, hold.as_str(), at],
                )?;
                if hold == Hold::Window {
                    tx.prepare_cached("UPDATE jobs SET last_ok_at = ?2 WHERE job = ?1")?.execute(params![job, at],
                    )?;
                }
                failure_streak(tx, &job)
            })
            .await?;
        Ok(streak)
    }

    /// Records a failed attempt of `run` that leaves it open (resumable): the slot
    /// stays running for the next attempt and the job's streak grows. Returns the
    /// streak.
    pub async fn note_attempt(
        &self,
        run: &RunId,
        outcome: Outcome,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u32, DbError> {
        let job = run.job().to_string();
        let due = to_ms(run.due());
        let detail = detail.map(str::to_string);
        let at = to_ms(now);
        let streak = self
            .write("note an attempt", move |tx| {
                // `finished_at` of an open run is when its last attempt ended.
                tx.prepare_cached("UPDATE slots SET outcome = ?3, reason = ?4, finished_at = ?5 WHERE job = ?1 AND due = ?2 AND state = 'running'")?.execute(params![job, due, outcome.as_str(), detail, at],
                )?;
                if outcome.is_ok() {
                    tx.prepare_cached("UPDATE jobs SET last_ok_at = ?2 WHERE job = ?1")?.execute(params![job, at],
                    )?;
                } else {
                    tx.prepare_cached("UPDATE jobs SET failure_streak = failure_streak + 1 WHERE job = ?1")?.execute([&job],
                    )?;
                }
                failure_streak(tx, &job)
            })
            .await?;
        Ok(streak)
    }

    /// Settles an open run as it last stood (its last attempt's outcome, `failed` if it
    /// had none): it will not be resumed again.
    pub async fn close_run(
        &self,
        run: &RunId,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let job = run.job().to_string();
        let due = to_ms(run.due());
        let why = why.to_string();
        self.write("close a run", move |tx| {
            tx.prepare_cached("UPDATE slots SET state = 'done', outcome = COALESCE(outcome, 'failed'), reason = ?3, finished_at = ?4
                 WHERE job = ?1 AND due = ?2 AND state = 'running'")?.execute(params![job, due, why, to_ms(now)],
            )?;
            Ok(())
        })
        .await
    }

    /// Records `count` slots of `job` from `first` to `last` as missed for `reason`.
    ///
    /// A slot that already has a row keeps it (the journal never rewrites how a slot
    /// ended), so callers may record a range generously.
    pub async fn record_missed(
        &self,
        job: &str,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        count: u64,
        reason: MissReason,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        if count == 0 {
            return Ok(());
        }
        let job = job.to_string();
        let (first, last) = (to_ms(first), to_ms(last));
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.write("record missed slots", move |tx| {
            tx.prepare_cached("INSERT INTO slots (job, due, last_due, slot_count, state, attempt, reason, finished_at) VALUES (?1, ?2, ?3, ?4, 'missed', 0, ?5, ?6)
                 ON CONFLICT (job, due) DO NOTHING")?.execute(params![job, first, last, count, reason.as_str(), to_ms(now)],
            )?;
            if reason.is_by_design() {
                // A slot its window skips is the job doing what it should: a heartbeat.
                tx.prepare_cached("UPDATE jobs SET last_ok_at = ?2 WHERE job = ?1")?.execute(params![job, to_ms(now)],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Slots of `job` recorded missed since `since`, by reason.
    pub fn missed_counts(
        &self,
        job: &str,
        since: DateTime<Utc>,
    ) -> Result<BTreeMap<MissReason, u64>, DbError> {
        let rows: Vec<(String, i64)> = self.read("count missed slots", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT reason, SUM(slot_count) FROM slots WHERE job = ?1 AND state = 'missed' AND last_due >= ?2 GROUP BY reason",
            )?;
            stmt.query_map(params![job, to_ms(since)], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(reason, n)| Some((MissReason::parse(&reason)?, n.max(0) as u64)))
            .collect())
    }

    /// Forgets slots (and their steps) that ended before `before`. Running slots stay,
    /// and so does each job's latest row: "next run" is counted from it.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<(), DbError> {
        let before = to_ms(before);
        self.write("prune the journal", move |tx| {
            const OLD: &str = "s.state <> 'running' AND s.last_due < ?1 AND s.last_due < (SELECT MAX(l.last_due) FROM slots l WHERE l.job = s.job)";
            tx.prepare_cached(&format!("DELETE FROM steps WHERE EXISTS (SELECT 1 FROM slots s WHERE s.job = steps.job AND s.due = steps.due AND {OLD})"))?.execute([before],
            )?;
            tx.prepare_cached(&format!("DELETE FROM slots AS s WHERE {OLD}"))?.execute([before],
            )?;
            Ok(())
        })
        .await
    }
}

/// `job`'s failed runs in a row, as the transaction `tx` left them (0 for an unknown job).
fn failure_streak(tx: &rusqlite::Connection, job: &str) -> rusqlite::Result<u32> {
    let streak = tx
        .prepare_cached("SELECT failure_streak FROM jobs WHERE job = ?1")?
        .query_row([job], |r| r.get::<_, i64>(0))
        .optional()?;
    Ok(streak.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
}
