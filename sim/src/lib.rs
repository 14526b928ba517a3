//! Steadfast's deterministic simulator: the runner core inside a turmoil world.
//!
//! The runner runs on one turmoil host. Simulated services are served inside that
//! host over in-memory pipes, so tokio's paused clock times latency, stalls, timeouts
//! and backoff exactly at any tick size. All service and fault state lives outside the
//! host, in the [`world::World`], so it survives a crash or bounce of the runner.
//!
//! # Layout
//! - [`calibrate`]: `sim calibrate`: the world's unstated rates fitted to the field
//!   report's "before" column; the "after" column predicted.
//! - [`scenario`]: scenario files (world, services, jobs, faults, invariants) and profiles.
//! - [`driver`]: runs a scenario: the world, the fault timeline, supervisor and operator.
//! - [`metrics`]: what the field report measured, and the invariants.
//! - [`judge`]: the independent judge: measures from the world's ledger alone.
//! - [`self_report`]: the runner's own account (the old trace-based measures), for
//!   comparison only.
//! - [`report`]: `report.json`, `report.md` and `trace.jsonl`.
//! - [`operator`]: the human who fixes what alerts point at.
//! - [`world`]: the world built from one seed; hands the runner a fresh env per boot.
//! - [`env`](mod@env): [`env::SimEnv`], the testkit's fakes wired to the world (and its time).
//! - [`net`]: the server side of in-memory connections, with injected request faults.
//! - [`services`]: the OAuth2 token server and the rate-limited APIs.
//! - [`study`]: `sim report`: the field report reproduced over profiles and seeds.
//! - [`faults`]: the fault switches the scenario driver flips.
//! - [`sleep`]: the runner host's sleeps and wall-clock steps.

#![warn(missing_docs)]

pub mod calibrate;
pub mod driver;
pub mod env;
pub mod faults;
pub mod judge;
pub mod metrics;
pub mod net;
pub mod operator;
pub mod report;
pub mod scenario;
pub mod self_report;
pub mod services;
pub mod sleep;
pub mod study;
pub mod world;

pub use env::SimEnv;
pub use faults::{Fault, FaultKind, FaultState};
pub use world::World;
