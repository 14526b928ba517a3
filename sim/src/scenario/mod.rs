//! Scenario files: a world, its services, the runner's jobs, faults and invariants.
//!
//! A scenario is one TOML file. The runner's own sections (`[runner]`, `[retry]`,
//! `[windows]`, `[services.*]`, `[credentials.*]`, `[[jobs]]`) are read by the runner's
//! configuration reader, unchanged, in the world's zone; the simulator's sections below
//! are read through the same reader ([`steadfast_core::config::Table`]), in the same pass:
//!
//! ```toml
//! [world]
//! start = "2026-03-02T08:00:00"   # local date-time in `zone`
//! zone = "America/New_York"
//! duration = "2d"
//! tick = "60s"                   # 1ms to 1h
//! seed = 1                        # the default seed; `--seed` overrides it
//! memory_base_mb = 200            # resident memory after a start
//! memory_limit_mb = 4096          # above this the process is killed (OOM)
//! supervisor_delay = "10s"        # how long a supervisor takes to restart the runner
//!
//! [operator]                      # the human
//! alert_response = "2h"           # an alert is fixed this long after it is raised
//! checks = ["09:00", "21:00"]     # local times the operator looks without an alert
//!
//! [oauth.google]                  # a token server at google.sim
//! expires_in = "1h"
//! rotate = true
//! reuse_grace = "60s"             # a rotated-out refresh token still works this long
//!
//! [apis.youtube]                  # an API at youtube.sim (the runner's service `youtube`)
//! rate_per_minute = 30
//! daily_quota = 500
//! latency = "150ms"
//! path_latency = { "/v1/upload" = "15m" }  # a long step's own latency (at most 6h)
//! auth = "google"                 # tokens are checked against this token server
//!
//! [profile]
//! name = "self-healing"           # see `profile::ALL`; `--profile` overrides it
//!
//! [[faults]]
//! kind = "reset"                  # see `FaultSpecKind`
//! target = "youtube"
//! at = "6h"                       # first onset, from the start
//! every = "1d"                    # optional recurrence
//! duration = "30m"
//! probability = 0.5
//!
//! [[faults]]
//! kind = "bad_answer"             # a 200 the client cannot use; the request was handled
//! target = "blog"
//! shape = "wrong_shape"           # empty | truncated | not_json | wrong_shape (the answer
//!                                 # moved under "data": a later step's extract misses)
//! probability = 0.3
//! stall = "20s"                   # optional: held back this long first
//!
//! [[faults]]
//! kind = "rate_limit_storm"
//! target = "youtube"
//! retry_after = "2m"
//! retry_after_date = true         # Retry-After as an HTTP date, not seconds
//!
//! [[faults]]
//! kind = "quota_exhaust"          # 429 quota_exceeded until the reset, Retry-After = it
//! target = "youtube"
//! at = "3h"
//! duration = "45m"                # the reset; without it, the next local midnight
//!
//! [[faults]]
//! kind = "api_token_revoke"       # this API alone rejects tokens issued before `at`
//! target = "youtube"              # (401 invalid_token) until the client refreshes
//! at = "5h"
//!
//! [[faults]]
//! kind = "crash"                  # the runner dies: what was not durable is lost
//! target = "runner"
//! at = "4h 31m 7s 250ms"          # any instant, to the millisecond (inside a tick too)
//! restart_after = "5m"
//!
//! [[faults]]
//! kind = "crash"
//! target = "runner"
//! at = "2h"                       # from this instant on, count durable operations
//! after_durable_ops = 37          # the 37th store commit or file write/sync/rename/remove
//!                                 # happens, then the process dies before it returns
//! # before_durable_op = 37        # or: the 37th does not happen, the process dies first
//! restart_after = "30s"
//!
//! [[faults]]
//! kind = "clock_step"             # or "sleep" (the host sleeps `duration`)
//! target = "runner"
//! at = "4h"
//! duration = "1h"
//! backward = true                 # clock_step only: step back, not forward
//!
//! [invariants]
//! max_lost_task_rate = 0.02
//! recovery_bound = "2h"
//!
//! [calibration]                   # intensities fitted by `sim calibrate` (see calibrate)
//! network_scale = 1.0             # x every reset, stall and server_error probability (0-100, capped at 1)
//! leak_scale = 1.0                # x every memory_leak rate (0-1000)
//! storm_scale = 1.0               # x how often rate_limit_storm faults recur (0-1000; 0: none)
//! ```
//!
//! Crashes: a `crash` whose `at` falls on a tick boundary (the tick counted from `start`)
//! lands between ticks, before anything due at that instant runs; any other `at` lands at
//! that exact instant inside the tick. A crash at a durable operation lands inside
//! whatever sequence of commits and file operations the runner was in (a step's commit,
//! then the run's finish). From the crash on, the dead process reaches no service and
//! completes no durable operation; the driver then drops the host and the disk loses what
//! was not durable. A `restart_after` counts from the crash itself. Network and service
//! faults (`reset`, `stall`, `server_error`, `dns`, `slow`, `partition`, `down`,
//! `rate_limit_storm`, `bad_answer`, a service's `silent_death`) and `token_revoke` start
//! and end at their exact instant too. The rest (`refresh_revoke`, `quota_exhaust`,
//! `api_token_revoke`, `memory_leak`, `disk_full`, `sleep`, `clock_step`) land on the
//! first tick boundary at or after their instant.
//!
//! Every problem in the file is reported at once with file:line:col, key path and hint.
//! Limits: `tick` is 1 ms to 1 h; `start` must exist in `zone` (not inside a
//! daylight-saving gap); a world whose runs would write more events than the trace keeps
//! (`steadfast_core::event::DEFAULT_MEMORY_SINK_LIMIT`, the world's default) is refused, since its later runs would count as lost.

