//! Scenario files: a world, its services, the runner's jobs, faults and invariants.
//!
//! A scenario is one TOML file. The runner's own sections (`[runner]`, `[retry]`,
//! `[windows]`, `[services.*]`, `[credentials.*]`, `[[jobs]]`) are read by the runner's
//! configuration parser, unchanged; the simulator adds:
//!
//! ```toml
//! [world]
//! start = "2026-03-02T08:00:00"   # local date-time in `zone`
//! zone = "America/New_York"
//! duration = "2d"
//! tick = "60s"
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
//! [invariants]
//! max_lost_task_rate = 0.02
//! recovery_bound = "2h"
//! ```
//!
//! Every problem in the file is reported at once with file, line, key path and hint.

pub mod profile;
mod reader;
pub mod swarm;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use steadfast_core::config::raw::RawKind;
use steadfast_core::config::{
    Config, Diagnostic, Diagnostics, NoSecretSources, ReadOptions, Reader, SECTIONS, Source,
    parse_document, read_config,
};

pub use profile::Profile;
use reader::Section;
pub use swarm::SwarmSpec;

/// The sections the simulator reads itself.
const SIM_SECTIONS: [&str; 8] = [
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
}

impl FaultSpecKind {
    const ALL: [(&'static str, Self); 14] = [
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
        matches!(self, Self::MemoryLeak | Self::DiskFull | Self::Crash)
    }

    fn targets_oauth(self) -> bool {
        matches!(self, Self::TokenRevoke | Self::RefreshRevoke)
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
    /// A crashed runner restarts after this long.
    pub restart_after: Duration,
    /// Leak rate (memory_leak), bytes per hour.
    pub leak_bytes_per_hour: u64,
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

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![
                Diagnostic::at_offset(path, "", None, "", format!("failed to read: {e}"))
                    .hint("check the path; scenarios live in scenarios/"),
            ])
        })?;
        Self::parse(&text, path, Some(path.to_path_buf()))
    }

    /// Parses scenario text; `file` names it in diagnostics.
    pub fn parse(text: &str, file: &Path, source: Option<PathBuf>) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let src = Source::new(file, text)?;
        let raw = parse_document(&src)?;
        // The runner's sections, by the runner's own reader, with cron schedules read in
        // the world's zone (the runner runs in it).
        let zone = raw
            .get("world")
            .and_then(|w| match &w.value.kind {
                RawKind::Table(t) => t.get("zone"),
                _ => None,
            })
            .and_then(|z| match &z.value.kind {
                RawKind::String(z) => z.parse::<Tz>().ok(),
                _ => None,
            })
            .unwrap_or(Tz::UTC);
        let reader = Reader::new(&src, &NoSecretSources);
        let keys = [SECTIONS, &SIM_SECTIONS].concat();
        let top_core = reader.table(&raw, "", &keys);
        top_core.finish();
        let config = read_config(&top_core, ReadOptions { zone: Some(zone) });
        let config = match reader.finish(config) {
            Ok(config) => Some(config),
            Err(d) => {
                diags.0.extend(d.0);
                None
            }
        };
        let mut top = Section::new(file, text, "", &raw);
        let world = top
            .table("world", &mut diags)
            .map(|t| read_world(Section::new(file, text, "world", t), &mut diags));
        if world.is_none() {
            diags.push(
                Diagnostic::at_offset(file, text, Some(0), "world", "missing section")
                    .hint("add [world] with start, zone and duration"),
            );
        }
        let operator = top
            .table("operator", &mut diags)
            .map(|t| read_operator(Section::new(file, text, "operator", t), &mut diags))
            .unwrap_or_else(|| OperatorSpec {
                alert_response: Duration::from_secs(2 * 3600),
                checks: vec![NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default()],
            });
        let oauth: BTreeMap<String, OAuthSpec> = top
            .named_tables("oauth", &mut diags)
            .into_iter()
            .map(|(name, t)| {
                let path = format!("oauth.{name}");
                (
                    name,
                    read_oauth(Section::new(file, text, path, t), &mut diags),
                )
            })
            .collect();
        let apis: BTreeMap<String, ApiSpec> = top
            .named_tables("apis", &mut diags)
            .into_iter()
            .map(|(name, t)| {
                let path = format!("apis.{name}");
                (
                    name,
                    read_api(Section::new(file, text, path, t), &mut diags),
                )
            })
            .collect();
        let profile = match top.table("profile", &mut diags) {
            None => Profile::named("self-healing"),
            Some(t) => {
                let mut s = Section::new(file, text, "profile", t);
                let p = match s.string("name", &mut diags) {
                    None => Profile::named("self-healing"),
                    Some((name, at)) => {
                        let p = Profile::named(&name);
                        if p.is_none() {
                            diags.push(
                                s.diag(at, "name", format!("unknown profile `{name}`"))
                                    .hint(format!(
                                        "one of: {}",
                                        profile::names().collect::<Vec<_>>().join(", ")
                                    )),
                            );
                        }
                        p
                    }
                };
                s.finish(&mut diags);
                p
            }
        };
        let faults: Vec<FaultSpec> = top
            .tables("faults", &mut diags)
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                read_fault(
                    Section::new(file, text, format!("faults[{i}]"), t),
                    &mut diags,
                )
            })
            .collect();
        let swarm = top
            .table("swarm", &mut diags)
            .map(|t| read_swarm(Section::new(file, text, "swarm", t), &mut diags));
        let invariants = top
            .table("invariants", &mut diags)
            .map(|t| read_invariants(Section::new(file, text, "invariants", t), &mut diags))
            .unwrap_or_default();
        // Unknown top-level keys are the runner parser's to report; it knows its own.
        drop(top);
        let (Some(config), Some(world), Some(profile)) = (config, world, profile) else {
            diags.sort();
            return Err(diags);
        };
        let Some(world) = world else {
            diags.sort();
            return Err(diags);
        };
        check_references(file, text, &config, &oauth, &apis, &faults, &mut diags);
        if !diags.is_empty() {
            diags.sort();
            return Err(diags);
        }
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_NAME.to_string());
        Ok(Self {
            name,
            file: source,
            world,
            operator,
            oauth,
            apis,
            profile,
            faults,
            swarm,
            invariants,
            config,
        })
    }

    /// The runner configuration for a profile: the profile's patterns, the world's
    /// zone, no call timeouts where the profile has none.
    pub fn runner_config(&self, profile: &Profile) -> Config {
        let mut config = self.config.clone();
        config.patterns = profile.patterns;
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

fn read_world(mut s: Section<'_>, diags: &mut Diagnostics) -> Option<WorldSpec> {
    let zone = match s.string("zone", diags) {
        None => Some(Tz::UTC),
        Some((z, at)) => match z.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                diags
                    .push(s.diag(at, "zone", format!("unknown time zone `{z}`")).hint(
                        "use an IANA name such as \"Europe/Berlin\" or \"America/New_York\"",
                    ));
                None
            }
        },
    };
    let start = match s.string("start", diags) {
        None => {
            diags.push(
                s.diag(s.start(), "start", "missing key")
                    .hint("start = \"2026-03-02T08:00:00\" (local time in `zone`)"),
            );
            None
        }
        Some((text, at)) => match NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S") {
            Ok(naive) => zone
                .and_then(|z| z.from_local_datetime(&naive).earliest())
                .map(|t| t.with_timezone(&Utc)),
            Err(e) => {
                diags.push(
                    s.diag(at, "start", format!("invalid date-time: {e}"))
                        .hint("write it as \"2026-03-02T08:00:00\" (local time in `zone`)"),
                );
                None
            }
        },
    };
    let duration = s.duration("duration", diags);
    if duration.is_none() {
        diags.push(
            s.diag(s.start(), "duration", "missing key")
                .hint("duration = \"2d\""),
        );
    }
    let tick = s.duration("tick", diags).unwrap_or(Duration::from_secs(60));
    let seed = s.integer("seed", u64::MAX >> 1, diags).unwrap_or(1);
    let mb = 1024 * 1024;
    let base = s.integer("memory_base_mb", 1 << 20, diags).unwrap_or(200) * mb;
    let limit = s.integer("memory_limit_mb", 1 << 20, diags).unwrap_or(4096) * mb;
    let supervisor_delay = s
        .duration("supervisor_delay", diags)
        .unwrap_or(Duration::from_secs(10));
    if tick.is_zero() || tick > Duration::from_secs(3600) {
        diags.push(
            s.diag(s.start(), "tick", "must be between 1ms and 1h")
                .hint("60s is a good tick"),
        );
    }
    s.finish(diags);
    Some(WorldSpec {
        start: start?,
        zone: zone?,
        duration: duration?,
        tick,
        seed,
        memory_base_bytes: base,
        memory_limit_bytes: limit,
        supervisor_delay,
    })
}

