//! Steadfast's daemon: the production environment and everything `runner run` adds to
//! the core to make it a tool a person leaves running for weeks.
//!
//! The scheduling, the patterns and the config types are `steadfast-core`'s; this crate
//! only supplies what touches the real machine.
//!
//! # Layout
//! - [`env`]: the production [`steadfast_core::env::Env`]: system clock, TCP + rustls
//!   connector, the disk, process memory, process spawner.
//! - [`daemon`]: lock file, rotating logs, notifiers, `/metrics`, `status`, `install`,
//!   the daemon's own settings and the idle benchmark.
//! - [`secrets`]: secret references resolved from the process environment and the disk.

#![warn(missing_docs)]

pub mod daemon;
pub mod env;
pub mod secrets;