pub mod profile;
pub mod swarm;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use steadfast_core::config::raw::{RawKind, RawValue, Span};
use steadfast_core::config::runner_settings::time_zone;
use steadfast_core::config::{
    Config, Diagnostic, Diagnostics, NoSecretSources, ReadOptions, Reader, SECTIONS, Source, Table,
    did_you_mean, parse_document, read_config,
};

pub use crate::faults::BadShape;
pub use profile::Profile;
pub use swarm::SwarmSpec;

/// The sections the simulator reads itself.
const SIM_SECTIONS: [&str; 9] = [
    "calibration",
    "world",
    "operator",
    "oauth",
    "apis",
    "profile",
    "faults",
    "swarm",
    "invariants",
];

/// The default scenario, embedded so `sim run` works with no file.
pub const DEFAULT_NAME: &str = "default";
/// Its text.
pub const DEFAULT_TEXT: &str = include_str!("../../../scenarios/default.toml");

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (the file stem).
    pub name: String,
    /// The file it came from (`None` for the embedded default).
    pub file: Option<PathBuf>,
    /// The world.
    pub world: WorldSpec,
    /// The human.
    pub operator: OperatorSpec,
    /// Token servers by name (host `<name>.sim`).
    pub oauth: BTreeMap<String, OAuthSpec>,
    /// APIs by name (host `<name>.sim`; the runner's service of the same name).
    pub apis: BTreeMap<String, ApiSpec>,
    /// The profile the scenario asks for.
    pub profile: Profile,
    /// The fault timeline.
    pub faults: Vec<FaultSpec>,
    /// Faults the seed draws on top of the timeline (`[swarm]`), if any.
    pub swarm: Option<SwarmSpec>,
    /// What must hold.
    pub invariants: InvariantSpec,
    /// Fault intensities fitted to the field report (`[calibration]`, default 1).
    pub calibration: CalibrationSpec,
    /// The runner's configuration (its patterns are replaced by the profile's).
    pub config: Config,
}

/// `[world]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldSpec {
    /// When the world starts.
    pub start: DateTime<Utc>,
    /// The world's zone (the runner's too).
    pub zone: Tz,
    /// How long it runs.
    pub duration: Duration,
    /// turmoil's tick.
    pub tick: Duration,
    /// The default seed.
    pub seed: u64,
    /// Resident bytes after a start.
    pub memory_base_bytes: u64,
    /// Above this the process is killed.
    pub memory_limit_bytes: u64,
    /// A supervisor restarts a dead runner after this long.
    pub supervisor_delay: Duration,
}

/// `[operator]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorSpec {
    /// An alert is fixed this long after it is raised.
    pub alert_response: Duration,
    /// Local times of day the operator looks at the system unprompted.
    pub checks: Vec<NaiveTime>,
}

/// `[oauth.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthSpec {
    /// Access token lifetime.
    pub expires_in: Duration,
    /// Rotate refresh tokens on every refresh.
    pub rotate: bool,
    /// How long a rotated-out refresh token is still accepted (default 60 s).
    pub reuse_grace: Duration,
}

/// `[apis.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSpec {
    /// Requests per minute per client.
    pub rate_per_minute: Option<u32>,
    /// Requests per day per client (resets at local midnight).
    pub daily_quota: Option<u32>,
    /// Base latency of every answer.
    pub latency: Duration,
    /// Paths (without query) whose answers take their own time: long steps such as a
    /// render, an upload or a browser session (`path_latency = { "/v1/render" = "12m" }`).
    pub path_latency: BTreeMap<String, Duration>,
    /// The token server that checks bearer tokens.
    pub auth: Option<String>,
}

/// The kinds of fault a scenario can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultSpecKind {
    /// Revoke a token server's access tokens early (`target` = token server).
    TokenRevoke,
    /// Revoke refresh tokens too: `invalid_grant` until a human re-authorises.
    RefreshRevoke,
    /// Every request gets 429 with `retry_after`.
    RateLimitStorm,
    /// Connections reset after the request is read (with `probability`).
    Reset,
    /// Answers are held back for `stall` (with `probability`); the request is handled.
    Stall,
    /// Requests fail with `status` (with `probability`).
    ServerError,
    /// The host name does not resolve.
    Dns,
    /// Answers take `latency` longer.
    Slow,
    /// The host is unreachable (connects hang).
    Partition,
    /// The host refuses connections.
    Down,
    /// The runner leaks `leak_mb_per_hour` from the onset.
    MemoryLeak,
    /// The runner's disk is full.
    DiskFull,
    /// The runner crashes (unsynced writes are lost) and restarts after `restart_after`.
    Crash,
    /// `target = "runner"`: the process dies without a word and nobody restarts it
    /// (only a supervisor or a human will). `target = <api>`: the API accepts calls and
    /// never answers, so a client without timeouts hangs forever.
    SilentDeath,
    /// With `probability`, the API handles a request and answers 200 with a body of
    /// `shape` (`empty`, `truncated`, `not_json`, `wrong_shape`), after `stall` if set.
    BadAnswer,
    /// The API refuses every request 429 `quota_exceeded` until the reset (`duration`
    /// after the onset; without one, the next local midnight), its `Retry-After` that
    /// reset (`retry_after_date = true`: as an HTTP date).
    QuotaExhaust,
    /// The API alone rejects every access token issued before the onset (401
    /// `invalid_token`) until the client refreshes; other APIs still accept them.
    ApiTokenRevoke,
    /// The runner's host sleeps for `duration` (the world's wall clock jumps, the
    /// host's monotonic time does not; see [`crate::sleep`]).
    Sleep,
    /// The runner host's wall clock steps by `duration` (back with `backward = true`).
    ClockStep,
}

