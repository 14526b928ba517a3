//! Steadfast's runner core: schedules jobs and keeps them working for weeks.
//!
//! The same core runs in the production daemon and, unchanged, inside the simulator.
//! It touches the outside world only through the [`env::Env`] seam.
//!
//! # Layout
//! - [`env`]: the seam (clock, rng, connector, fs, memory, spawner, events). The
//!   production implementation is the `runner` crate's, the fakes are `steadfast-testkit`'s.
//! - [`config`]: TOML configuration, parsed in two stages with every error at once.
//! - [`event`]: structured events, one per transition, attempt and decision.
//! - [`taxonomy`]: error classes (critical, recoverable, degraded, fatal).
//! - [`state_machine`]: the task state machine, transitions as types.
//! - [`http`]: the HTTP/1.1 client over the connector.
//! - [`db`]: the durable store (SQLite): the journal of runs and all runner state.
//! - [`store`]: atomic, durable state files (the daemon's status file, migration).
//! - The seven patterns: [`retry`] (1), [`token`] (2), [`heartbeat`] (3), error
//!   boundaries in [`boundary`] and [`scheduler`] (4), [`checkpoint`] (5), [`window`] (6), [`breaker`] (7).
//! - [`schedule`]: interval and cron schedules.
//! - [`job`]: one run of one job, step by step, through every pattern.
//! - [`scheduler`]: the runner: one task per job behind its own error boundary, plus
//!   the heartbeat monitor.
//! - [`wake`]: wakes and clock steps, told by comparing the wall and monotonic clocks.
//! - [`alert`]: what needs a human.
//! - [`stdout`]: `say!`, printing for the binaries that a closed pipe ends quietly.

#![warn(missing_docs)]

pub mod alert;
pub mod boundary;
pub mod breaker;
pub mod checkpoint;
pub mod config;
pub mod db;
pub mod env;
pub mod event;
pub mod heartbeat;
pub mod http;
pub mod job;
pub mod job_status;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod state_machine;
pub mod stdout;
pub mod store;
pub mod taxonomy;
pub mod token;
pub mod wake;
pub mod window;
