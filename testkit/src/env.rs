//! The test environment: the fakes behind the core's `Env` seam.
//!
//! Why one type for tests and the simulator: both must run the core against the same
//! fakes, so a behaviour proven in a unit test is the behaviour the simulator measures.
//! Tests build it with [`TestEnv::new`]; the simulator assembles its own
//! [`TestParts`] (turmoil time, its fault rule, its world-owned disk) and wraps them
//! with [`TestEnv::from_parts`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use steadfast_core::env::{Env, SeededRng};
use steadfast_core::event::{Event, MemorySink};

use crate::{FakeClock, FakeMemory, MemDb, MemFs, RouteConnector, ScriptedSpawner};

/// The fakes of one environment, reachable so tests can inject faults.
#[derive(Debug)]
pub struct TestParts {
    /// The wall clock.
    pub clock: FakeClock,
    /// Seeded RNG.
    pub rng: SeededRng,
    /// In-memory network.
    pub net: RouteConnector,
    /// In-memory disk with the crash model.
    pub fs: MemFs,
    /// Settable or model-driven memory.
    pub memory: FakeMemory,
    /// Scripted processes.
    pub spawner: ScriptedSpawner,
    /// Every event emitted (bounded).
    pub events: MemorySink,
    /// The durable store; its commits count on the disk's crash points.
    pub db: MemDb,
}

/// The fake environment. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct TestEnv {
    inner: Arc<TestParts>,
}

impl TestEnv {
    /// Fresh fakes: the clock starts at `start` and follows tokio time, the RNG uses
    /// `seed` (call inside a runtime).
    pub fn new(start: DateTime<Utc>, seed: u64) -> Self {
        let fs = MemFs::default();
        let db = MemDb::with_crash_points(fs.crash_points().clone());
        Self::from_parts(TestParts {
            clock: FakeClock::starting_at(start),
            rng: SeededRng::from_seed(seed),
            net: RouteConnector::default(),
            fs,
            memory: FakeMemory::default(),
            spawner: ScriptedSpawner::default(),
            events: MemorySink::default(),
            db,
        })
    }

    /// An environment over `parts` (the simulator wires its own).
    pub fn from_parts(parts: TestParts) -> Self {
        Self {
            inner: Arc::new(parts),
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
    type Clock = FakeClock;
    type Connector = RouteConnector;
    type Fs = MemFs;
    type Memory = FakeMemory;
    type Spawner = ScriptedSpawner;
    type Events = MemorySink;
    type Db = MemDb;

    fn clock(&self) -> &FakeClock {
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