impl FaultSpecKind {
    const ALL: [(&'static str, Self); 19] = [
        ("token_revoke", Self::TokenRevoke),
        ("refresh_revoke", Self::RefreshRevoke),
        ("rate_limit_storm", Self::RateLimitStorm),
        ("reset", Self::Reset),
        ("stall", Self::Stall),
        ("server_error", Self::ServerError),
        ("dns", Self::Dns),
        ("slow", Self::Slow),
        ("partition", Self::Partition),
        ("down", Self::Down),
        ("memory_leak", Self::MemoryLeak),
        ("disk_full", Self::DiskFull),
        ("crash", Self::Crash),
        ("silent_death", Self::SilentDeath),
        ("bad_answer", Self::BadAnswer),
        ("quota_exhaust", Self::QuotaExhaust),
        ("api_token_revoke", Self::ApiTokenRevoke),
        ("sleep", Self::Sleep),
        ("clock_step", Self::ClockStep),
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("unknown")
    }

    fn targets_runner(self) -> bool {
        matches!(
            self,
            Self::MemoryLeak | Self::DiskFull | Self::Crash | Self::Sleep | Self::ClockStep
        )
    }

    fn targets_oauth(self) -> bool {
        matches!(self, Self::TokenRevoke | Self::RefreshRevoke)
    }

    fn targets_api_only(self) -> bool {
        matches!(self, Self::QuotaExhaust | Self::ApiTokenRevoke)
    }
}

/// One `[[faults]]` entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FaultSpec {
    /// What.
    pub kind: FaultSpecKind,
    /// An API, a token server, or `runner`.
    pub target: String,
    /// First onset, from the world's start.
    pub at: Duration,
    /// Recurrence period, if any.
    pub every: Option<Duration>,
    /// How long each onset lasts (zero: instantaneous).
    pub duration: Duration,
    /// Per-request probability (reset, stall, server_error).
    pub probability: f64,
    /// Stall length.
    pub stall: Duration,
    /// Extra latency (slow).
    pub latency: Duration,
    /// Status of injected errors.
    pub status: u16,
    /// `Retry-After` of a 429 storm.
    pub retry_after: Duration,
    /// `Retry-After` as an HTTP date (rate_limit_storm, quota_exhaust).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retry_after_date: bool,
    /// What a bad answer's body looks like (bad_answer, where it is required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<BadShape>,
    /// A crashed runner restarts after this long.
    pub restart_after: Duration,
    /// Leak rate (memory_leak), bytes per hour.
    pub leak_bytes_per_hour: u64,
    /// `crash` only: die at a durable operation counted from `at`, not at `at` itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_point: Option<CrashPoint>,
    /// A `clock_step` goes back by `duration` rather than forward.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backward: bool,
}

/// Where a `crash` lands in the runner's durable operations (store commits and file
/// writes, syncs, renames and removes, as the testkit's `CrashPoints` count them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CrashPoint {
    /// The operation's number, counted from 1 at the fault's onset.
    pub op: u64,
    /// Whether the operation happened (`after_durable_ops`) or not (`before_durable_op`).
    pub after: bool,
}

/// `[calibration]`: scales on the world's fault intensities that the field report does
/// not state, fitted by `sim calibrate` to the report's "before" column. They apply to
/// every fault of the world when it runs ([`Scenario::calibrated_faults`]); the faults
/// as written stay as they are, so writing a scenario back never scales twice.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CalibrationSpec {
    /// Multiplies the probability of every `reset`, `stall` and `server_error` fault
    /// (capped at 1): how flaky the network and the services are.
    pub network_scale: f64,
    /// Multiplies every `memory_leak` rate: how soon a long-lived process runs out of
    /// memory.
    pub leak_scale: f64,
    /// Multiplies how often every recurring `rate_limit_storm` happens (its `every` is
    /// divided by it, and kept longer than its `duration`); 0 turns storms off.
    pub storm_scale: f64,
}

impl Default for CalibrationSpec {
    fn default() -> Self {
        Self {
            network_scale: 1.0,
            leak_scale: 1.0,
            storm_scale: 1.0,
        }
    }
}

impl CalibrationSpec {
    /// The largest `network_scale`.
    pub const MAX_NETWORK_SCALE: f64 = 100.0;
    /// The largest `leak_scale` and `storm_scale`.
    pub const MAX_SCALE: f64 = 1000.0;

    /// `fault` with these intensities applied.
    pub fn apply(&self, fault: &FaultSpec) -> Option<FaultSpec> {
        let mut f = fault.clone();
        match f.kind {
            FaultSpecKind::Reset | FaultSpecKind::Stall | FaultSpecKind::ServerError => {
                f.probability = (f.probability * self.network_scale).clamp(0.0, 1.0);
            }
            FaultSpecKind::MemoryLeak => {
                f.leak_bytes_per_hour = (f.leak_bytes_per_hour as f64 * self.leak_scale) as u64;
            }
            FaultSpecKind::RateLimitStorm => {
                if self.storm_scale <= 0.0 {
                    return None;
                }
                if let Some(every) = f.every {
                    let floor = f.duration + Duration::from_secs(60);
                    f.every = Some(every.div_f64(self.storm_scale).max(floor));
                }
            }
            _ => {}
        }
        Some(f)
    }
}

/// `[invariants]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InvariantSpec {
    /// Largest acceptable lost-task rate.
    pub max_lost_task_rate: f64,
    /// Largest acceptable number of duplicate side effects.
    pub max_duplicate_side_effects: u64,
    /// Largest acceptable number of actions outside their window.
    pub max_window_violations: u64,
    /// Largest acceptable number of calls to a service whose breaker is open.
    pub max_calls_to_open_breaker: u64,
    /// Largest acceptable number of calls made with an expired token.
    pub max_token_expired_errors: u64,
    /// After the last fault heals, every job must succeed within this bound.
    pub recovery_bound: Duration,
}

impl Default for InvariantSpec {
    fn default() -> Self {
        Self {
            max_lost_task_rate: 0.02,
            max_duplicate_side_effects: 0,
            max_window_violations: 0,
            max_calls_to_open_breaker: 0,
            max_token_expired_errors: 0,
            recovery_bound: Duration::from_secs(2 * 3600),
        }
    }
}

