//! The production environment: every seam of [`steadfast_core::env::Env`] on the real
//! machine.
//!
//! - [`tokio`]: [`tokio::TokioEnv`] and its parts (clock, TCP connector, disk, memory,
//!   process spawner).
//! - [`process`]: command steps' processes: a group each, journaled before they run,
//!   killed with the runner, stopped at the next start if a killed runner left them.
//! - [`tls`]: the root certificates HTTPS connections trust.

pub mod process;
pub mod tls;
pub mod tokio;
