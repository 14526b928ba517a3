//! The judge's own schedule reference: when each job was due, and which of those due
//! times its work was wanted (every windowed step's window open).
//!
//! `every = D` is the grid of multiples of D counted from the Unix epoch (the
//! documented meaning of an interval schedule); cron patterns are read with croner
//! directly, on the wall clock of the scenario's zone. The runner's `Schedule` is not
//! called: a bug there must not be repeated here.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use steadfast_core::config::{JobConfig, WindowConfig};

use super::window;

/// At most this many due times per job (a 21-day world at 15 minutes has about 2,000).
pub const MAX_DUE_TIMES: usize = 1_000_000;

/// How a job's due times are generated.
#[derive(Debug, Clone)]
pub enum Reference {
    /// Multiples of this many nanoseconds since the Unix epoch.
    Every(i128),
    /// A cron pattern read in a zone.
    Cron(Box<croner::Cron>, Tz),
}

impl Reference {
    /// The reference for `job`, whose cron patterns are read in `zone`.
    pub fn of(job: &JobConfig, zone: Tz) -> Result<Self, String> {
        match job.schedule.cron_pattern() {
            Some(pattern) => croner::Cron::from_str(pattern)
                .map(|c| Self::Cron(Box::new(c), zone))
                .map_err(|e| format!("job `{}`: cron `{pattern}` does not parse: {e}", job.name)),
            None => {
                let nanos =
                    i128::try_from(job.schedule.nominal_interval().as_nanos()).unwrap_or(i128::MAX);
                if nanos <= 0 {
                    Err(format!("job `{}`: zero interval", job.name))
                } else {
                    Ok(Self::Every(nanos))
                }
            }
        }
    }

    /// The first due time strictly after `t`, if any.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(step) => {
                let n = i128::from(t.timestamp_nanos_opt()?);
                let next = (n.div_euclid(*step) + 1) * step;
                Some(DateTime::from_timestamp_nanos(i64::try_from(next).ok()?))
            }
            Self::Cron(cron, zone) => cron
                .find_next_occurrence(&t.with_timezone(zone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

/// One job's due times in the judged span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSlots {
    /// Due times when the job's work was wanted: the slots it owes output for.
    pub slots: Vec<DateTime<Utc>>,
    /// For each slot, the next due time (wanted or not): the slot's span ends there.
    pub span_ends: Vec<DateTime<Utc>>,
    /// Due times skipped because a window of one of its steps was closed.
    pub closed: Vec<DateTime<Utc>>,
}

impl JobSlots {
    /// The index of the slot whose span `[slot, next due)` holds `t`.
    pub fn slot_holding(&self, t: DateTime<Utc>) -> Option<usize> {
        let i = self.slots.partition_point(|s| *s <= t);
        (i > 0 && t < self.span_ends[i - 1]).then(|| i - 1)
    }
}

/// Whether every windowed step of `job` may run at `at`.
pub fn all_open(
    job: &JobConfig,
    windows: &BTreeMap<String, WindowConfig>,
    zone: Tz,
    at: DateTime<Utc>,
) -> bool {
    job.steps.iter().all(|s| {
        s.action
            .as_ref()
            .and_then(|a| windows.get(a))
            .is_none_or(|w| window::is_open(w, zone, at))
    })
}

/// The due times of `job` strictly after `start` and before `end`.
pub fn job_slots(
    job: &JobConfig,
    windows: &BTreeMap<String, WindowConfig>,
    zone: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<JobSlots, String> {
    let reference = Reference::of(job, zone)?;
    let mut out = JobSlots::default();
    let mut next = reference.next_after(start);
    let mut seen = 0usize;
    while let Some(due) = next.filter(|t| *t < end) {
        seen += 1;
        if seen > MAX_DUE_TIMES {
            return Err(format!(
                "job `{}`: more than {MAX_DUE_TIMES} due times in the world",
                job.name
            ));
        }
        next = reference.next_after(due);
        if all_open(job, windows, zone, due) {
            out.slots.push(due);
            out.span_ends.push(next.unwrap_or(DateTime::<Utc>::MAX_UTC));
        } else {
            out.closed.push(due);
        }
    }
    Ok(out)
}
