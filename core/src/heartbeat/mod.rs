//! Pattern 3: heartbeats. Each job's last good run lives in the journal (and can be
//! shown in the field report's `heartbeat-state.json` shape); a monitor flags overdue
//! jobs (silent deaths), memory over its threshold and services failing a health probe.

pub mod monitor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::journal::JobRecord;
use crate::db::{Db, Hold, MissReason, SlotRecord, SlotState};
use crate::env::Env;
use crate::event::Outcome;
use crate::job_status::StatusBoard;

pub use monitor::{ClosedGates, HealthProbe, Monitor, OpenBreakers};

/// The state file: unix seconds, exactly the field report's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatState {
    /// Job -> unix seconds of its last success.
    #[serde(rename = "lastChecks")]
    pub last_checks: BTreeMap<String, i64>,
    /// Job -> seconds without success before it is overdue.
    pub thresholds: BTreeMap<String, i64>,
}

/// A monitor finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A job has not succeeded within its threshold.
    Overdue {
        /// The job.
        job: String,
        /// Its last success, if any.
        last_success: Option<DateTime<Utc>>,
        /// The first start that knew the job (a job that never succeeded is measured
        /// from it).
        known_since: DateTime<Utc>,
        /// Its threshold.
        threshold: Duration,
    },
    /// Memory is over the warning threshold.
    MemoryHigh {
        /// Resident bytes.
        bytes: u64,
        /// The threshold.
        limit: u64,
    },
    /// A service failed its health probe.
    ServiceUnhealthy {
        /// The service.
        service: String,
        /// What failed.
        detail: String,
    },
    /// A job's run has waited, deferred, for longer than the job's threshold while a
    /// service the job calls is held by its gate (a `Retry-After`, a quota reset, an
    /// open breaker): not a silent death, but nothing comes out, and a human should
    /// know why. The same episode as [`Finding::Overdue`] for the job.
    DeferredBehindGate {
        /// The job.
        job: String,
        /// The due time of its run that waits.
        since: DateTime<Utc>,
        /// Its threshold.
        threshold: Duration,
        /// The service whose gate holds.
        service: String,
        /// No call to it before this.
        not_before: DateTime<Utc>,
    },
    /// A service's circuit breaker has not closed for longer than the limit: the
    /// runner keeps probing, but an outage this long wants a human to look.
    BreakerStuck {
        /// The service.
        service: String,
        /// When it opened (the episode's first trip).
        since: DateTime<Utc>,
        /// The limit.
        limit: Duration,
    },
}

/// Each job's heartbeat, read from the journal: when it last did what it should, and
/// whether it is overdue.
pub struct Heartbeats<E: Env> {
    db: Arc<Db<E>>,
    /// Job -> how long without a good run before it is overdue.
    thresholds: BTreeMap<String, Duration>,
    /// Which jobs have a run in progress in this process right now.
    status: Arc<StatusBoard>,
}

