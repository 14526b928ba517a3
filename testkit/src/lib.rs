//! Steadfast's fakes: one in-process environment for the core's tests and the simulator.
//!
//! Paused-time wall clock, in-memory disk with a crash model, in-memory network routed
//! to hyper services, settable memory, scripted processes, an event sink. It mirrors the
//! production seams one to one, so tests exercise the same code paths the daemon runs.

pub mod db;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::io::DuplexStream;

use steadfast_core::env::{
    CommandOutput, CommandSpec, Connector, Env, FileSystem, MemoryProbe, NetError, NetErrorKind,
    SeededRng, Spawner, Target, WallClock,
};
use steadfast_core::event::{Event, MemorySink};

pub use db::MemDb;

/// A wall clock that follows tokio's (possibly paused) clock from a fixed start.
#[derive(Debug, Clone)]
pub struct PausedClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl PausedClock {
    /// Starts at `start_wall` now (call inside a tokio runtime).
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        Self {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl WallClock for PausedClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.start_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// Serves one in-memory connection (the server end of a duplex pipe).
pub type Handler = Arc<dyn Fn(DuplexStream) + Send + Sync>;

/// Routes `host` to an in-process handler; other hosts fail DNS.
#[derive(Default, Clone)]
pub struct RouteConnector {
    routes: Arc<Mutex<BTreeMap<String, Handler>>>,
    faults: Arc<Mutex<BTreeMap<String, NetErrorKind>>>,
    connects: Arc<AtomicU64>,
}

impl std::fmt::Debug for RouteConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteConnector").finish_non_exhaustive()
    }
}

impl RouteConnector {
    /// Routes `host` to `handler`.
    pub fn route(&self, host: &str, handler: Handler) {
        lock(&self.routes).insert(host.to_string(), handler);
    }

    /// Makes connections to `host` fail with `kind` until [`Self::heal`].
    pub fn fail(&self, host: &str, kind: NetErrorKind) {
        lock(&self.faults).insert(host.to_string(), kind);
    }

    /// Removes a fault.
    pub fn heal(&self, host: &str) {
        lock(&self.faults).remove(host);
    }

    /// Connections opened so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::SeqCst)
    }
}

impl Connector for RouteConnector {
    type Stream = DuplexStream;

    async fn connect(&self, target: &Target) -> Result<DuplexStream, NetError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        let err = |kind, detail: &str| NetError {
            kind,
            target: target.to_string(),
            detail: detail.to_string(),
        };
        if let Some(kind) = lock(&self.faults).get(&target.host).copied() {
            return Err(err(kind, "injected fault"));
        }
        let handler = lock(&self.routes)
            .get(&target.host)
            .cloned()
            .ok_or_else(|| err(NetErrorKind::Dns, "no such host"))?;
        let (client, server) = tokio::io::duplex(64 * 1024);
        handler(server);
        Ok(client)
    }
}

/// Serves a hyper service on one in-memory connection, in a spawned task.
pub fn serve<S>(stream: DuplexStream, service: S)
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
}

#[derive(Debug, Default)]
struct MemFsState {
    /// Current contents, as the running process sees them.
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// Contents that survive a crash.
    durable: BTreeMap<PathBuf, Vec<u8>>,
}

/// An in-memory disk with a crash model: only synced data in synced directories survives.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    state: Arc<Mutex<MemFsState>>,
    full: Arc<AtomicBool>,
}

impl MemFs {
    /// Makes every write fail with ENOSPC (or stop failing).
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Forgets everything that was not made durable.
    pub fn crash(&self) {
        let mut s = lock(&self.state);
        s.files = s.durable.clone();
    }

