//! The runner's environment inside a turmoil world: [`SimEnv`] implements
//! `steadfast_core::env::Env` with simulated parts.
//!
//! - Clock: `UNIX_EPOCH + turmoil::since_epoch()`, exact within a tick.
//! - Network: [`SimConnector`] to in-host services.
//! - Disk: turmoil's `unstable-fs` shim (per host, in memory, loses unsynced data on
//!   crash), plus a disk-full switch.
//! - Memory: the world's memory model at the current simulated time.
//! - Processes: a script of program name -> result.
//! - Events: the trace, kept outside the host so it survives crashes.
//!
//! Everything that must outlive a crash of the runner host (faults, services, the trace)
//! is behind an `Arc` owned by the world; a fresh `SimEnv` is built on every boot.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use steadfast_core::env::{
    CommandOutput, CommandSpec, Env, EventSink, FileSystem, MemoryProbe, SeededRng, Spawner,
    WallClock,
};
use steadfast_core::event::Event;
use steadfast_testkit::MemDb;
use turmoil::fs::shim::std::fs as simfs;

use crate::faults::FaultState;
use crate::net::SimConnector;

/// The simulated wall clock.
///
/// Inside a host it reads turmoil's logical time since the Unix epoch, which advances
/// with the host's paused tokio clock, so it is exact within a tick. Outside a host
/// (the driver between steps) it returns the last time a host observed, starting at
/// the world's epoch; it never reads the OS clock.
#[derive(Debug, Clone)]
pub struct SimClock {
    last_nanos: Arc<AtomicU64>,
}

impl SimClock {
    /// A clock whose first reading outside a host is `epoch`.
    pub fn new(epoch: DateTime<Utc>) -> Self {
        Self {
            last_nanos: Arc::new(AtomicU64::new(to_nanos(epoch))),
        }
    }
}

fn to_nanos(t: DateTime<Utc>) -> u64 {
    t.timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

fn from_nanos(nanos: u64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
        + chrono::Duration::nanoseconds(i64::try_from(nanos).unwrap_or(i64::MAX))
}

impl WallClock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        match turmoil::since_epoch() {
            Some(since) => {
                let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
                self.last_nanos.store(nanos, Ordering::SeqCst);
                from_nanos(nanos)
            }
            None => from_nanos(self.last_nanos.load(Ordering::SeqCst)),
        }
    }
}

/// The ENOSPC error a full disk gives.
pub fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn outside_host() -> io::Error {
    io::Error::other(
        "simulated file system used outside a turmoil host (hint: call it from host software)",
    )
}

/// Fails unless called from host software, where turmoil's file system is reachable
/// (the shim panics elsewhere).
fn in_host() -> io::Result<()> {
    if turmoil::since_epoch().is_some() {
        Ok(())
    } else {
        Err(outside_host())
    }
}

/// The runner host's disk: turmoil's in-memory file system with POSIX durability.
///
/// A write is lost on crash unless the file is synced and, for a new name, its
/// directory synced too. The shim is synchronous and instant; it is called directly.
#[derive(Debug, Clone)]
pub struct SimFs {
    faults: FaultState,
}

impl SimFs {
    /// A disk that consults `faults` for the disk-full switch.
    pub fn new(faults: FaultState) -> Self {
        Self { faults }
    }
}

impl FileSystem for SimFs {
    async fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        in_host()?;
        simfs::read(path)
    }

    async fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        in_host()?;
        if self.faults.disk_full() {
            return Err(enospc());
        }
        let mut file = simfs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(data)
    }

    async fn sync(&self, path: &Path) -> io::Result<()> {
        in_host()?;
        simfs::File::open(path)?.sync_all()
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        in_host()?;
        simfs::rename(from, to)
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        in_host()?;
        simfs::sync_dir(path)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        in_host()?;
        match simfs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        in_host()?;
        simfs::create_dir_all(path)
    }
}

/// The runner's resident memory as the world's memory model says, at simulated now.
#[derive(Debug, Clone)]
pub struct SimMemory {
    faults: FaultState,
    clock: SimClock,
}

impl SimMemory {
    /// A probe over the world's memory model.
    pub fn new(faults: FaultState, clock: SimClock) -> Self {
        Self { faults, clock }
    }
}

impl MemoryProbe for SimMemory {
    fn resident_bytes(&self) -> u64 {
        self.faults.memory_at(self.clock.now())
    }
}

/// What running a scripted program does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedCommand {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// How long it runs (simulated); past the spec's timeout it is killed.
    pub duration: Duration,
}

impl ScriptedCommand {
    /// A program that exits at once with `code` and prints `stdout`.
    pub fn exits(code: i32, stdout: &str) -> Self {
        Self {
            code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
            duration: Duration::ZERO,
        }
    }
}

