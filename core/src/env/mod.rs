//! The environment seam: everything the core needs from the outside world.
//!
//! The core never reads the OS clock, OS randomness, the network, the disk or memory
//! directly. It asks an [`Env`] for them. Production uses the `runner` crate's `TokioEnv`;
//! tests and the simulator use `steadfast-testkit`'s fakes.
//!
//! Monotonic time and sleeping are tokio's (`tokio::time`), so a paused or simulated
//! runtime drives them; the wall clock is a separate seam because schedules, windows,
//! token expiry and the heartbeat file are all in wall time.

pub mod rng;

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

use ::tokio::io::{AsyncRead, AsyncWrite};
use chrono::{DateTime, Utc};

use crate::event::Event;

pub use rng::{Rng, SeededRng};

/// The single environment the core runs in.
///
/// Each accessor returns one seam. The trait is implemented once for production and
/// once for the simulator; tests may build their own from the parts.
pub trait Env: Clone + Send + Sync + 'static {
    /// The wall clock.
    type Clock: WallClock;
    /// The byte-stream connector under the HTTP client.
    type Connector: Connector;
    /// The durable file system.
    type Fs: FileSystem;
    /// The memory probe.
    type Memory: MemoryProbe;
    /// The process spawner for command steps.
    type Spawner: Spawner;
    /// Where structured events go.
    type Events: EventSink;
    /// The durable store (SQLite).
    type Db: Database;

    /// The wall clock (UTC).
    fn clock(&self) -> &Self::Clock;
    /// The seeded random source; every random choice of the core comes from it.
    fn rng(&self) -> &SeededRng;
    /// The network connector.
    fn connector(&self) -> &Self::Connector;
    /// The file system.
    fn fs(&self) -> &Self::Fs;
    /// The memory probe.
    fn memory(&self) -> &Self::Memory;
    /// The process spawner.
    fn spawner(&self) -> &Self::Spawner;
    /// The event sink.
    fn events(&self) -> &Self::Events;
    /// The durable store.
    fn db(&self) -> &Self::Db;

    /// The current wall-clock instant, shorthand for `self.clock().now()`.
    fn now(&self) -> DateTime<Utc> {
        self.clock().now()
    }

    /// Stamps and emits one event.
    fn emit(&self, event: Event) {
        self.events().emit(event.at(self.now()));
    }
}

/// A wall clock returning UTC instants.
pub trait WallClock: Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// Why a connection could not be opened. The kind drives the error taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetErrorKind {
    /// The host name did not resolve.
    Dns,
    /// The peer refused the connection.
    Refused,
    /// The peer reset the connection.
    Reset,
    /// No answer in time.
    TimedOut,
    /// TLS handshake or certificate failure.
    Tls,
    /// Any other I/O failure.
    Other,
}

/// A failure to open a stream.
#[derive(Debug, Clone, thiserror::Error)]
#[error("failed to connect to {target}: {kind:?}: {detail}")]
pub struct NetError {
    /// What went wrong.
    pub kind: NetErrorKind,
    /// `host:port` that was dialled.
    pub target: String,
    /// A human-readable detail (never contains secrets).
    pub detail: String,
}

/// Where to connect: the parts of a URL the connector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Wrap the stream in TLS (https).
    pub tls: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Opens byte streams for the HTTP client.
pub trait Connector: Send + Sync + 'static {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Opens a stream to `target`, including TLS when `target.tls` is set.
    fn connect(
        &self,
        target: &Target,
    ) -> impl Future<Output = Result<Self::Stream, NetError>> + Send;
}

/// A small file-system API with explicit durability.
///
/// `write` alone is not durable: a crash may lose it. A durable replace is
/// `write(tmp)`, `sync(tmp)`, `rename(tmp, path)`, `sync_dir(parent)`; see
/// [`crate::store::write_atomic`].
pub trait FileSystem: Send + Sync + 'static {
    /// Reads a whole file.
    fn read(&self, path: &Path) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
    /// Creates or truncates `path` and writes `data` (owner-only permissions).
    fn write(&self, path: &Path, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Flushes a file's data and metadata to stable storage.
    fn sync(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// Flushes a directory's entries (so a create or rename survives a crash).
    fn sync_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// Removes a file; a missing file is not an error.
    fn remove(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
}

/// Reports the process's resident memory.
pub trait MemoryProbe: Send + Sync + 'static {
    /// Current resident set size in bytes.
    fn resident_bytes(&self) -> u64;
}

/// What to run for a command step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// Working directory, if any.
    pub cwd: Option<std::path::PathBuf>,
    /// Extra environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Kill the whole process group after this long.
    pub timeout: Duration,
    /// Keep at most this many bytes of stdout and of stderr.
    pub capture_limit_bytes: usize,
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Captured stdout (truncated to the limit).
    pub stdout: Vec<u8>,
    /// Captured stderr (truncated to the limit).
    pub stderr: Vec<u8>,
    /// The command ran past its timeout and was killed.
    pub timed_out: bool,
}