    /// The current contents of a file.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        lock(&self.state).files.get(path).cloned()
    }

    /// The paths of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        lock(&self.state).files.keys().cloned().collect()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FileSystem for MemFs {
    async fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        lock(&self.state)
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))
    }

    async fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        lock(&self.state)
            .files
            .insert(path.to_path_buf(), data.to_vec());
        Ok(())
    }

    async fn sync(&self, path: &Path) -> io::Result<()> {
        // Data is durable once synced; the name becomes durable with sync_dir. This model
        // folds both into "synced data under its current name survives after sync_dir".
        if lock(&self.state).files.contains_key(path) {
            Ok(())
        } else {
            Err(not_found(path))
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let data = s.files.remove(from).ok_or_else(|| not_found(from))?;
        s.files.insert(to.to_path_buf(), data);
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let in_dir: Vec<(PathBuf, Vec<u8>)> = s
            .files
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect();
        s.durable.retain(|p, _| p.parent() != Some(path));
        s.durable.extend(in_dir);
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        lock(&self.state).files.remove(path);
        Ok(())
    }

    async fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// A memory probe tests set by hand.
#[derive(Debug, Default, Clone)]
pub struct FakeMemory(Arc<AtomicU64>);

impl FakeMemory {
    /// Sets the reported resident bytes.
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::SeqCst);
    }
}

impl MemoryProbe for FakeMemory {
    fn resident_bytes(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A spawner that answers from a script: program name -> output.
#[derive(Debug, Default, Clone)]
pub struct ScriptedSpawner {
    outputs: Arc<Mutex<BTreeMap<String, CommandOutput>>>,
    runs: Arc<Mutex<Vec<CommandSpec>>>,
}

impl ScriptedSpawner {
    /// What running `program` returns.
    pub fn script(&self, program: &str, output: CommandOutput) {
        lock(&self.outputs).insert(program.to_string(), output);
    }

    /// Every command run so far.
    pub fn runs(&self) -> Vec<CommandSpec> {
        lock(&self.runs).clone()
    }
}

impl Spawner for ScriptedSpawner {
    async fn run(&self, spec: &CommandSpec) -> io::Result<CommandOutput> {
        lock(&self.runs).push(spec.clone());
        let program = spec.argv.first().cloned().unwrap_or_default();
        lock(&self.outputs)
            .get(&program)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "program not scripted"))
    }
}

/// The test environment. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct TestEnv {
    inner: Arc<TestParts>,
}

/// The parts of a [`TestEnv`], reachable so tests can inject faults.
#[derive(Debug)]
pub struct TestParts {
    /// Wall clock following tokio time.
    pub clock: PausedClock,
    /// Seeded RNG.
    pub rng: SeededRng,
    /// In-memory network.
    pub net: RouteConnector,
    /// In-memory disk.
    pub fs: MemFs,
    /// Settable memory.
    pub memory: FakeMemory,
    /// Scripted processes.
    pub spawner: ScriptedSpawner,
    /// Every event emitted.
    pub events: MemorySink,
    /// The durable store.
    pub db: MemDb,
}

impl TestEnv {
    /// A test environment starting at `start` with RNG `seed` (call inside a runtime).
    pub fn new(start: DateTime<Utc>, seed: u64) -> Self {
        Self {
            inner: Arc::new(TestParts {
                clock: PausedClock::starting_at(start),
                rng: SeededRng::from_seed(seed),
                net: RouteConnector::default(),
                fs: MemFs::default(),
                memory: FakeMemory::default(),
                spawner: ScriptedSpawner::default(),
                events: MemorySink::default(),
                db: MemDb::new(),
            }),
        }
    }

    /// The parts, for fault injection and inspection.
    pub fn parts(&self) -> &TestParts {
        &self.inner
    }

    /// All events so far.
    pub fn events_so_far(&self) -> Vec<Event> {
        self.inner.events.snapshot()
    }
}

impl Env for TestEnv {
    type Clock = PausedClock;
    type Connector = RouteConnector;
    type Fs = MemFs;
    type Memory = FakeMemory;
    type Spawner = ScriptedSpawner;
    type Events = MemorySink;
    type Db = MemDb;

    fn clock(&self) -> &PausedClock {
        &self.inner.clock
    }
    fn rng(&self) -> &SeededRng {
        &self.inner.rng
    }
    fn connector(&self) -> &RouteConnector {
        &self.inner.net
    }
    fn fs(&self) -> &MemFs {
        &self.inner.fs
    }
    fn memory(&self) -> &FakeMemory {
        &self.inner.memory
    }
    fn spawner(&self) -> &ScriptedSpawner {
        &self.inner.spawner
    }
    fn events(&self) -> &MemorySink {
        &self.inner.events
    }
    fn db(&self) -> &MemDb {
        &self.inner.db
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
