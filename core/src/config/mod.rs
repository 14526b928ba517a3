//! Configuration: one spanned reader for the runner's file, the daemon's sections and
//! the simulator's scenarios.
//!
//! The text is checked ([`source`]: at most 16 MiB, UTF-8), parsed into a spanned
//! tree ([`raw`]) and read through [`reader::Table`], which checks each value's type
//! and range where it is read and collects every problem at once as a [`Diagnostic`]
//! with file:line:col, key path and hint; unknown keys get a did-you-mean. The
//! validated types hold parsed values (an `http::Method`, a [`Schedule`], resolved
//! [`ServiceId`]s and [`CredentialId`]s, [`Template`]s, resolved secrets), so a run
//! never parses configuration text again. The simulator's scenario files embed the same
//! sections and read them with the same reader.
//!
//! # Layout
//! - [`source`]: the file's text, its size and encoding checks, and its line index.
//! - [`raw`]: TOML syntax into a spanned tree.
//! - [`reader`]: typed reads of a spanned table; [`diagnostic`]: the problems found.
//! - [`document`]: a whole file, the core's sections plus the caller's.
//! - One module per element: [`runner_settings`], [`patterns`], [`retry`],
//!   [`windows`], [`services`], [`credentials`], [`jobs`], [`schedule`], [`steps`].
//! - Values: [`duration`], [`names`], [`secret`], [`template`], [`url`]; did-you-mean
//!   in [`suggest`].
//!
//! # File format
//!
//! Every section but `[[jobs]]` is optional. Durations are strings in `humantime` form
//! (`"90s"`, `"15m"`, `"1h 30m"`); names of jobs, steps, services, credentials, windows
//! and extract outputs are `[A-Za-z0-9_-]+`, at most 64 characters. Relative paths
//! resolve against the directory of the configuration file (pass an absolute file path
//! to get absolute paths).
//!
//! ```toml
//! [runner]
//! state_dir = "state"            # default "state"
//! time_zone = "Europe/Berlin"    # IANA name, default "UTC"; windows and cron use it
//! monitor_interval = "60s"       # heartbeat monitor period, default 60 s
//! memory_warn_mb = 1024          # default 1024
//! memory_fatal_mb = 2048         # default 2048, at least memory_warn_mb
//! shutdown_grace = "30s"         # default 30 s
//! breaker_alert_after = "1h"     # a breaker open this long alerts, default 1 h
//!
//! [patterns]                     # default: every pattern on (Patterns::ALL)
//! retry = "backoff"              # off | immediate | backoff
//! jitter = "full"                # none | equal | full | decorrelated
//! retry_budget = true            # also proactive_refresh, heartbeat, isolation,
//!                                # checkpoints, windows, breakers, contracts (expect),
//!                                # needs, gates (per-service Retry-After/quota/breaker
//!                                # holds), probes (health request at a cooldown's end)
//!
//! [retry]                        # defaults: RetryPolicy::default()
//! max_attempts = 5               # 1..=20, including the first attempt
//! base = "1s"                    # > 0
//! cap = "60s"                    # >= base
//! retry_after_cap = "15m"
//! budget_ratio = 0.2             # 0.0..=1.0
//! budget_min_retries = 10
//!
//! [windows]                      # per action type; an action without one runs anytime
//! publish = { start = "09:00", end = "22:00" }   # HH:MM or HH:MM:SS; end < start spans midnight
//!
//! [services.youtube]
//! health_url = "https://..."     # optional, probed by the heartbeat monitor
//! call_timeout = "30s"           # default 30 s
//! breaker = { failure_threshold = 3, failure_rate = 0.5, window_calls = 20,
//!             cooldown = "5m", max_cooldown = "1h" }   # each optional; max_cooldown >= cooldown
//!
//! [credentials.google]
//! token_url = "https://oauth2.example.com/token"
//! client_id = "abc"
//! client_secret = { env = "GOOGLE_CLIENT_SECRET" }   # optional
//! refresh_token = { file = "google.refresh" }        # required
//! skew = "5m"                    # refresh this long before expiry, default 5 min
//! refresh_timeout = "30s"        # one refresh's own deadline (never a run's), default 30 s
//! scope = "..."                  # optional
//! # A secret is a string literal, { env = "NAME" } or { file = "PATH" } (contents trimmed).
//!
//! [[jobs]]
//! name = "youtube-engine"        # unique
//! every = "30m"                  # exactly one of `every` (at least 1s) and `cron` (5 or 6 fields)
//! start_jitter = "30s"           # default 0; shorter than the interval
//! overlap = "skip"               # skip (default) | queue
//! catch_up = "latest"            # slots missed while the runner was down: latest (default) | all | none
//! catch_up_window = "6h"         # default 6 h: older missed slots are recorded missed, not run
//! deadline = "20m"               # default: the interval, at most 1 h (cron: at most 15 min)
//! heartbeat_threshold = "1h"     # default: twice the interval (cron: see `schedule`)
//! retry = { max_attempts = 3 }   # optional partial override of [retry]
//!
//! [[jobs.steps]]
//! name = "upload"                # unique within the job
//! action = "publish"             # optional action type, matched against [windows]
//! kind = "http"                  # http (default) | command
//! method = "POST"                # GET (default), HEAD, POST, PUT, PATCH, DELETE, OPTIONS
//! url = "https://api.example.com/videos/{{fetch.id}}"   # {{step.output}}: an earlier step's output
//! service = "youtube"            # required; a [services] entry
//! credential = "google"          # optional; a [credentials] entry (bearer token)
//! headers = { "Content-Type" = "application/json" }
//! body = "..."
//! extract = { id = "/data/id" }  # output name -> JSON pointer ("" or starting with "/")
//! needs = ["fetch"]              # earlier steps that must be done first; default: every
//!                                # step before; [] for none. A skipped prerequisite skips
//!                                # this step and fails the run (not degraded)
//! expect = { status = [200, 201], non_empty = true, require = ["/data/id"], contains = "ok" }
//!                                # output contract, each key optional; every extract pointer
//!                                # is required too; a 2xx that breaks it is a bad_answer
//!                                # (recoverable: retried, counted against the breaker)
//!
//! [[jobs.steps]]
//! name = "render"
//! kind = "command"
//! argv = ["./render.sh", "--fast"]   # non-empty; arguments may hold placeholders
//! cwd = "scripts"
//! env = { QUALITY = "high" }
//! timeout = "10m"                # default 10 min
//! credentials = ["google"]       # fresh tokens injected as ACCESS_TOKEN_<NAME>
//! ```
//!
//! Placeholders (`{{step.output}}`, `{{run.id}}`, `{{run.due}}`, `{{job.name}}`) are
//! checked in http URLs, header values and bodies and in command arguments; the URL
//! must parse once each placeholder is replaced by `x`.
//!
//! # Limits
//!
//! A file is at most 16 MiB ([`source::MAX_FILE_BYTES`]) of UTF-8. Names are at most
//! 64 characters ([`names::MAX_NAME_CHARS`]), time-zone names 64, cron expressions 256,
//! URLs 8 KiB. At most 100,000 jobs, 100 steps per job, 1,000 services, credentials or
//! windows, 64 headers or extracted outputs per step, 1,024 arguments or environment
//! variables per command. `every` is at least 1 s. Durations are at most a year and a
//! day. Reading is linear in the size of the file.