fn read_operator(mut s: Section<'_>, diags: &mut Diagnostics) -> OperatorSpec {
    let alert_response = s
        .duration("alert_response", diags)
        .unwrap_or(Duration::from_secs(2 * 3600));
    let mut checks = Vec::new();
    for (text, at) in s
        .strings("checks", diags)
        .unwrap_or_else(|| vec![("09:00".into(), 0)])
    {
        match NaiveTime::parse_from_str(&text, "%H:%M") {
            Ok(t) => checks.push(t),
            Err(_) => diags.push(
                s.diag(at, "checks", format!("invalid time `{text}`"))
                    .hint("local times like \"09:00\""),
            ),
        }
    }
    checks.sort();
    s.finish(diags);
    OperatorSpec {
        alert_response,
        checks,
    }
}

fn read_oauth(mut s: Section<'_>, diags: &mut Diagnostics) -> OAuthSpec {
    let spec = OAuthSpec {
        expires_in: s
            .duration("expires_in", diags)
            .unwrap_or(Duration::from_secs(3600)),
        rotate: s.boolean("rotate", diags).unwrap_or(true),
        // Providers that rotate refresh tokens keep a short reuse interval so a client
        // whose answer was lost in transit can retry; "0s" models a strict one.
        reuse_grace: s
            .duration("reuse_grace", diags)
            .unwrap_or(Duration::from_secs(60)),
    };
    s.finish(diags);
    spec
}

