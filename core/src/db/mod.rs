//! The durable store: one SQLite database holding every piece of runner state that must
//! survive a crash (the journal of runs, tokens, breakers, retry gates, job health, alert
//! dedup).
//!
//! SQLite rather than files of our own: its transactions are atomic and durable across
//! power loss, and its authors crash-test that far beyond what we could. A state change
//! that touches several things (finishing a run: its outcome, its checkpoint, the job's
//! streak and heartbeat) is one transaction, so a crash cannot land between them.
//!
//! The core reaches the database only through the [`Database`] seam: production opens a
//! file in the state directory (WAL, `synchronous = FULL`), the fakes an in-memory
//! database owned outside the runner. Every write goes through [`Db::write`], which hands
//! the transaction to [`Database::commit`], so a test can crash the runner before or
//! after any commit. The schema is plain SQL (`BIGINT` milliseconds, `TEXT`, composite
//! keys, `ON CONFLICT ... DO UPDATE`) that PostgreSQL accepts too.
//!
//! # Layout
//! - [`schema`]: versioned migrations, applied at start.
//! - [`journal`]: every slot of every job: started, each step done, finished or missed.
//! - [`processes`]: process groups of running command steps, stopped at start if a
//!   killed runner left them.
//! - [`breakers`]: each service's circuit breaker (state, open-until, trips).
//! - [`tokens`]: each credential's token chain (rotated refresh tokens, access tokens).
//! - [`alerts`]: alert deduplication (the monitor's open episodes, alerts sent).
//! - [`time`]: instants as `BIGINT` milliseconds.

pub mod alerts;
pub mod breakers;
pub mod journal;
pub mod processes;
pub mod schema;
pub mod time;
pub mod tokens;

use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::env::{Database, Env};
use crate::taxonomy::FailureKind;

pub use alerts::Episode;
pub use breakers::BreakerRow;
pub use journal::{CatchUp, Hold, MissReason, SlotRecord, SlotState, StepRecord};
pub use processes::ProcessRecord;
pub use tokens::{StoredToken, TokenRow};

/// Prepared statements kept per connection: more than the core has, so none is
/// parsed twice.
const STATEMENT_CACHE: usize = 128;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused an operation.
    #[error("failed to {what}: {source}")]
    Sqlite {
        /// What was attempted.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer runner.
    #[error(
        "the state database is at schema version {found}, newer than this runner's {known} (hint: run the newer runner, or restore a backup of the state directory)"
    )]
    Newer {
        /// The version found.
        found: i64,
        /// The newest version this runner knows.
        known: i64,
    },
    /// A stored value does not parse: edited by hand or written by a bug.
    #[error("the state database holds a corrupt {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// What the parser said.
        detail: String,
    },
}

impl DbError {
    /// The taxonomy's view: a full disk is fatal, anything else an I/O failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.code == rusqlite::ErrorCode::DiskFull => FailureKind::DiskFull,
            _ => FailureKind::Io,
        }
    }
}

/// Wraps a SQLite error with what was attempted.
pub(crate) fn failed(what: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError::Sqlite { what, source }
}

/// The runner's connection to its store.
#[derive(Debug)]
pub struct Db<E: Env> {
    env: E,
    /// One connection, used by one statement at a time. SQLite calls are short; none is
    /// held across an `await`.
    conn: Mutex<Connection>,
}

impl<E: Env> Db<E> {
    /// Opens the store of `state_dir` and brings its schema up to date.
    pub async fn open(env: E, state_dir: &std::path::Path) -> Result<Self, DbError> {
        let conn = env
            .db()
            .open(state_dir)
            .map_err(failed("open the state database"))?;
        // Every statement the core runs stays prepared (parsing dominated otherwise).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let db = Self {
            env,
            conn: Mutex::new(conn),
        };
        schema::migrate(&db).await?;
        Ok(db)
    }

    /// Runs `f` on the connection (reads; writes go through [`Self::write`]).
    pub fn read<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        f(&self.lock()).map_err(failed(what))
    }

    /// Runs `f` in one write transaction and commits it: all of it happens or none.
    pub async fn write<T: Send>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send,
    ) -> Result<T, DbError> {
        let commit = || -> rusqlite::Result<T> {
            let conn = self.lock();
            // BEGIN and COMMIT as cached statements: rusqlite's `Transaction` parses
            // them again on every write, which was a tenth of the simulator's time.
            conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            let written = f(&conn).and_then(|value| {
                conn.prepare_cached("COMMIT")?.execute([])?;
                Ok(value)
            });
            if written.is_err() && !conn.is_autocommit() {
                // Nothing of a failed write stays: the transaction goes as a whole.
                let _rolled_back = conn
                    .prepare_cached("ROLLBACK")
                    .and_then(|mut s| s.execute([]));
            }
            written
        };
        self.env
            .db()
            .commit(what, commit)
            .await
            .map_err(failed(what))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}