impl Scenario {
    /// The embedded default scenario.
    pub fn default_scenario() -> Self {
        match Self::parse(DEFAULT_TEXT, Path::new("scenarios/default.toml"), None) {
            Ok(s) => Self {
                name: DEFAULT_NAME.to_string(),
                ..s
            },
            // The default is checked by a test; a broken one is a build defect.
            Err(d) => panic!("the embedded default scenario is invalid:\n{d}"),
        }
    }

    /// Reads and parses a scenario file (bounded in size, UTF-8 checked).
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let file = std::fs::File::open(path).map_err(|e| {
            Diagnostics(vec![
                Diagnostic::at_offset(path, "", None, "", format!("failed to read: {e}"))
                    .hint("check the path; scenarios live in scenarios/"),
            ])
        })?;
        let source = Source::read(path, file)?;
        Self::from_source(&source, Some(path.to_path_buf()))
    }

    /// Parses scenario text; `file` names it in diagnostics.
    pub fn parse(text: &str, file: &Path, source: Option<PathBuf>) -> Result<Self, Diagnostics> {
        Self::from_source(&Source::new(file, text)?, source)
    }

    /// Reads every section with the core's one reader: the runner's sections (cron
    /// schedules in the world's zone, which the runner runs in) and the simulator's.
    fn from_source(src: &Source, origin: Option<PathBuf>) -> Result<Self, Diagnostics> {
        let doc = parse_document(src)?;
        let reader = Reader::new(src, &NoSecretSources);
        let keys = [SECTIONS, &SIM_SECTIONS].concat();
        let top = reader.table(&doc, "", &keys);
        top.finish();
        let world = match top.table("world", WORLD_KEYS) {
            Some(t) => read_world(&t),
            None => {
                if top.entry("world").is_none() {
                    reader.report(
                        Some(0),
                        "world",
                        "missing section",
                        Some("add [world] with start, zone and duration".to_string()),
                    );
                }
                WorldRead::default()
            }
        };
        let zone = world.zone.unwrap_or(Tz::UTC);
        let config = read_config(&top, ReadOptions { zone: Some(zone) });
        let operator = top
            .table("operator", &["alert_response", "checks"])
            .map_or_else(OperatorSpec::default, |t| read_operator(&t));
        let oauth: BTreeMap<String, OAuthSpec> = top
            .named_tables(
                "oauth",
                "token server name",
                MAX_SERVERS,
                &["expires_in", "rotate", "reuse_grace"],
                "write it as an [oauth.NAME] section",
            )
            .into_iter()
            .map(|(name, _, t)| (name.to_string(), read_oauth(&t)))
            .collect();
        let apis: BTreeMap<String, ApiSpec> = top
            .named_tables(
                "apis",
                "API name",
                MAX_SERVERS,
                &[
                    "rate_per_minute",
                    "daily_quota",
                    "latency",
                    "path_latency",
                    "auth",
                ],
                "write it as an [apis.NAME] section",
            )
            .into_iter()
            .map(|(name, _, t)| (name.to_string(), read_api(&t)))
            .collect();
        let profile = match top.table("profile", &["name"]) {
            None => Profile::named("self-healing"),
            Some(t) => read_profile(&t),
        };
        // Each fault with its index in the file, for messages about it.
        let faults: Vec<(usize, FaultSpec)> = top
            .array_of_tables(
                "faults",
                MAX_FAULTS,
                FAULT_KEYS,
                "write each fault as a [[faults]] section",
            )
            .map(|(_, tables)| {
                tables
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| Some((i, read_fault(t.as_ref()?)?)))
                    .collect()
            })
            .unwrap_or_default();
        let swarm = top
            .table("swarm", &["kinds", "presence"])
            .map(|t| read_swarm(&t));
        let invariants = top
            .table("invariants", INVARIANT_KEYS)
            .map_or_else(InvariantSpec::default, |t| read_invariants(&t));
        let calibration = top
            .table("calibration", CALIBRATION_KEYS)
            .map_or_else(CalibrationSpec::default, |t| read_calibration(&t));
        if let Some(config) = &config {
            check_references(&top, config, &oauth, &apis, &faults);
            if let Some(world) = &world.spec {
                check_trace_limit(&top, config, world);
            }
        }
        let name = src
            .file()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_NAME.to_string());
        let scenario = match (config, world.spec, profile) {
            (Some(config), Some(world), Some(profile)) => Some(Self {
                name,
                file: origin,
                world,
                operator,
                oauth,
                apis,
                profile,
                faults: faults.into_iter().map(|(_, f)| f).collect(),
                swarm,
                invariants,
                calibration,
                config,
            }),
            _ => None,
        };
        reader.finish(scenario)
    }

    /// The runner configuration for a profile: the profile's patterns, the world's
    /// zone, no call timeouts where the profile has none, and the profile's fixed
    /// attempt count where it has one (for every job, overrides included).
    pub fn runner_config(&self, profile: &Profile) -> Config {
        let mut config = self.config.clone();
        config.patterns = profile.patterns;
        if let Some(attempts) = profile.max_attempts {
            config.retry.max_attempts = attempts;
            for job in &mut config.jobs {
                if let Some(retry) = &mut job.retry {
                    retry.max_attempts = attempts;
                }
            }
        }
        config.runner.time_zone = self.world.zone;
        config.runner.state_dir = PathBuf::from("/state");
        if !profile.call_timeouts {
            for s in config.services.values_mut() {
                // `requests.get(url)` without a timeout: a day stands in for forever.
                s.call_timeout = Duration::from_secs(24 * 3600);
            }
        }
        config
    }

    /// The faults as the world runs them: [`Self::faults`] with `[calibration]` applied.
    pub fn calibrated_faults(&self) -> Vec<FaultSpec> {
        self.faults
            .iter()
            .filter_map(|f| self.calibration.apply(f))
            .collect()
    }

    /// When the last fault has healed (the liveness phase starts), from the start.
    pub fn faults_heal_at(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| {
                if f.every.is_some() {
                    self.world.duration
                } else {
                    f.at + f.duration.max(f.restart_after)
                }
            })
            .max()
            .unwrap_or_default()
    }
}

