//! Steadfast's fakes: one in-process environment for the core's tests and the simulator.
//!
//! Each fake mirrors a production seam one to one, so tests exercise the code paths the
//! daemon runs, and the simulator measures the behaviour the tests prove.
//!
//! # Layout
//! - [`clock`]: [`FakeClock`], a [`TimeSource`] plus an adjustable wall offset.
//! - [`fs`]: [`MemFs`], the disk with the POSIX crash model and a disk-full switch.
//! - [`crash`]: [`CrashPoints`], stop the process at the k-th durable operation.
//! - [`db`]: [`MemDb`], the store: in-memory SQLite outliving the runner's connection.
//! - [`net`]: [`RouteConnector`], hosts routed to in-process handlers, judged by a
//!   [`ConnectRule`].
//! - [`memory`]: [`FakeMemory`], set by hand or driven by a model.
//! - [`spawner`]: [`ScriptedSpawner`], programs from a script, timed on the clock.
//! - [`env`](mod@env): [`TestEnv`], all of them behind the core's `Env`.
//!
//! Events go to the core's bounded [`MemorySink`], re-exported here.

pub mod clock;
pub mod crash;
pub mod db;
pub mod env;
pub mod fs;
pub mod memory;
pub mod net;
pub mod spawner;

pub use clock::{FakeClock, TimeSource, TokioTime};
pub use crash::{CrashAt, CrashHit, CrashPoints};
pub use db::MemDb;
pub use env::{TestEnv, TestParts};
pub use fs::{ENOSPC, MemFs};
pub use memory::FakeMemory;
pub use net::{ConnectRule, ConnectStats, ConnectVerdict, Handler, RouteConnector, serve};
pub use spawner::{ScriptedCommand, ScriptedSpawner};
pub use steadfast_core::event::MemorySink;