#[derive(Debug, Default)]
struct Script {
    programs: BTreeMap<String, ScriptedCommand>,
    runs: BTreeMap<String, u64>,
}

/// Processes from a script: program name (`argv[0]`) -> result; unknown -> `NotFound`.
#[derive(Debug, Clone, Default)]
pub struct SimSpawner {
    script: Arc<Mutex<Script>>,
}

impl SimSpawner {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What running `program` does from now on.
    pub fn script(&self, program: &str, command: ScriptedCommand) {
        self.lock().programs.insert(program.to_string(), command);
    }

    /// How often each program was run.
    pub fn runs(&self) -> BTreeMap<String, u64> {
        self.lock().runs.clone()
    }
}

impl Spawner for SimSpawner {
    async fn run(&self, spec: &CommandSpec) -> io::Result<CommandOutput> {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let command = {
            let mut script = self.lock();
            *script.runs.entry(program.clone()).or_default() += 1;
            script.programs.get(&program).cloned()
        };
        let Some(command) = command else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("program `{program}` not found (hint: script it in the world)"),
            ));
        };
        let timed_out = command.duration > spec.timeout;
        tokio::time::sleep(command.duration.min(spec.timeout)).await;
        let cut = |mut bytes: Vec<u8>| {
            bytes.truncate(spec.capture_limit_bytes);
            bytes
        };
        Ok(CommandOutput {
            code: if timed_out { None } else { command.code },
            stdout: cut(command.stdout),
            stderr: cut(command.stderr),
            timed_out,
        })
    }
}

/// The default bound of a trace.
pub const DEFAULT_TRACE_LIMIT: usize = 1_000_000;

#[derive(Debug)]
struct TraceInner {
    events: Mutex<Vec<Event>>,
    limit: usize,
    dropped: AtomicU64,
}

/// The trace: every event the runner emitted, in order, bounded, outside the host.
#[derive(Debug, Clone)]
pub struct TraceSink {
    inner: Arc<TraceInner>,
}

impl Default for TraceSink {
    fn default() -> Self {
        Self::with_limit(DEFAULT_TRACE_LIMIT)
    }
}

impl TraceSink {
    /// Keeps at most `limit` events; later ones are counted in [`Self::dropped`].
    pub fn with_limit(limit: usize) -> Self {
        Self {
            inner: Arc::new(TraceInner {
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
        let events = self.lock();
        events
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

    /// Events kept so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event was kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped because the trace was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::SeqCst)
    }

    /// The trace as JSON lines (`trace.jsonl`), each ending in a newline.
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
        Sha256::digest(self.to_jsonl().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl EventSink for TraceSink {
    fn emit(&self, event: Event) {
        let mut events = self.lock();
        if events.len() < self.inner.limit {
            events.push(event);
        } else {
            self.inner.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The parts of a [`SimEnv`].
#[derive(Debug)]
pub struct SimParts {
    /// Simulated wall clock.
    pub clock: SimClock,
    /// This boot's random source.
    pub rng: SeededRng,
    /// Connections to world services.
    pub net: SimConnector,
    /// The host's disk.
    pub fs: SimFs,
    /// The memory model's probe.
    pub memory: SimMemory,
    /// Scripted processes.
    pub spawner: SimSpawner,
    /// The trace.
    pub events: TraceSink,
    /// The durable store, owned by the world (outside the host).
    pub db: MemDb,
}

/// The runner's environment in the simulator. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct SimEnv {
    inner: Arc<SimParts>,
}

impl SimEnv {
    /// An environment over `parts` (usually built by [`crate::world::World::env`]).
    pub fn new(parts: SimParts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    /// The parts, for inspection.
    pub fn parts(&self) -> &SimParts {
        &self.inner
    }
}

impl Env for SimEnv {
    type Clock = SimClock;
    type Connector = SimConnector;
    type Fs = SimFs;
    type Memory = SimMemory;
    type Spawner = SimSpawner;
    type Events = TraceSink;
    type Db = MemDb;

    fn clock(&self) -> &SimClock {
        &self.inner.clock
    }
    fn rng(&self) -> &SeededRng {
        &self.inner.rng
    }
    fn connector(&self) -> &SimConnector {
        &self.inner.net
    }
    fn fs(&self) -> &SimFs {
        &self.inner.fs
    }
    fn memory(&self) -> &SimMemory {
        &self.inner.memory
    }
    fn spawner(&self) -> &SimSpawner {
        &self.inner.spawner
    }
    fn events(&self) -> &TraceSink {
        &self.inner.events
    }
    fn db(&self) -> &MemDb {
        &self.inner.db
    }
}