/// At most this many token servers, and as many APIs.
const MAX_SERVERS: usize = 100;
/// At most this many `[[faults]]`.
const MAX_FAULTS: usize = 10_000;
/// The finest tick: turmoil steps the world in ticks, and a finer one only costs time.
const MIN_TICK: Duration = Duration::from_millis(1);
/// The coarsest tick.
const MAX_TICK: Duration = Duration::from_secs(3600);

const WORLD_KEYS: &[&str] = &[
    "start",
    "zone",
    "duration",
    "tick",
    "seed",
    "memory_base_mb",
    "memory_limit_mb",
    "supervisor_delay",
];

/// `[world]` as far as it could be read: its zone on its own, so the runner's
/// sections can be read in it even when another world key is wrong.
#[derive(Debug, Default)]
struct WorldRead {
    zone: Option<Tz>,
    spec: Option<WorldSpec>,
}

fn read_world(t: &Table<'_>) -> WorldRead {
    t.finish();
    let zone = match t.entry("zone") {
        None => Some(Tz::UTC),
        Some(_) => time_zone(t, "zone"),
    };
    let start = world_start(t, zone);
    if t.entry("duration").is_none() {
        t.missing("duration", "duration = \"2d\"");
    }
    let duration = t.positive_duration("duration").map(|(d, _)| d);
    let tick = match t.entry("tick") {
        None => Some(Duration::from_secs(60)),
        Some(_) => t
            .duration_in("tick", MIN_TICK, MAX_TICK, "60s is a good tick")
            .map(|(d, _)| d),
    };
    let seed = t.u64_to("seed", u64::MAX >> 1).unwrap_or(1);
    let mb = 1024 * 1024;
    let base = t.u64_to("memory_base_mb", 1 << 20).unwrap_or(200) * mb;
    let limit = t.u64_to("memory_limit_mb", 1 << 20).unwrap_or(4096) * mb;
    let supervisor_delay = t
        .duration("supervisor_delay")
        .map_or(Duration::from_secs(10), |(d, _)| d);
    let spec = (|| {
        Some(WorldSpec {
            start: start?,
            zone: zone?,
            duration: duration?,
            tick: tick?,
            seed,
            memory_base_bytes: base,
            memory_limit_bytes: limit,
            supervisor_delay,
        })
    })();
    WorldRead { zone, spec }
}

/// `start`: a local date-time that exists in `zone` (one inside a spring-forward gap
/// used to stop the program with exit 2 and no word).
fn world_start(t: &Table<'_>, zone: Option<Tz>) -> Option<DateTime<Utc>> {
    const HINT: &str = "write it as \"2026-03-02T08:00:00\" (local time in `zone`)";
    if t.entry("start").is_none() {
        t.missing(
            "start",
            "start = \"2026-03-02T08:00:00\" (local time in `zone`)",
        );
        return None;
    }
    let (text, span) = t.short_string("start", 64, HINT)?;
    let naive = match NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        Ok(n) => n,
        Err(e) => {
            t.error_hint(&span, "start", format!("invalid date-time: {e}"), HINT);
            return None;
        }
    };
    let zone = zone?;
    match zone.from_local_datetime(&naive).earliest() {
        Some(at) => Some(at.with_timezone(&Utc)),
        None => {
            t.error_hint(
                &span,
                "start",
                format!(
                    "`{text}` does not exist in {zone}: the clocks skip it (a daylight-saving gap)"
                ),
                "start an hour later, or before the change",
            );
            None
        }
    }
}

impl Default for OperatorSpec {
    fn default() -> Self {
        Self {
            alert_response: Duration::from_secs(2 * 3600),
            checks: vec![NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default()],
        }
    }
}

/// At most this many unprompted looks a day.
const MAX_CHECKS: usize = 100;

fn read_operator(t: &Table<'_>) -> OperatorSpec {
    t.finish();
    let d = OperatorSpec::default();
    let alert_response = t
        .duration("alert_response")
        .map_or(d.alert_response, |(d, _)| d);
    let checks = match t.entry("checks") {
        None => d.checks,
        Some(e) => match &e.value.kind {
            RawKind::Array(items) if items.len() > MAX_CHECKS => {
                t.error(
                    &e.value.span,
                    "checks",
                    format!("{} checks, more than the {MAX_CHECKS} allowed", items.len()),
                );
                d.checks
            }
            RawKind::Array(items) => {
                let mut checks: Vec<NaiveTime> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| t.time_value(item, &format!("checks[{i}]")))
                    .collect();
                checks.sort();
                checks
            }
            _ => {
                t.wrong_type(
                    e,
                    "an array of local times",
                    Some("checks = [\"09:00\", \"21:00\"]"),
                );
                d.checks
            }
        },
    };
    OperatorSpec {
        alert_response,
        checks,
    }
}

fn read_oauth(t: &Table<'_>) -> OAuthSpec {
    t.finish();
    OAuthSpec {
        expires_in: t
            .positive_duration("expires_in")
            .map_or(Duration::from_secs(3600), |(d, _)| d),
        rotate: t.boolean("rotate").unwrap_or(true),
        // Providers that rotate refresh tokens keep a short reuse interval so a client
        // whose answer was lost in transit can retry; "0s" models a strict one.
        reuse_grace: t
            .duration("reuse_grace")
            .map_or(Duration::from_secs(60), |(d, _)| d),
    }
}

fn read_api(t: &Table<'_>) -> ApiSpec {
    t.finish();
    ApiSpec {
        rate_per_minute: t.u32_in("rate_per_minute", 0, 1_000_000),
        daily_quota: t.u32_in("daily_quota", 0, 100_000_000),
        latency: t
            .duration("latency")
            .map_or(Duration::from_millis(100), |(d, _)| d),
        path_latency: read_path_latency(t),
        auth: t.string("auth").map(|(a, _)| a.to_string()),
    }
}