fn read_api(mut s: Section<'_>, diags: &mut Diagnostics) -> ApiSpec {
    let spec = ApiSpec {
        rate_per_minute: s
            .integer("rate_per_minute", 1_000_000, diags)
            .map(|v| v as u32),
        daily_quota: s
            .integer("daily_quota", 100_000_000, diags)
            .map(|v| v as u32),
        latency: s
            .duration("latency", diags)
            .unwrap_or(Duration::from_millis(100)),
        auth: s.string("auth", diags).map(|(a, _)| a),
    };
    s.finish(diags);
    spec
}

fn read_fault(mut s: Section<'_>, diags: &mut Diagnostics) -> Option<FaultSpec> {
    let kind = match s.string("kind", diags) {
        None => {
            diags.push(s.diag(s.start(), "kind", "missing key").hint(kinds_hint()));
            None
        }
        Some((k, at)) => {
            let found = FaultSpecKind::ALL
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v);
            if found.is_none() {
                diags.push(
                    s.diag(at, "kind", format!("unknown fault kind `{k}`"))
                        .hint(kinds_hint()),
                );
            }
            found
        }
    };
    let target = s.string("target", diags).map(|(t, _)| t);
    if target.is_none() {
        diags.push(
            s.diag(s.start(), "target", "missing key")
                .hint("an API or token server name, or \"runner\""),
        );
    }
    let at = s.duration("at", diags).unwrap_or_default();
    let every = s.duration("every", diags);
    let duration = s.duration("duration", diags).unwrap_or_default();
    let probability = s.float("probability", (0.0, 1.0), diags).unwrap_or(1.0);
    let stall = s
        .duration("stall", diags)
        .unwrap_or(Duration::from_secs(30));
    let latency = s
        .duration("latency", diags)
        .unwrap_or(Duration::from_secs(5));
    let status = s
        .integer("status", 599, diags)
        .map(|v| v as u16)
        .unwrap_or(503);
    let retry_after = s
        .duration("retry_after", diags)
        .unwrap_or(Duration::from_secs(60));
    let restart_after = s
        .duration("restart_after", diags)
        .unwrap_or(Duration::from_secs(60));
    let leak = s.integer("leak_mb_per_hour", 1 << 20, diags).unwrap_or(0) * 1024 * 1024;
    if let Some(every) = every
        && every <= duration
    {
        diags.push(
            s.diag(s.start(), "every", "must be longer than `duration`")
                .hint("a recurring fault needs time to heal between onsets"),
        );
    }
    if status != 0 && !(500..=599).contains(&status) {
        diags.push(
            s.diag(s.start(), "status", "must be a 5xx status")
                .hint("503 is common"),
        );
    }
    s.finish(diags);
    Some(FaultSpec {
        kind: kind?,
        target: target?,
        at,
        every,
        duration,
        probability,
        stall,
        latency,
        status,
        retry_after,
        restart_after,
        leak_bytes_per_hour: leak,
    })
}

