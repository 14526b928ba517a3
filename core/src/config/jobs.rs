//! `[[jobs]]`: scheduled sequences of steps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono_tz::Tz;

use super::CatchUp;
use super::duration;
use super::reader::Table;
use super::retry::{self, RetryPolicy};
use super::schedule;
use super::steps::{self, StepConfig};
use crate::schedule::Schedule;

/// `[[jobs]]`: a scheduled sequence of steps.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// Unique job name.
    pub name: String,
    /// When it runs, parsed (cron patterns in the runner's zone).
    pub schedule: Schedule,
    /// A random delay in `[0, start_jitter]` added to each due time.
    pub start_jitter: Duration,
    /// What to do when a run is due while the previous one still runs.
    pub overlap: Overlap,
    /// What to do with slots that passed while the runner was not running.
    pub catch_up: CatchUp,
    /// Missed slots older than this are recorded missed, never run (default 6 h).
    pub catch_up_window: Duration,
    /// Whether slots the catch-up policy did not run (downtime, sleep, a stop) raise a
    /// `slots_missed` alert, one per job per restart or wake (default true).
    pub alert_missed: bool,
    /// A run is abandoned after this long (default: the interval, at most 1 h).
    pub deadline: Duration,
    /// Overdue after this long without success (default 2x interval).
    pub heartbeat_threshold: Duration,
    /// Overrides of the global retry policy.
    pub retry: Option<RetryPolicy>,
    /// The steps, in order.
    pub steps: Vec<StepConfig>,
}

/// Overlap policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Skip a due run while the previous one runs (default).
    Skip,
    /// Run it right after the previous one ends (at most one queued).
    Queue,
}

/// What jobs may refer to.
#[derive(Debug)]
pub(crate) struct Refs {
    pub(crate) zone: Tz,
    pub(crate) retry: RetryPolicy,
    pub(crate) services: BTreeSet<String>,
    pub(crate) credentials: BTreeSet<String>,
}

/// The keys of a job.
pub(crate) const KEYS: &[&str] = &[
    "name",
    "every",
    "cron",
    "start_jitter",
    "overlap",
    "catch_up",
    "catch_up_window",
    "alert_missed",
    "deadline",
    "heartbeat_threshold",
    "retry",
    "steps",
];
/// At most this many jobs.
pub const MAX_JOBS: usize = 100_000;
/// How old a missed slot may be and still be caught up, unless a job says otherwise.
const DEFAULT_CATCH_UP_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// A default deadline never exceeds this (a run stuck for longer is dead, not slow).
const MAX_DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);
/// The default deadline of a cron job is at most this.
const CRON_DEFAULT_DEADLINE: Duration = Duration::from_secs(15 * 60);
const JOBS_HINT: &str =
    "add a [[jobs]] section with a `name`, `every` or `cron`, and [[jobs.steps]]";

/// Reads `[[jobs]]` from the top-level table, in file order.
pub(crate) fn read(top: &Table<'_>, refs: &Refs) -> Vec<JobConfig> {
    let mut out = Vec::new();
    if top.entry("jobs").is_none() {
        top.reader().report(
            Some(0),
            "jobs",
            "at least one job is required",
            Some(JOBS_HINT.to_string()),
        );
        return out;
    }
    let Some((span, tables)) = top.array_of_tables(
        "jobs",
        MAX_JOBS,
        KEYS,
        "write each job as a [[jobs]] section",
    ) else {
        return out;
    };
    if tables.is_empty() {
        top.error_hint(&span, "jobs", "at least one job is required", JOBS_HINT);
        return out;
    }
    // Name -> line of the first job with it: linear in jobs.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tables.iter().flatten() {
        if let Some(job) = job(t, refs, &mut seen) {
            out.push(job);
        }
    }
    out
}

fn job<'r>(t: &Table<'r>, refs: &Refs, seen: &mut BTreeMap<&'r str, usize>) -> Option<JobConfig> {
    t.finish();
    let name = t.name("name", "name");
    if let Some((name, span)) = &name {
        if let Some(first) = seen.get(name) {
            t.error_hint(
                span,
                "name",
                format!("duplicate job name `{name}`"),
                format!(
                    "the first job named `{name}` is on line {first}; job names must be unique"
                ),
            );
        } else {
            seen.insert(name, t.reader().line_of(span.start));
        }
    }
    let schedule = schedule::read(t, refs.zone);
    let interval = schedule.as_ref().filter(|s| !s.is_cron).map(|s| s.interval);
    let start_jitter = start_jitter(t, interval);
    let overlap = match t.choice("overlap", &["skip", "queue"]) {
        Some("queue") => Overlap::Queue,
        _ => Overlap::Skip,
    };
    let catch_up = match t.choice("catch_up", &["latest", "all", "none"]) {
        Some("all") => CatchUp::All,
        Some("none") => CatchUp::None,
        _ => CatchUp::Latest,
    };
    let catch_up_window = t
        .positive_duration("catch_up_window")
        .map_or(DEFAULT_CATCH_UP_WINDOW, |(d, _)| d);
    let alert_missed = t.boolean("alert_missed").unwrap_or(true);
    let deadline = t.positive_duration("deadline");
    let heartbeat = heartbeat_threshold(t, interval);
    let retry = t
        .table("retry", retry::KEYS)
        .map(|r| retry::read(&r, refs.retry));
    let steps = steps::read(t, refs);

    let (name, _) = name?;
    let schedule = schedule?;
    let default_deadline = if schedule.is_cron {
        schedule.interval.min(CRON_DEFAULT_DEADLINE)
    } else {
        schedule.interval.min(MAX_DEFAULT_DEADLINE)
    };
    Some(JobConfig {
        name: name.to_string(),
        start_jitter,
        overlap,
        catch_up,
        catch_up_window,
        alert_missed,
        deadline: deadline.map_or(default_deadline, |(d, _)| d),
        heartbeat_threshold: heartbeat.unwrap_or(schedule.interval.saturating_mul(2)),
        schedule: schedule.schedule,
        retry,
        steps: steps?,
    })
}

/// `start_jitter`, shorter than a fixed interval.
fn start_jitter(t: &Table<'_>, interval: Option<Duration>) -> Duration {
    let Some((jitter, span)) = t.duration("start_jitter") else {
        return Duration::ZERO;
    };
    if let Some(interval) = interval
        && jitter >= interval
    {
        t.error_hint(
            &span,
            "start_jitter",
            format!(
                "start_jitter ({}) is not shorter than the interval ({})",
                duration::format(jitter),
                duration::format(interval)
            ),
            "a jitter as long as the interval can push a run into the next one's slot",
        );
    }
    jitter
}

/// `heartbeat_threshold`, at least a fixed interval.
fn heartbeat_threshold(t: &Table<'_>, interval: Option<Duration>) -> Option<Duration> {
    let (threshold, span) = t.positive_duration("heartbeat_threshold")?;
    if let Some(interval) = interval
        && threshold < interval
    {
        t.error_hint(
            &span,
            "heartbeat_threshold",
            format!(
                "heartbeat_threshold ({}) is shorter than the interval ({})",
                duration::format(threshold),
                duration::format(interval)
            ),
            "the job would be reported overdue between every two runs; twice the interval is the default",
        );
    }
    Some(threshold)
}