/// At most this many paths with their own latency per API.
const MAX_PATH_LATENCIES: usize = 100;
/// The longest latency of one answer: a step longer than this is a stuck call, which
/// the `stall` and `silent_death` faults model.
const MAX_LATENCY: Duration = Duration::from_secs(6 * 3600);

/// `path_latency = { "/v1/render" = "12m", ... }`: each key a path starting with `/`,
/// each value a duration of at most [`MAX_LATENCY`].
fn read_path_latency(t: &Table<'_>) -> BTreeMap<String, Duration> {
    const HINT: &str = "write it as path_latency = { \"/v1/render\" = \"12m\" }";
    let mut out = BTreeMap::new();
    let Some(e) = t.entry("path_latency") else {
        return out;
    };
    let RawKind::Table(paths) = &e.value.kind else {
        t.wrong_type(e, "a table of path = duration", Some(HINT));
        return out;
    };
    let reader = t.reader();
    let key = t.key("path_latency");
    if paths.entries.len() > MAX_PATH_LATENCIES {
        reader.error_hint(
            &e.key_span,
            &key,
            format!(
                "{} paths, more than the {MAX_PATH_LATENCIES} allowed",
                paths.entries.len()
            ),
            "give only the long steps their own latency",
        );
        return out;
    }
    for entry in &paths.entries {
        let path = format!("{key}.\"{}\"", entry.key);
        if !entry.key.starts_with('/') || entry.key.contains('?') {
            reader.error_hint(
                &entry.key_span,
                &path,
                "must be a path starting with `/`, without a query",
                HINT,
            );
            continue;
        }
        let RawKind::String(text) = &entry.value.kind else {
            reader.error_hint(
                &entry.value.span,
                &path,
                format!(
                    "must be a duration string, not {}",
                    entry.value.kind.type_name()
                ),
                HINT,
            );
            continue;
        };
        match steadfast_core::config::duration::parse(text) {
            Ok(d) if d <= MAX_LATENCY => {
                out.insert(entry.key.clone(), d);
            }
            Ok(_) => reader.error_hint(
                &entry.value.span,
                &path,
                format!("`{text}` is longer than the 6h an answer may take"),
                "model a call that never answers with a stall or silent_death fault",
            ),
            Err(message) => reader.error_hint(
                &entry.value.span,
                &path,
                message,
                steadfast_core::config::duration::HINT,
            ),
        }
    }
    out
}