impl<E: Env> std::fmt::Debug for Heartbeats<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeats")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl<E: Env> Heartbeats<E> {
    /// The heartbeats of the jobs in `thresholds`, read from `db`.
    pub fn new(
        db: Arc<Db<E>>,
        thresholds: &[(String, Duration)],
        status: Arc<StatusBoard>,
    ) -> Self {
        Self {
            db,
            thresholds: thresholds.iter().cloned().collect(),
            status,
        }
    }

    /// The store the heartbeats are read from (the monitor keeps its episodes there).
    pub fn db(&self) -> &Arc<Db<E>> {
        &self.db
    }

    /// `job`'s threshold, if it is watched.
    pub fn threshold(&self, job: &str) -> Option<Duration> {
        self.thresholds.get(job).copied()
    }

    /// Whether `job` has a run in progress in this process.
    pub fn is_running(&self, job: &str) -> bool {
        self.status.is_running(job)
    }

    /// The end of `job`'s last good run (or its last slot skipped by its window).
    pub fn last_success(&self, job: &str) -> Option<DateTime<Utc>> {
        self.db.job(job).ok().flatten().and_then(|j| j.last_ok_at)
    }

    /// Jobs overdue at `now`.
    ///
    /// A job is overdue when nothing good happened for longer than its threshold,
    /// counted from its last good run or, for a job that never had one, from the first
    /// start that knew it (durable: a crash loop does not reset it), and the journal
    /// shows that something went wrong while the runner was up: a run that failed or
    /// was interrupted, a slot missed for a reason other than downtime (or sleep) or the
    /// job's window, or no slot at all. A job with a run in progress is not overdue
    /// (unless that run's slot is older than the threshold: resumed at every start of a
    /// crash loop, it never ends), and neither is one whose only misses since are
    /// downtime (the missed-slot policy speaks for those), so a restart does not page
    /// for jobs that are fine.
    pub fn overdue(&self, now: DateTime<Utc>) -> Vec<Finding> {
        // Every job's row in one read: the monitor looks every minute, and a read per
        // job was most of its cost. A store that cannot be read flags no job, as a
        // job's row that cannot be read never did.
        let Ok(records) = self.db.jobs() else {
            return Vec::new();
        };
        self.thresholds
            .iter()
            .filter_map(|(job, threshold)| {
                let record = records.get(job)?;
                self.is_overdue(job, record, *threshold, now)
                    .then(|| Finding::Overdue {
                        job: job.clone(),
                        last_success: record.last_ok_at,
                        known_since: record.registered_at,
                        threshold: *threshold,
                    })
            })
            .collect()
    }

    fn is_overdue(
        &self,
        job: &str,
        record: &JobRecord,
        threshold: Duration,
        now: DateTime<Utc>,
    ) -> bool {
        let reference = record.last_ok_at.unwrap_or(record.registered_at);
        let threshold = chrono::Duration::from_std(threshold).unwrap_or(chrono::Duration::MAX);
        if now - reference <= threshold {
            return false;
        }
        // The slots due after the last good run (not that run's own).
        let after = reference + chrono::Duration::milliseconds(1);
        let Ok(rows) = self.db.slots_between(job, after, now) else {
            // The journal cannot be read: say so rather than stay silent.
            return true;
        };
        let excused = |r: &SlotRecord| match r.state {
            SlotState::Missed => {
                matches!(
                    r.missed,
                    Some(MissReason::Downtime | MissReason::Asleep | MissReason::Window)
                )
            }
            // Waiting for a window is by design; waiting at a service's gate excuses
            // the job only as long as its threshold.
            SlotState::Running => {
                r.outcome == Some(Outcome::Deferred)
                    && (r.hold == Some(Hold::Window) || now - r.due <= threshold)
            }
            SlotState::Done => r.outcome.is_some_and(Outcome::is_ok),
        };
        // A run in progress excuses the job only when nothing else went wrong since its
        // last good run and the run's slot is younger than the threshold: in a crash loop
        // every start resumes a run, so the job is "running" at every look and would
        // otherwise never be overdue.
        let stuck = |r: &SlotRecord| {
            r.state == SlotState::Running && r.hold != Some(Hold::Window) && now - r.due > threshold
        };
        let settled_ok = rows
            .iter()
            .filter(|r| r.state != SlotState::Running)
            .all(&excused);
        if self.status.is_running(job) && settled_ok && !rows.iter().any(stuck) {
            return false;
        }
        rows.is_empty() || !rows.iter().all(excused)
    }

    /// The due time of `job`'s oldest open run deferred behind a service's gate, if
    /// any. A job held longer than its threshold is overdue (a gate wait is not a
    /// heartbeat); the monitor then says which service holds it and until when (see
    /// [`Finding::DeferredBehindGate`]). A wait for a window is by design and not here.
    pub fn held_since(&self, job: &str) -> Option<DateTime<Utc>> {
        self.db
            .unfinished(job)
            .ok()?
            .into_iter()
            .filter(|r| r.outcome == Some(Outcome::Deferred) && r.hold != Some(Hold::Window))
            .map(|r| r.due)
            .min()
    }

    /// The field report's `heartbeat-state.json` shape, for `runner status`.
    pub fn state(&self) -> HeartbeatState {
        HeartbeatState {
            last_checks: self
                .thresholds
                .keys()
                .filter_map(|job| Some((job.clone(), self.last_success(job)?.timestamp())))
                .collect(),
            thresholds: self
                .thresholds
                .iter()
                .map(|(job, t)| (job.clone(), whole_seconds(*t)))
                .collect(),
        }
    }
}

/// A threshold in the file's whole seconds, rounded up so a job is never flagged early.
fn whole_seconds(d: Duration) -> i64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}