fn kinds_hint() -> String {
    let names: Vec<&str> = FaultSpecKind::ALL.iter().map(|(n, _)| *n).collect();
    format!("one of: {}", names.join(", "))
}

fn read_swarm(mut s: Section<'_>, diags: &mut Diagnostics) -> SwarmSpec {
    let d = SwarmSpec::default();
    let kinds = match s.strings("kinds", diags) {
        None => d.kinds,
        Some(names) => names
            .into_iter()
            .filter_map(|(name, at)| {
                let kind = swarm::SWARM_KINDS
                    .iter()
                    .copied()
                    .find(|k| k.as_str() == name);
                if kind.is_none() {
                    let names: Vec<&str> = swarm::SWARM_KINDS.iter().map(|k| k.as_str()).collect();
                    diags.push(
                        s.diag(at, "kinds", format!("`{name}` cannot be drawn by a swarm"))
                            .hint(format!("one of: {}", names.join(", "))),
                    );
                }
                kind
            })
            .collect(),
    };
    let presence = s.float("presence", (0.0, 1.0), diags).unwrap_or(d.presence);
    s.finish(diags);
    SwarmSpec { kinds, presence }
}

fn read_invariants(mut s: Section<'_>, diags: &mut Diagnostics) -> InvariantSpec {
    let d = InvariantSpec::default();
    let spec = InvariantSpec {
        max_lost_task_rate: s
            .float("max_lost_task_rate", (0.0, 1.0), diags)
            .unwrap_or(d.max_lost_task_rate),
        max_duplicate_side_effects: s
            .integer("max_duplicate_side_effects", u64::MAX >> 1, diags)
            .unwrap_or(d.max_duplicate_side_effects),
        max_window_violations: s
            .integer("max_window_violations", u64::MAX >> 1, diags)
            .unwrap_or(d.max_window_violations),
        max_calls_to_open_breaker: s
            .integer("max_calls_to_open_breaker", u64::MAX >> 1, diags)
            .unwrap_or(d.max_calls_to_open_breaker),
        max_token_expired_errors: s
            .integer("max_token_expired_errors", u64::MAX >> 1, diags)
            .unwrap_or(d.max_token_expired_errors),
        recovery_bound: s
            .duration("recovery_bound", diags)
            .unwrap_or(d.recovery_bound),
    };
    s.finish(diags);
    spec
}

/// Cross-section checks: fault targets exist, APIs name existing token servers, the
/// runner's services have a simulated API and its credentials a token server.
fn check_references(
    file: &Path,
    text: &str,
    config: &Config,
    oauth: &BTreeMap<String, OAuthSpec>,
    apis: &BTreeMap<String, ApiSpec>,
    faults: &[FaultSpec],
    diags: &mut Diagnostics,
) {
    let d = |key: String, message: String, hint: String| {
        Diagnostic::at_offset(file, text, None, key, message).hint(hint)
    };
    let api_names = || apis.keys().cloned().collect::<Vec<_>>().join(", ");
    for (name, api) in apis {
        if let Some(auth) = &api.auth
            && !oauth.contains_key(auth)
        {
            diags.push(d(
                format!("apis.{name}.auth"),
                format!("no token server named `{auth}`"),
                "add an [oauth.<name>] section or fix the name".into(),
            ));
        }
    }
    for name in config.services.keys() {
        if !apis.contains_key(name) {
            diags.push(d(
                format!("services.{name}"),
                format!("the runner's service `{name}` has no simulated API"),
                format!("add [apis.{name}] (the API is served at {name}.sim)"),
            ));
        }
    }
    for (name, cred) in &config.credentials {
        let server = cred.token_url.host.trim_end_matches(".sim");
        if !oauth.contains_key(server) {
            diags.push(d(
                format!("credentials.{name}.token_url"),
                format!("no token server serves `{}`", cred.token_url.host),
                "point token_url at http://<oauth name>.sim/token".into(),
            ));
        }
    }
    for (i, f) in faults.iter().enumerate() {
        let ok = if f.kind.targets_runner() {
            f.target == "runner"
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
            diags.push(d(
                format!("faults[{i}].target"),
                format!(
                    "`{}` is not a valid target for {}",
                    f.target,
                    f.kind.as_str()
                ),
                format!("use {want}"),
            ));
        }
    }
}