fn read_profile(t: &Table<'_>) -> Option<Profile> {
    t.finish();
    let Some((name, span)) = t.string("name") else {
        return Profile::named("self-healing");
    };
    let p = Profile::named(name);
    if p.is_none() {
        let shown = if name.len() > 64 {
            "(too long to show)"
        } else {
            name
        };
        t.error_hint(
            &span,
            "name",
            format!("unknown profile `{shown}`"),
            format!(
                "{}one of: {}",
                did_you_mean(name, profile::names()),
                profile::names().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    p
}

const FAULT_KEYS: &[&str] = &[
    "kind",
    "target",
    "at",
    "every",
    "duration",
    "probability",
    "stall",
    "latency",
    "status",
    "retry_after",
    "restart_after",
    "leak_mb_per_hour",
    "after_durable_ops",
    "before_durable_op",
    "retry_after_date",
    "shape",
    "backward",
];

fn read_fault(t: &Table<'_>) -> Option<FaultSpec> {
    t.finish();
    let kind = match t.string("kind") {
        None => {
            if t.entry("kind").is_none() {
                t.missing("kind", kinds_hint());
            }
            None
        }
        Some((k, span)) => {
            let found = FaultSpecKind::ALL
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v);
            if found.is_none() {
                let shown = if k.len() > 64 {
                    "(too long to show)"
                } else {
                    k
                };
                let names = FaultSpecKind::ALL.iter().map(|(n, _)| *n);
                t.error_hint(
                    &span,
                    "kind",
                    format!("unknown fault kind `{shown}`"),
                    format!("{}{}", did_you_mean(k, names), kinds_hint()),
                );
            }
            found
        }
    };
    let target = t
        .required_string("target", "an API or token server name, or \"runner\"")
        .map(|(s, _)| s.to_string());
    let at = t.duration("at").map(|(d, _)| d).unwrap_or_default();
    let every = t.duration("every");
    let duration = t.duration("duration").map(|(d, _)| d).unwrap_or_default();
    let probability = t.fraction("probability", true).unwrap_or(1.0);
    // A bad answer comes at once unless it says otherwise; a stall lasts 30 s.
    let default_stall = if kind == Some(FaultSpecKind::BadAnswer) {
        Duration::ZERO
    } else {
        Duration::from_secs(30)
    };
    let stall = t.duration("stall").map_or(default_stall, |(d, _)| d);
    let retry_after_date = t.boolean("retry_after_date").unwrap_or(false);
    let shape = read_shape(t, kind);
    let latency = t
        .duration("latency")
        .map_or(Duration::from_secs(5), |(d, _)| d);
    let status = match t.integer("status", 500, 599) {
        Some((n, _)) => u16::try_from(n).unwrap_or(503),
        None => 503,
    };
    let retry_after = t
        .duration("retry_after")
        .map_or(Duration::from_secs(60), |(d, _)| d);
    let restart_after = t
        .duration("restart_after")
        .map_or(Duration::from_secs(60), |(d, _)| d);
    let leak = t.u64_to("leak_mb_per_hour", 1 << 20).unwrap_or(0) * 1024 * 1024;
    let crash_point = read_crash_point(t, kind);
    let backward = t.boolean("backward").unwrap_or(false);
    if let Some((every, span)) = &every
        && *every <= duration
    {
        t.error_hint(
            span,
            "every",
            "must be longer than `duration`",
            "a recurring fault needs time to heal between onsets",
        );
    }
    Some(FaultSpec {
        kind: kind?,
        target: target?,
        at,
        every: every.map(|(d, _)| d),
        duration,
        probability,
        stall,
        latency,
        status,
        retry_after,
        restart_after,
        leak_bytes_per_hour: leak,
        crash_point,
        retry_after_date,
        shape,
        backward,
    })
}

/// `shape`: required on a bad answer, nowhere else.
fn read_shape(t: &Table<'_>, kind: Option<FaultSpecKind>) -> Option<BadShape> {
    let names: Vec<&str> = BadShape::ALL.iter().map(|(n, _)| *n).collect();
    let hint = format!("one of: {}", names.join(", "));
    let Some((name, span)) = t.string("shape") else {
        if kind == Some(FaultSpecKind::BadAnswer) && t.entry("shape").is_none() {
            t.missing("shape", format!("shape = \"wrong_shape\" ({hint})"));
        }
        return None;
    };
    if kind.is_some_and(|k| k != FaultSpecKind::BadAnswer) {
        t.error_hint(
            &span,
            "shape",
            "only a `bad_answer` has a shape",
            "set kind = \"bad_answer\", or remove the key",
        );
        return None;
    }
    let found = BadShape::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s);
    if found.is_none() {
        let shown = if name.len() > 64 {
            "(too long to show)"
        } else {
            name
        };
        t.error_hint(
            &span,
            "shape",
            format!("unknown shape `{shown}`"),
            format!("{}{hint}", did_you_mean(name, names.iter().copied())),
        );
    }
    found
}

/// `after_durable_ops` / `before_durable_op`: only on a crash, one of them, at least 1.
fn read_crash_point(t: &Table<'_>, kind: Option<FaultSpecKind>) -> Option<CrashPoint> {
    const MAX_OP: i64 = 1 << 40;
    let after = t.integer("after_durable_ops", 1, MAX_OP);
    let before = t.integer("before_durable_op", 1, MAX_OP);
    let point = match (after, before) {
        (Some((_, span)), Some(_)) => {
            t.error_hint(
                &span,
                "after_durable_ops",
                "set together with `before_durable_op`",
                "keep one: after_durable_ops = k lets the k-th operation happen, before_durable_op = k does not",
            );
            return None;
        }
        (Some((k, span)), None) => (k, span, true),
        (None, Some((k, span))) => (k, span, false),
        (None, None) => return None,
    };
    let (k, span, after) = point;
    if kind.is_some_and(|k| k != FaultSpecKind::Crash) {
        let key = if after {
            "after_durable_ops"
        } else {
            "before_durable_op"
        };
        t.error_hint(
            &span,
            key,
            "only a `crash` lands at a durable operation",
            "set kind = \"crash\" and target = \"runner\", or remove the key",
        );
        return None;
    }
    Some(CrashPoint {
        op: u64::try_from(k).unwrap_or(1),
        after,
    })
}

fn kinds_hint() -> String {
    let names: Vec<&str> = FaultSpecKind::ALL.iter().map(|(n, _)| *n).collect();
    format!("one of: {}", names.join(", "))
}

fn read_swarm(t: &Table<'_>) -> SwarmSpec {
    t.finish();
    let d = SwarmSpec::default();
    let names: Vec<&str> = swarm::SWARM_KINDS.iter().map(|k| k.as_str()).collect();
    let hint = format!("one of: {}", names.join(", "));
    let kinds = match t.strings("kinds", 64, &hint) {
        None => d.kinds,
        Some(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, (name, span))| {
                let kind = swarm::SWARM_KINDS
                    .iter()
                    .copied()
                    .find(|k| k.as_str() == name);
                if kind.is_none() {
                    let shown = if name.len() > 64 {
                        "(too long to show)"
                    } else {
                        name
                    };
                    t.error_hint(
                        &span,
                        &format!("kinds[{i}]"),
                        format!("`{shown}` cannot be drawn by a swarm"),
                        format!("{}{hint}", did_you_mean(name, names.iter().copied())),
                    );
                }
                kind
            })
            .collect(),
    };
    let presence = t.fraction("presence", true).unwrap_or(d.presence);
    SwarmSpec { kinds, presence }
}

const CALIBRATION_KEYS: &[&str] = &["network_scale", "leak_scale", "storm_scale"];

fn read_calibration(t: &Table<'_>) -> CalibrationSpec {
    t.finish();
    let d = CalibrationSpec::default();
    let max = CalibrationSpec::MAX_SCALE;
    CalibrationSpec {
        network_scale: t
            .number(
                "network_scale",
                0.0..=CalibrationSpec::MAX_NETWORK_SCALE,
                "between 0 and 100",
            )
            .unwrap_or(d.network_scale),
        leak_scale: t
            .number("leak_scale", 0.0..=max, "between 0 and 1000")
            .unwrap_or(d.leak_scale),
        storm_scale: t
            .number("storm_scale", 0.0..=max, "between 0 and 1000")
            .unwrap_or(d.storm_scale),
    }
}

const INVARIANT_KEYS: &[&str] = &[
    "max_lost_task_rate",
    "max_duplicate_side_effects",
    "max_window_violations",
    "max_calls_to_open_breaker",
    "max_token_expired_errors",
    "recovery_bound",
];

fn read_invariants(t: &Table<'_>) -> InvariantSpec {
    t.finish();
    let d = InvariantSpec::default();
    let count = |key: &'static str, default: u64| t.u64_to(key, u64::MAX >> 1).unwrap_or(default);
    InvariantSpec {
        max_lost_task_rate: t
            .fraction("max_lost_task_rate", true)
            .unwrap_or(d.max_lost_task_rate),
        max_duplicate_side_effects: count(
            "max_duplicate_side_effects",
            d.max_duplicate_side_effects,
        ),
        max_window_violations: count("max_window_violations", d.max_window_violations),
        max_calls_to_open_breaker: count("max_calls_to_open_breaker", d.max_calls_to_open_breaker),
        max_token_expired_errors: count("max_token_expired_errors", d.max_token_expired_errors),
        recovery_bound: t
            .duration("recovery_bound")
            .map_or(d.recovery_bound, |(d, _)| d),
    }
}

