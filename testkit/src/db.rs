//! The store's fake: an in-memory SQLite database that outlives the runner using it.
//!
//! Each [`MemDb`] is a named in-memory database on SQLite's `memdb` VFS (shared by the
//! connections of one process without shared-cache locking), kept alive by a
//! connection this value holds. The runner opens its own connection per boot; when a crash drops
//! the runner, its connection goes and SQLite rolls back whatever was not committed,
//! while every committed transaction stays for the next boot. The same SQL runs as in
//! production; only the file (and its fsyncs) is missing.
//!
//! Every commit is a durable operation counted by the shared [`CrashPoints`]
//! (`db.commit`), so a test can crash the runner just before or just after any commit,
//! between any two file operations too when the disk shares the counter.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use steadfast_core::env::Database;

use crate::crash::CrashPoints;

/// The page size of every in-memory store (bytes).
const PAGE_SIZE: i64 = 1024;

/// Distinguishes the databases of one process (parallel tests, sweeps).
static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Inner {
    uri: String,
    /// Keeps the database alive between the runner's connections.
    _keeper: Mutex<Connection>,
    /// Every commit fails as on a full disk.
    full: AtomicBool,
    /// Counts commits and crashes the runner at an armed one.
    points: Arc<CrashPoints>,
}

/// An in-memory store owned outside the runner. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct MemDb {
    inner: Arc<Inner>,
}

impl Default for MemDb {
    fn default() -> Self {
        Self::new()
    }
}

impl MemDb {
    /// A new, empty database with a crash counter of its own.
    pub fn new() -> Self {
        Self::with_crash_points(CrashPoints::new())
    }

    /// A new, empty database counting its commits on `points` (share it with the disk
    /// to number file operations and commits in one sequence).
    pub fn with_crash_points(points: Arc<CrashPoints>) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let uri = format!("file:/steadfast-testkit-{n}?vfs=memdb");
        let keeper = open(&uri).unwrap_or_else(|e| panic!("in-memory sqlite must open: {e}"));
        // Small pages: every write copies each page it touches into the in-memory
        // rollback journal and back, so 1 KiB pages copy a quarter of what the default
        // 4 KiB do (the simulator's store is small). The size is fixed when the first
        // connection creates the file, so it is set and the file created here.
        keeper
            .pragma_update(None, "page_size", PAGE_SIZE)
            .and_then(|()| keeper.execute_batch("VACUUM"))
            .unwrap_or_else(|e| panic!("in-memory sqlite must take its page size: {e}"));
        Self {
            inner: Arc::new(Inner {
                uri,
                _keeper: Mutex::new(keeper),
                full: AtomicBool::new(false),
                points,
            }),
        }
    }

    /// The crash counter its commits go through.
    pub fn crash_points(&self) -> &Arc<CrashPoints> {
        &self.inner.points
    }

    /// Makes every commit fail with `SQLITE_FULL` (or stop failing), as a full disk
    /// does; reads still work.
    pub fn set_full(&self, full: bool) {
        self.inner.full.store(full, Ordering::SeqCst);
    }

    /// Runs `f` on a connection of its own (for tests that look at or tamper with rows).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        f(&open(&self.inner.uri)?)
    }
}

fn open(uri: &str) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

impl Database for MemDb {
    fn open(&self, _state_dir: &std::path::Path) -> rusqlite::Result<Connection> {
        open(&self.inner.uri)
    }

    fn commit<T: Send>(
        &self,
        _label: &'static str,
        commit: impl FnOnce() -> rusqlite::Result<T> + Send,
    ) -> impl Future<Output = rusqlite::Result<T>> + Send {
        let inner = self.inner.clone();
        async move {
            inner
                .points
                .point("db.commit", || {
                    if inner.full.load(Ordering::SeqCst) {
                        Err(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                            Some("database or disk is full".to_string()),
                        ))
                    } else {
                        commit()
                    }
                })
                .await
        }
    }
}
