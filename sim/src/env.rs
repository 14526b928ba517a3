//! The runner's environment inside a turmoil world: the testkit's fakes, wired to it.
//!
//! [`SimEnv`] is the testkit's `TestEnv`, so the simulator runs the core against the
//! same fakes as the core's tests. The wiring ([`crate::world::World::env`]):
//!
//! - Clock: the testkit's `FakeClock` over [`TurmoilTime`], exact within a tick (tokio
//!   `Instant`s do not survive a host bounce, turmoil's logical time does).
//! - Network: the testkit's `RouteConnector`, each service routed to its server side in
//!   [`crate::net`], every connect judged by the world's [`crate::faults::FaultState`].
//! - Disk: the testkit's `MemFs`, owned by the world outside the host; the driver crashes
//!   it whenever it crashes the runner host ([`crate::world::World::crash`]).
//! - Memory: the testkit's `FakeMemory`, driven by the world's memory model.
//! - Processes: the testkit's `ScriptedSpawner`. Events: the core's bounded `MemorySink`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use steadfast_testkit::TimeSource;

/// The runner's environment in the simulator: the testkit's, wired to the world.
pub type SimEnv = steadfast_testkit::TestEnv;

/// Turmoil's logical time since the Unix epoch: the world's undisturbed time.
///
/// Inside a host it advances with the host's paused tokio clock, so it is exact within
/// a tick. Outside a host (the driver between steps) it returns the last time a host
/// observed, starting at the world's epoch; it never reads the OS clock. Cheap to
/// clone; clones share the last observation.
#[derive(Debug, Clone)]
pub struct TurmoilTime {
    last_nanos: Arc<AtomicU64>,
    /// Nanoseconds the world's wall clock jumped ahead of turmoil's logical time: the
    /// runner host slept (see [`crate::sleep`]) while the world went on.
    jumped_nanos: Arc<AtomicU64>,
    /// How many sleeps so far: a connection open across one is reset ([`crate::net`]).
    sleeps: Arc<AtomicU64>,
}

impl TurmoilTime {
    /// A source whose first reading outside a host is `epoch`.
    pub fn new(epoch: DateTime<Utc>) -> Self {
        Self {
            last_nanos: Arc::new(AtomicU64::new(to_nanos(epoch))),
            jumped_nanos: Arc::default(),
            sleeps: Arc::default(),
        }
    }

    /// Moves the world's wall clock `by` ahead of turmoil's time, for good.
    pub fn jump(&self, by: std::time::Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.jumped_nanos.fetch_add(nanos, Ordering::SeqCst);
        self.sleeps.fetch_add(1, Ordering::SeqCst);
    }

    /// How far the world's wall clock has jumped ahead of turmoil's time (the sleeps so
    /// far, added up).
    pub fn jumped(&self) -> chrono::Duration {
        chrono::Duration::nanoseconds(
            i64::try_from(self.jumped_nanos.load(Ordering::SeqCst)).unwrap_or(i64::MAX),
        )
    }

    /// How many sleeps the world has seen.
    pub fn sleeps(&self) -> u64 {
        self.sleeps.load(Ordering::SeqCst)
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

impl TimeSource for TurmoilTime {
    fn now(&self) -> DateTime<Utc> {
        let base = match turmoil::since_epoch() {
            Some(since) => {
                let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
                self.last_nanos.store(nanos, Ordering::SeqCst);
                nanos
            }
            None => self.last_nanos.load(Ordering::SeqCst),
        };
        from_nanos(base.saturating_add(self.jumped_nanos.load(Ordering::SeqCst)))
    }
}