/// Spawns processes for command steps.
///
/// A command starts in two stages so the core can journal it in between: [`start`]
/// creates the process in a process group of its own and holds it before its program
/// runs; the core records the group id in the store; [`StartedCommand::finish`] lets
/// the program run and waits for it. A runner killed between the two never runs the
/// program (production's held process exits when its runner is gone), and one killed
/// after has the group in the store, where the next start finds it ([`stop_group`]).
///
/// [`start`]: Spawner::start
/// [`stop_group`]: Spawner::stop_group
pub trait Spawner: Send + Sync + 'static {
    /// A process started and held before its program runs.
    type Started: StartedCommand;

    /// Starts `spec` in a process group of its own, held before the program runs.
    fn start(&self, spec: &CommandSpec) -> impl Future<Output = io::Result<Self::Started>> + Send;

    /// Stops a process group a previous runner left: SIGTERM to the group, then SIGKILL
    /// once `grace` has passed. Processes that do not carry `group.marker` in their
    /// environment are not ours (the group id was reused) and are left alone.
    fn stop_group(
        &self,
        group: &LeftGroup,
        grace: Duration,
    ) -> impl Future<Output = io::Result<Reaped>> + Send;

    /// Runs a command to completion or timeout without journaling its group.
    fn run(&self, spec: &CommandSpec) -> impl Future<Output = io::Result<CommandOutput>> + Send {
        async move { self.start(spec).await?.finish().await }
    }
}

/// A command held before its program runs (see [`Spawner`]). Dropping it kills its
/// whole process group.
pub trait StartedCommand: Send + 'static {
    /// Its process group id (the group leader's pid).
    fn pgid(&self) -> u32;

    /// Lets the program run and waits for it, up to the spec's timeout (past it the
    /// whole group is killed).
    fn finish(self) -> impl Future<Output = io::Result<CommandOutput>> + Send;
}

/// A process group a previous runner journaled and may have left running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftGroup {
    /// The group id.
    pub pgid: u32,
    /// An environment entry (`NAME=value`) every process of the step carries; a process
    /// without it is someone else's that reused the id.
    pub marker: String,
}

/// What stopping a left process group found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reaped {
    /// No process of ours was left in the group.
    Gone,
    /// The group was left running and stopped at SIGTERM.
    Terminated,
    /// The group ignored SIGTERM for the grace period and was killed.
    Killed,
    /// The group id now belongs to processes that are not ours: left alone.
    NotOurs,
}

impl Reaped {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Terminated => "terminated",
            Self::Killed => "killed",
            Self::NotOurs => "not_ours",
        }
    }
}

/// The runner's durable store: a SQLite database the core reaches only through this seam.
///
/// Production opens a file in the state directory (WAL, `synchronous = FULL`); the fakes
/// open an in-memory database owned outside the runner, so a crash of the runner drops
/// exactly what was not committed. The core runs the same SQL on either.
pub trait Database: Send + Sync + 'static {
    /// Opens a connection to the store of `state_dir` (the core opens one per runner and
    /// keeps it). The fakes ignore the directory.
    fn open(&self, state_dir: &Path) -> rusqlite::Result<rusqlite::Connection>;

    /// Runs one write transaction, `commit`: synchronous and atomic (it begins, writes
    /// and commits inside). Production just runs it. A fake may instead crash the runner
    /// at this instant: before the commit (the future never completes and nothing is
    /// written) or right after it; that is how tests put a crash between any two
    /// durable operations. A fake may also fail it as a full disk does (`SQLITE_FULL`).
    fn commit<T: Send>(
        &self,
        label: &'static str,
        commit: impl FnOnce() -> rusqlite::Result<T> + Send,
    ) -> impl Future<Output = rusqlite::Result<T>> + Send;
}

/// Receives every structured event the core emits.
pub trait EventSink: Send + Sync + 'static {
    /// Records one event.
    fn emit(&self, event: Event);
}
