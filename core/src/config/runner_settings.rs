//! `[runner]`: settings that apply to the whole daemon.

use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use super::reader::Table;
use super::suggest::did_you_mean;

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

/// The keys of `[runner]`.
pub(crate) const KEYS: &[&str] = &[
    "state_dir",
    "time_zone",
    "monitor_interval",
    "memory_warn_mb",
    "memory_fatal_mb",
    "shutdown_grace",
    "breaker_alert_after",
];

const MIB: u64 = 1024 * 1024;
/// 1 TiB: a memory limit above this is a unit mistake.
const MAX_MEMORY_MB: i64 = 1 << 20;
/// The longest IANA zone name is 32 characters; anything much longer is not a zone, and
/// is rejected before it is compared with every zone name for a suggestion.
pub const MAX_ZONE_CHARS: usize = 64;
const ZONE_HINT: &str = "use an IANA zone name such as \"Europe/Berlin\" or \"America/New_York\"";

/// Reads `[runner]` (absent: every default).
pub(crate) fn read(t: Option<Table<'_>>, default_state_dir: PathBuf) -> RunnerSettings {
    let mut s = RunnerSettings {
        state_dir: default_state_dir,
        time_zone: Tz::UTC,
        monitor_interval: Duration::from_secs(60),
        memory_warn_bytes: 1024 * MIB,
        memory_fatal_bytes: 2048 * MIB,
        shutdown_grace: Duration::from_secs(30),
        breaker_alert_after: Duration::from_secs(3600),
    };
    let Some(t) = t else {
        return s;
    };
    t.finish();
    if let Some((dir, span)) = t.string("state_dir") {
        if dir.trim().is_empty() {
            t.error(&span, "state_dir", "must not be empty");
        } else {
            s.state_dir = t.reader().resolve(dir);
        }
    }
    if let Some(zone) = time_zone(&t, "time_zone") {
        s.time_zone = zone;
    }
    if let Some((d, _)) = t.positive_duration("monitor_interval") {
        s.monitor_interval = d;
    }
    if let Some((d, _)) = t.duration("shutdown_grace") {
        s.shutdown_grace = d;
    }
    if let Some((d, _)) = t.positive_duration("breaker_alert_after") {
        s.breaker_alert_after = d;
    }
    let (warn, fatal) = memory(&t);
    s.memory_warn_bytes = warn * MIB;
    s.memory_fatal_bytes = fatal * MIB;
    s
}

/// An IANA time zone under `key`, bounded in length before anything else looks at it.
pub fn time_zone(t: &Table<'_>, key: &'static str) -> Option<Tz> {
    let (zone, span) = t.string(key)?;
    if zone.len() > MAX_ZONE_CHARS {
        t.error_hint(
            &span,
            key,
            format!(
                "time zone name is {} characters long, more than the {MAX_ZONE_CHARS} allowed",
                zone.chars().count()
            ),
            ZONE_HINT,
        );
        return None;
    }
    match zone.parse::<Tz>() {
        Ok(z) => Some(z),
        Err(_) => {
            let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
            let hint = format!("{}{ZONE_HINT}", did_you_mean(zone, names));
            t.error_hint(&span, key, format!("unknown time zone `{zone}`"), hint);
            None
        }
    }
}

/// The memory limits in MiB: warning, fatal (defaults 1024 and 2048).
fn memory(t: &Table<'_>) -> (u64, u64) {
    let warn = t.integer("memory_warn_mb", 1, MAX_MEMORY_MB);
    let fatal = t.integer("memory_fatal_mb", 1, MAX_MEMORY_MB);
    let warn_mb = warn.as_ref().map_or(1024, |(n, _)| *n);
    let fatal_mb = fatal.as_ref().map_or(2048, |(n, _)| *n);
    if fatal_mb < warn_mb {
        let (key, span) = match (&fatal, &warn) {
            (Some((_, span)), _) => ("memory_fatal_mb", span),
            (None, Some((_, span))) => ("memory_warn_mb", span),
            (None, None) => ("memory_fatal_mb", t.span()),
        };
        t.error_hint(
            span,
            key,
            format!("memory_fatal_mb ({fatal_mb}) is below memory_warn_mb ({warn_mb})"),
            "the fatal limit must be at least the warning limit",
        );
    }
    (
        u64::try_from(warn_mb).unwrap_or(1024),
        u64::try_from(fatal_mb).unwrap_or(2048),
    )
}
