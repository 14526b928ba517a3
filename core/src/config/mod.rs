//! Configuration: TOML parsed in two stages.
//!
//! Stage one ([`raw`]) reads the file into spanned serde structs; stage two ([`validate`])
//! turns them into the validated types below, collecting every problem at once as a
//! [`Diagnostic`] naming the file, line, key path and a hint. Unknown keys are errors.
//! The simulator's scenario files embed the same sections and reuse this parser.

pub mod diagnostic;
pub mod duration;
pub mod raw;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use secrecy::SecretString;

pub use crate::db::CatchUp;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use validate::{did_you_mean, parse_config, parse_config_value};

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

/// `[runner]`: settings that apply to the whole daemon.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Where heartbeats, checkpoints, breakers and tokens live.
    pub state_dir: PathBuf,
    /// The IANA zone windows and cron schedules are read in.
    pub time_zone: Tz,
    /// How often the heartbeat monitor looks (default 60 s).
    pub monitor_interval: Duration,
    /// Resident memory above this is a warning finding (default 1 GiB).
    pub memory_warn_bytes: u64,
    /// Resident memory above this is fatal for new runs (default 2 GiB).
    pub memory_fatal_bytes: u64,
    /// Shutdown waits this long for running steps (default 30 s).
    pub shutdown_grace: Duration,
    /// A circuit breaker that has not closed for this long raises an alert (default 1 h).
    pub breaker_alert_after: Duration,
}

/// Pattern switches. Production keeps them all on; the simulator's profiles turn
/// them off to measure what each buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Patterns {
    /// Pattern 1: how failed calls are retried.
    pub retry: RetryMode,
    /// Pattern 1: the jitter of backoff delays.
    pub jitter: Jitter,
    /// Pattern 1: per-service retry budget.
    pub retry_budget: bool,
    /// Pattern 2: refresh tokens before they expire.
    pub proactive_refresh: bool,
    /// Pattern 3: heartbeat monitor.
    pub heartbeat: bool,
    /// Pattern 4: per-job error boundaries and degraded steps.
    pub isolation: bool,
    /// Pattern 5: checkpoints and idempotency keys.
    pub checkpoints: bool,
    /// Pattern 6: time windows.
    pub windows: bool,
    /// Pattern 7: circuit breakers.
    pub breakers: bool,
}

impl Patterns {
    /// Every pattern on: the self-healing profile and the production default.
    pub const ALL: Self = Self {
        retry: RetryMode::Backoff,
        jitter: Jitter::Full,
        retry_budget: true,
        proactive_refresh: true,
        heartbeat: true,
        isolation: true,
        checkpoints: true,
        windows: true,
        breakers: true,
    };

    /// What the field report started with: a failure is logged and the job "will retry
    /// next cycle" (its `run_engine`), tokens are refreshed only after a 401, and
    /// nothing else.
    pub const NAIVE: Self = Self {
        retry: RetryMode::Off,
        jitter: Jitter::None,
        retry_budget: false,
        proactive_refresh: false,
        heartbeat: false,
        isolation: false,
        checkpoints: false,
        windows: false,
        breakers: false,
    };
}

impl Default for Patterns {
    fn default() -> Self {
        Self::ALL
    }
}

/// How failed calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// Never retry.
    Off,
    /// Retry at once, up to the attempt limit (the naive habit).
    Immediate,
    /// Exponential backoff with jitter.
    Backoff,
}

/// The jitter applied to exponential backoff (AWS "Exponential Backoff And Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// `min(cap, base * 2^n)`.
    None,
    /// Half fixed, half random.
    Equal,
    /// Uniform in `[0, min(cap, base * 2^n)]` (the default).
    Full,
    /// `min(cap, uniform(base, prev * 3))`.
    Decorrelated,
}

/// `[retry]`: how a step's failures are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per step, including the first (default 5).
    pub max_attempts: u32,
    /// First backoff step (default 1 s).
    pub base: Duration,
    /// Largest backoff (default 60 s).
    pub cap: Duration,
    /// Largest `Retry-After` honoured; longer waits give up on this run (default 15 min).
    pub retry_after_cap: Duration,
    /// Retries may be at most this share of calls per service (default 0.2).
    pub budget_ratio: f64,
    /// Retries always allowed per service per budget window regardless of ratio (default 10).
    pub budget_min_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(15 * 60),
            budget_ratio: 0.2,
            budget_min_retries: 10,
        }
    }
}

/// `[windows.<action>]`: when actions of one type may run, in the runner's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Opens at this local time.
    pub start: NaiveTime,
    /// Closes at this local time (may be before `start`: the window spans midnight).
    pub end: NaiveTime,
}

/// `[services.<name>]`: an external API.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The service's name.
    pub name: String,
    /// A URL probed by the heartbeat monitor (GET, 2xx = healthy).
    pub health_url: Option<Url>,
    /// One call's timeout (connect + response), default 30 s.
    pub call_timeout: Duration,
    /// Breaker settings.
    pub breaker: BreakerConfig,
}

