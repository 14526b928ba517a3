//! A job's `every` or `cron`, read into a parsed [`Schedule`] with its nominal interval.
//!
//! Limits: `every` is at least [`MIN_INTERVAL`] (one second; `every = "1ns"` used to
//! pass and then start a job 1,572 times in 6 s). A cron pattern's finest field is
//! seconds, so cron never fires more often than that either.
//!
//! A cron job has no single interval, and the time the runner starts is not known here,
//! so its interval is measured from a fixed reference instant (Monday 2024-01-01 00:00 in
//! the runner's zone): the largest gap between successive occurrences over the following
//! eight days (at least two occurrences, at most 4096). A week is covered so that a
//! weekdays-only schedule gets a threshold spanning the weekend, instead of a heartbeat
//! alarm every Saturday.

use std::str::FromStr;
use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;

use super::duration;
use super::reader::Table;
use crate::schedule::Schedule;

/// A schedule as written, before it is parsed ([`Schedule::new`] parses it).
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleConfig {
    /// Every fixed interval, counted from the Unix epoch so restarts keep the grid.
    Every(Duration),
    /// A cron expression (5 or 6 fields) in the runner's zone.
    Cron(String),
}

/// The shortest `every`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest cron expression.
pub const MAX_CRON_CHARS: usize = 256;
/// How far past the reference instant cron gaps are measured.
const CRON_HORIZON_DAYS: i64 = 8;
/// At most this many occurrences are examined (bounds the work for `* * * * * *`).
const CRON_MAX_OCCURRENCES: usize = 4096;
const CRON_HINT: &str = "five fields: minute hour day-of-month month day-of-week (a sixth, leading field is seconds), e.g. \"*/15 * * * *\"";

/// A parsed schedule and its nominal interval (the largest gap, for cron).
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) schedule: Schedule,
    pub(crate) interval: Duration,
    pub(crate) is_cron: bool,
}

/// Reads exactly one of `every` and `cron` from a job's table.
pub(crate) fn read(t: &Table<'_>, zone: Tz) -> Option<Read> {
    match (t.entry("every"), t.entry("cron")) {
        (Some(every), Some(cron)) => {
            let later = if every.key_span.start > cron.key_span.start {
                every
            } else {
                cron
            };
            t.error_hint(
                &later.key_span,
                &later.key,
                "`every` and `cron` are mutually exclusive",
                "keep one: `every` for a fixed interval, `cron` for calendar times",
            );
            None
        }
        (None, None) => {
            t.reader().report(
                (!t.span().is_empty()).then_some(t.span().start),
                t.path(),
                "missing a schedule",
                Some("set `every` (e.g. \"30m\") or `cron` (e.g. \"*/30 * * * *\")".to_string()),
            );
            None
        }
        (Some(_), None) => every(t),
        (None, Some(_)) => cron(t, zone),
    }
}

fn every(t: &Table<'_>) -> Option<Read> {
    let (d, span) = t.duration("every")?;
    if d < MIN_INTERVAL {
        t.error_hint(
            &span,
            "every",
            format!(
                "interval {} is shorter than the minimum of {}",
                duration::format(d),
                duration::format(MIN_INTERVAL)
            ),
            "a job starts at most once a second; write e.g. \"30s\" or \"15m\"",
        );
        return None;
    }
    let schedule = Schedule::new(&ScheduleConfig::Every(d), Tz::UTC).ok()?;
    Some(Read {
        schedule,
        interval: d,
        is_cron: false,
    })
}

fn cron(t: &Table<'_>, zone: Tz) -> Option<Read> {
    let (expr, span) = t.short_string("cron", MAX_CRON_CHARS, CRON_HINT)?;
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        t.error_hint(
            &span,
            "cron",
            format!("invalid cron expression `{expr}`: it has {fields} fields"),
            CRON_HINT,
        );
        return None;
    }
    let parsed = match croner::Cron::from_str(expr) {
        Ok(c) => c,
        Err(e) => {
            let detail = match &e {
                croner::errors::CronError::ComponentError(m)
                | croner::errors::CronError::InvalidPattern(m)
                | croner::errors::CronError::IllegalCharacters(m) => m.clone(),
                other => other.to_string(),
            };
            let detail = detail.trim().trim_end_matches('.').to_lowercase();
            t.error_hint(
                &span,
                "cron",
                format!("invalid cron expression `{expr}`: {detail}"),
                CRON_HINT,
            );
            return None;
        }
    };
    let not_repeating = |why: &str| {
        t.error_hint(
            &span,
            "cron",
            format!("cron expression `{expr}` is not a repeating schedule: {why}"),
            CRON_HINT,
        );
    };
    let gap = match max_gap(&parsed, zone) {
        Ok(gap) => gap,
        Err(why) => {
            not_repeating(&why);
            return None;
        }
    };
    match Schedule::from_cron(parsed, zone) {
        Ok(schedule) => Some(Read {
            schedule,
            interval: gap,
            is_cron: true,
        }),
        Err(_) => {
            not_repeating("it does not fire repeatedly");
            None
        }
    }
}

/// The largest gap between successive occurrences of `cron` after the fixed reference
/// instant (see the module docs); `Err` with a message when it does not repeat.
fn max_gap(cron: &croner::Cron, zone: Tz) -> Result<Duration, String> {
    let start = zone
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .earliest()
        .ok_or_else(|| "the reference instant does not exist in this zone".to_string())?;
    let horizon = start + chrono::Duration::days(CRON_HORIZON_DAYS);
    let never = || "it never fires".to_string();
    let mut prev = cron
        .find_next_occurrence(&start, false)
        .map_err(|_| never())?;
    let mut max_gap = None;
    for _ in 0..CRON_MAX_OCCURRENCES {
        let Ok(next) = cron.find_next_occurrence(&prev, false) else {
            break;
        };
        if let Ok(gap) = (next - prev).to_std() {
            max_gap = max_gap.max(Some(gap));
        }
        if next > horizon {
            break;
        }
        prev = next;
    }
    max_gap.ok_or_else(|| "it fires at most once".to_string())
}
