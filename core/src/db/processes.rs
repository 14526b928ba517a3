//! Process groups of command steps, journaled while they run.
//!
//! A command step's group id is written before its program runs and removed when it
//! ends (and with the run, when it finishes). A row found at start is a group a killed
//! runner may have left running: the next start stops it before any step runs again.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::time::{from_ms, to_ms};
use super::{Db, DbError};
use crate::env::Env;
use crate::job::RunId;

/// At most this many left groups are read at start (each is stopped, then forgotten,
/// so a longer list is finished at the next start).
const MAX_LEFT: usize = 1024;

/// A journaled process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    /// The run whose step it is.
    pub run: RunId,
    /// The step.
    pub step: String,
    /// Its process group id.
    pub pgid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

impl<E: Env> Db<E> {
    /// Records that `step` of `run` runs in process group `pgid`.
    pub async fn process_started(
        &self,
        run: &RunId,
        step: &str,
        pgid: u32,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let (job, due, step) = (run.job().to_string(), to_ms(run.due()), step.to_string());
        self.write("journal a step's process group", move |tx| {
            tx.prepare_cached(
                "INSERT INTO processes (job, due, step, pgid, started_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job, due, step) DO UPDATE SET pgid = excluded.pgid, started_at = excluded.started_at",
            )?
            .execute(params![job, due, step, i64::from(pgid), to_ms(now)])?;
            Ok(())
        })
        .await
    }

    /// Forgets the process group of `step` of `run` (it ended, or was stopped).
    pub async fn process_ended(&self, run: &RunId, step: &str) -> Result<(), DbError> {
        let (job, due, step) = (run.job().to_string(), to_ms(run.due()), step.to_string());
        self.write("forget a step's process group", move |tx| {
            tx.prepare_cached("DELETE FROM processes WHERE job = ?1 AND due = ?2 AND step = ?3")?
                .execute(params![job, due, step])?;
            Ok(())
        })
        .await
    }

    /// Every journaled process group, oldest first (bounded): at start, what a previous
    /// runner may have left running.
    pub fn processes(&self) -> Result<Vec<ProcessRecord>, DbError> {
        let mut rows: Vec<ProcessRecord> = self.read("read journaled process groups", |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT job, due, step, pgid, started_at FROM processes LIMIT {MAX_LEFT}"
            ))?;
            stmt.query_map([], |r| {
                Ok(ProcessRecord {
                    run: RunId::new(r.get::<_, String>(0)?, from_ms(r.get(1)?)),
                    step: r.get(2)?,
                    pgid: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                    started_at: from_ms(r.get(4)?),
                })
            })?
            .collect()
        })?;
        rows.sort_by(|a, b| (a.started_at, &a.run, &a.step).cmp(&(b.started_at, &b.run, &b.step)));
        Ok(rows)
    }
}
