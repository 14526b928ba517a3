//! `job-status.json`: the daemon's live job status, written to the state directory so
//! `runner status` (another process) can show each job's state machine state and
//! failure streak, and so a restarted daemon carries the streaks over.
//!
//! Written atomically (the shared [`steadfast_core::store`] path) after changes, at most once
//! per [`MIN_GAP`], and once more when the daemon stops. It is a report, not a source
//! of truth for scheduling: a corrupt file is moved aside and the streaks start at 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use steadfast_core::env::Env;
use steadfast_core::event::{Event, EventKind};
use steadfast_core::job_status::StatusBoard;
use steadfast_core::state_machine::TaskState;
use steadfast_core::store::{StoreError, read_json, write_json};

/// The file's name under the state directory.
pub const FILE: &str = "job-status.json";

/// Writes are at least this far apart, however busy the jobs are.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    /// When the daemon wrote it.
    pub written_at: DateTime<Utc>,
    /// Job -> its status then.
    pub jobs: BTreeMap<String, SavedJob>,
}

/// One job as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedJob {
    /// State machine state.
    pub state: TaskState,
    /// Outcome of the last run.
    pub last_outcome: Option<String>,
    /// When the next run is due.
    pub next_run: Option<DateTime<Utc>>,
    /// Failed runs in a row.
    pub consecutive_failures: u32,
}

impl StatusFile {
    /// The board as it is now.
    pub fn of(board: &StatusBoard, at: DateTime<Utc>) -> Self {
        let jobs = board
            .snapshot()
            .into_iter()
            .map(|(name, s)| {
                let saved = SavedJob {
                    state: s.state,
                    last_outcome: s.last_outcome.map(|o| o.as_str().to_string()),
                    next_run: s.next_run,
                    consecutive_failures: s.consecutive_failures,
                };
                (name, saved)
            })
            .collect();
        Self {
            written_at: at,
            jobs,
        }
    }

    /// Job -> failure streak.
    pub fn failure_streaks(&self) -> BTreeMap<String, u32> {
        self.jobs
            .iter()
            .map(|(name, j)| (name.clone(), j.consecutive_failures))
            .collect()
    }
}

/// The file's path for a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Reads the file a previous daemon wrote (`None` if there is none). A corrupt file is
/// moved aside and reported as an event.
pub async fn load<E: Env>(env: &E, state_dir: &Path) -> Option<StatusFile> {
    match read_json::<_, StatusFile>(env.fs(), &path(state_dir)).await {
        Ok(f) => f,
        Err(e) => {
            env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
            None
        }
    }
}

/// Keeps the file current until `stop` turns true, then writes it a last time.
pub async fn keep_written<E: Env>(
    env: E,
    board: Arc<StatusBoard>,
    state_dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let file = path(&state_dir);
    loop {
        if let Err(e) = write(&env, &board, &file).await {
            report(&env, &e);
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = board.changed() => {}
        }
        // Coalesce a burst of changes (a hundred jobs starting on one instant).
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(MIN_GAP) => {}
        }
    }
    if let Err(e) = write(&env, &board, &file).await {
        report(&env, &e);
    }
}

async fn write<E: Env>(env: &E, board: &StatusBoard, file: &Path) -> Result<(), StoreError> {
    write_json(env.fs(), file, &StatusFile::of(board, env.now())).await
}

fn report<E: Env>(env: &E, e: &StoreError) {
    env.emit(Event::new(EventKind::HeartbeatFinding).detail(format!("status file: {e}")));
}
