//! The production daemon around the core: what `runner run` adds to make it a tool a
//! person leaves running for weeks.
//!
//! # Layout
//! - [`settings`]: the daemon's own config sections (`[notify]`, `[http]`, `[logs]`),
//!   read from the same file as the core's.
//! - [`bench`]: idle CPU, RSS and schedule drift with many jobs (`runner bench-idle`).
//! - [`env`]: [`env::DaemonEnv`], the production environment with a fan-out event sink.
//! - [`legacy`]: older runners' state files (tokens, heartbeats, checkpoints) imported
//!   into the store at the first start and renamed `*.migrated`.
//! - [`lock`]: one daemon per state directory.
//! - [`logs`]: JSON lines to stdout and a size-bounded rotating file, secrets redacted.
//! - [`notify`]: webhook notifiers (JSON, ntfy, Slack) and healthchecks-style pings,
//!   deduplicated, rate-limited, delivered in the background.
//! - [`metrics`]: event counters and the optional `/healthz` + `/metrics` endpoint.
//! - [`status`]: `runner status`, read from the state directory without a daemon.
//! - [`status_file`]: the daemon's live job status, for `runner status` and restarts.
//! - [`install`]: launchd and systemd service files.

pub mod bench;
pub mod env;
pub mod install;
pub mod legacy;
pub mod lock;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod refusal;
pub mod settings;
pub mod status;
pub mod status_file;