/// The span of the value at `path` (table keys, or `[i]` into arrays) in the document.
fn span_at(top: &Table<'_>, path: &[&str]) -> Option<Span> {
    let mut value: Option<&RawValue> = None;
    let mut table = top.raw();
    for (i, key) in path.iter().enumerate() {
        let v = match key.strip_prefix('[').and_then(|k| k.strip_suffix(']')) {
            Some(index) => match value.map(|v| &v.kind) {
                Some(RawKind::Array(items)) => items.get(index.parse::<usize>().ok()?)?,
                _ => return None,
            },
            None => &table.get(key)?.value,
        };
        if let RawKind::Table(t) = &v.kind {
            table = t;
        } else if i + 1 < path.len() && !path[i + 1].starts_with('[') {
            return None;
        }
        value = Some(v);
    }
    value.map(|v| v.span.clone())
}

/// Reports a cross-section problem at the value `path` names (or the file's start).
fn report_at(top: &Table<'_>, path: &[&str], key: String, message: String, hint: String) {
    let at = span_at(top, path).map_or(0, |s| s.start);
    top.reader().report(Some(at), &key, message, Some(hint));
}

/// Cross-section checks: fault targets exist, APIs name existing token servers, the
/// runner's services have a simulated API and its credentials a token server.
fn check_references(
    top: &Table<'_>,
    config: &Config,
    oauth: &BTreeMap<String, OAuthSpec>,
    apis: &BTreeMap<String, ApiSpec>,
    faults: &[(usize, FaultSpec)],
) {
    let api_names = || apis.keys().cloned().collect::<Vec<_>>().join(", ");
    for (name, api) in apis {
        if let Some(auth) = &api.auth
            && !oauth.contains_key(auth)
        {
            report_at(
                top,
                &["apis", name, "auth"],
                format!("apis.{name}.auth"),
                format!("no token server named `{auth}`"),
                format!(
                    "{}add an [oauth.<name>] section or fix the name",
                    did_you_mean(auth, oauth.keys().map(String::as_str))
                ),
            );
        }
    }
    for name in config.services.keys() {
        if !apis.contains_key(name) {
            report_at(
                top,
                &["services", name],
                format!("services.{name}"),
                format!("the runner's service `{name}` has no simulated API"),
                format!("add [apis.{name}] (the API is served at {name}.sim)"),
            );
        }
    }
    for (name, cred) in &config.credentials {
        let server = cred.token_url.host.trim_end_matches(".sim");
        if !oauth.contains_key(server) {
            report_at(
                top,
                &["credentials", name, "token_url"],
                format!("credentials.{name}.token_url"),
                format!("no token server serves `{}`", cred.token_url.host),
                "point token_url at http://<oauth name>.sim/token".into(),
            );
        }
    }
    for (i, f) in faults {
        let ok = if f.kind.targets_runner() {
            f.target == "runner"
        } else if f.kind.targets_api_only() {
            apis.contains_key(&f.target)
        } else if f.kind.targets_oauth() {
            oauth.contains_key(&f.target)
        } else if f.kind == FaultSpecKind::SilentDeath {
            f.target == "runner" || apis.contains_key(&f.target)
        } else {
            apis.contains_key(&f.target) || oauth.contains_key(&f.target)
        };
        if !ok {
            let want = if f.kind.targets_runner() {
                "\"runner\"".to_string()
            } else if f.kind.targets_oauth() {
                "a token server name".to_string()
            } else {
                format!("an API name ({})", api_names())
            };
            let index = format!("[{i}]");
            report_at(
                top,
                &["faults", &index, "target"],
                format!("faults[{i}].target"),
                format!(
                    "`{}` is not a valid target for {}",
                    f.target,
                    f.kind.as_str()
                ),
                format!("use {want}"),
            );
        }
    }
}

/// A world whose runs would write more events than the trace keeps reports false
/// losses (the runs past the limit leave no trace). Every slot writes at least a start,
/// a finish and one attempt per step; the slots of the first day (or of the whole world,
/// if shorter), scaled to the world's length, estimate the events. A world past the
/// limit is refused with the numbers.
fn check_trace_limit(top: &Table<'_>, config: &Config, world: &WorldSpec) {
    const DAY: Duration = Duration::from_secs(86_400);
    let limit = steadfast_core::event::DEFAULT_MEMORY_SINK_LIMIT as f64;
    let window = world.duration.min(DAY);
    if window.is_zero() {
        return;
    }
    let start = world.start;
    let window_end = start + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let mut in_window: f64 = 0.0;
    for job in &config.jobs {
        let per_run = 2.0 + job.steps.len() as f64;
        let slots = match job.schedule.cron_pattern() {
            None => window.as_secs_f64() / job.schedule.nominal_interval().as_secs_f64(),
            Some(_) => {
                // A cron pattern fires at most once a second: at most 86,400 a day.
                let mut n = 0u32;
                let mut t = job.schedule.next_after(start);
                while t < window_end && n <= 86_400 {
                    n += 1;
                    t = job.schedule.next_after(t);
                }
                f64::from(n)
            }
        };
        in_window += slots * per_run;
    }
    let total = in_window * world.duration.as_secs_f64() / window.as_secs_f64();
    if total <= limit {
        return;
    }
    let fits = (world.duration.as_secs_f64() * limit / total) as u64;
    let fits = match fits {
        86_400.. => format!("{}d", fits / 86_400),
        3600.. => format!("{}h", fits / 3600),
        _ => format!("{fits}s"),
    };
    report_at(
        top,
        &["world", "duration"],
        "world.duration".to_string(),
        format!(
            "the world's runs would write about {} trace events, more than the {} the trace keeps",
            total.round() as u64,
            steadfast_core::event::DEFAULT_MEMORY_SINK_LIMIT
        ),
        format!(
            "runs past the limit leave no trace and would be counted as lost; shorten the world to at most {fits}, or run fewer or less frequent jobs"
        ),
    );
}