pub mod credentials;
pub mod diagnostic;
pub mod document;
pub mod duration;
pub mod jobs;
pub mod names;
pub mod patterns;
pub mod raw;
pub mod reader;
pub mod retry;
pub mod runner_settings;
pub mod schedule;
pub mod secret;
pub mod services;
pub mod source;
pub mod steps;
pub mod suggest;
pub mod template;
pub mod url;
pub mod windows;

use std::collections::BTreeMap;

pub use crate::db::CatchUp;
pub use credentials::{CredentialConfig, CredentialId};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use document::{ReadOptions, SECTIONS, parse_config, parse_document, read_config};
pub use jobs::{JobConfig, Overlap};
pub use patterns::{ClockMode, Jitter, Patterns, RetryMode};
pub use reader::{Reader, Table};
pub use retry::RetryPolicy;
pub use runner_settings::RunnerSettings;
pub use schedule::ScheduleConfig;
pub use services::{BreakerConfig, ServiceConfig, ServiceId};
pub use source::Source;
pub use steps::{CommandStep, Expect, HttpStep, StepConfig, StepKind};
pub use suggest::did_you_mean;
pub use template::{MissingValue, Template};
pub use url::Url;
pub use windows::WindowConfig;

pub use crate::schedule::Schedule;

/// Resolves `{ env = "NAME" }` and `{ file = "path" }` secret references while a
/// configuration is validated. The daemon passes its `OsSecrets`; the simulator passes
/// [`NoSecretSources`] (scenario secrets are inline).
pub trait SecretResolver {
    /// The value of environment variable `name`.
    fn env(&self, name: &str) -> Option<String>;
    /// The contents of `path` (already made absolute), trimmed by the caller.
    fn file(&self, path: &std::path::Path) -> std::io::Result<String>;
}

/// Resolves nothing: every `env`/`file` reference is reported as an error.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecretSources;

impl SecretResolver for NoSecretSources {
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
    fn file(&self, path: &std::path::Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("secret files are not available here ({})", path.display()),
        ))
    }
}

/// A validated runner configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Global settings.
    pub runner: RunnerSettings,
    /// Which self-healing patterns are on (all, in production).
    pub patterns: Patterns,
    /// The default retry policy; a job may override it.
    pub retry: RetryPolicy,
    /// Time windows per action type; an action without a window may run anytime.
    pub windows: BTreeMap<String, WindowConfig>,
    /// External services, by name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// OAuth2 credentials, by name.
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// The jobs, in file order.
    pub jobs: Vec<JobConfig>,
}

impl Config {
    /// The service a step's [`ServiceId`] names.
    ///
    /// # Panics
    ///
    /// When the id names no service of this configuration: the reader makes ids only
    /// for declared services, so only a configuration assembled by hand with a step
    /// naming a service it lacks gets here.
    pub fn service(&self, id: &ServiceId) -> &ServiceConfig {
        match self.services.get(id.as_str()) {
            Some(s) => s,
            None => panic!("service `{id}` is not in this configuration"),
        }
    }
}

#[cfg(test)]
mod tests;
