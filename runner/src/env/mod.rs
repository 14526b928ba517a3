//! The production environment: every seam of [`steadfast_core::env::Env`] on the real
//! machine.
//!
//! - [`tokio`]: [`tokio::TokioEnv`] and its parts (clock, TCP connector, disk, memory,
//!   process spawner).
//! - [`tls`]: the root certificates HTTPS connections trust.

pub mod tls;
pub mod tokio;