/// Circuit-breaker settings of one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 3).
    pub failure_threshold: u32,
    /// Failure rate over the window that opens it (default 0.5).
    pub failure_rate: f64,
    /// Calls in the rate window (default 20; the rate rule needs at least this many).
    pub window_calls: u32,
    /// First open period (default 300 s).
    pub cooldown: Duration,
    /// Largest open period after repeated trips (default 3600 s).
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            failure_rate: 0.5,
            window_calls: 20,
            cooldown: Duration::from_secs(300),
            max_cooldown: Duration::from_secs(3600),
        }
    }
}

/// `[credentials.<name>]`: an OAuth2 refresh-token credential.
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    /// The credential's name (used in logs; its values never are).
    pub name: String,
    /// The token endpoint.
    pub token_url: Url,
    /// The OAuth2 client id.
    pub client_id: String,
    /// The client secret, if the endpoint needs one.
    pub client_secret: Option<SecretString>,
    /// The first refresh token (later ones are rotated into the state dir).
    pub refresh_token: SecretString,
    /// Refresh when expiry is this close (default 5 min).
    pub skew: Duration,
    /// Optional scope.
    pub scope: Option<String>,
}

/// `[[jobs]]`: a scheduled sequence of steps.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// Unique job name.
    pub name: String,
    /// When it runs.
    pub schedule: ScheduleConfig,
    /// A random delay in `[0, start_jitter]` added to each due time.
    pub start_jitter: Duration,
    /// What to do when a run is due while the previous one still runs.
    pub overlap: Overlap,
    /// What to do with slots that passed while the runner was not running.
    pub catch_up: CatchUp,
    /// Missed slots older than this are recorded missed, never run (default 6 h).
    pub catch_up_window: Duration,
    /// A run is abandoned after this long (default: the interval, at most 1 h).
    pub deadline: Duration,
    /// Overdue after this long without success (default 2x interval).
    pub heartbeat_threshold: Duration,
    /// Overrides of the global retry policy.
    pub retry: Option<RetryPolicy>,
    /// The steps, in order.
    pub steps: Vec<StepConfig>,
}

/// A schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleConfig {
    /// Every fixed interval, counted from the Unix epoch so restarts keep the grid.
    Every(Duration),
    /// A cron expression (5 or 6 fields) in the runner's zone.
    Cron(String),
}

/// Overlap policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Skip a due run while the previous one runs (default).
    Skip,
    /// Run it right after the previous one ends (at most one queued).
    Queue,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// Unique within the job.
    pub name: String,
    /// Action type (for time windows), e.g. `publish` or `research`.
    pub action: Option<String>,
    /// What the step does.
    pub kind: StepKind,
}

/// The kinds of step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// An HTTP call.
    Http(HttpStep),
    /// A local command.
    Command(CommandStep),
}

/// An HTTP call.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpStep {
    /// Method, e.g. `GET`.
    pub method: String,
    /// URL; may contain `{{step.key}}` placeholders filled from earlier outputs.
    pub url: String,
    /// Headers, in order; values may contain placeholders.
    pub headers: Vec<(String, String)>,
    /// Body; may contain placeholders.
    pub body: Option<String>,
    /// The service it calls (breaker, budget, timeout).
    pub service: String,
    /// The credential whose bearer token it sends.
    pub credential: Option<String>,
    /// Values to keep from a JSON response: output name -> JSON pointer.
    pub extract: BTreeMap<String, String>,
}

/// A local command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandStep {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Timeout (default 10 min).
    pub timeout: Duration,
    /// Credentials whose fresh access tokens are injected as `ACCESS_TOKEN_<NAME>`.
    pub credentials: Vec<String>,
}

/// A parsed absolute `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`?
    pub tls: bool,
    /// Host name.
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

impl Url {
    /// Parses an absolute http(s) URL; the error is a lowercase fragment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("invalid url: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("unsupported scheme `{other}`")),
            None => return Err("url has no scheme".to_string()),
        };
        let host = uri
            .host()
            .ok_or_else(|| "url has no host".to_string())?
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(Self {
            tls,
            host,
            port,
            path_and_query,
        })
    }

    /// The connector target.
    pub fn target(&self) -> crate::env::Target {
        crate::env::Target {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls,
        }
    }

    /// `host` or `host:port` for the `Host` header.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parses_parts_and_defaults() {
        let u = Url::parse("https://api.example.com/v1/x?y=1").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 443);
        assert_eq!(u.path_and_query, "/v1/x?y=1");
        assert_eq!(u.to_string(), "https://api.example.com/v1/x?y=1");
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.port, u.path_and_query.as_str()), (8080, "/"));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("/relative").is_err());
    }
}
