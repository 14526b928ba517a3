//! Pattern 3: heartbeats. Each job's last success and threshold live in a state file
//! shaped like the field report's `heartbeat-state.json`; a monitor flags overdue jobs
//! (silent deaths), memory over its threshold and services failing a health probe.

pub mod monitor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::store::{self, StoreError};

pub use monitor::{HealthProbe, Monitor, OpenBreakers};

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

/// The heartbeat store of all jobs.
pub struct Heartbeats<E: Env> {
    env: E,
    /// `state_dir/heartbeat-state.json`.
    path: PathBuf,
    /// The state as this process knows it (read by the monitor without waiting).
    state: Mutex<HeartbeatState>,
    /// Serialises writes: `write_atomic` uses one temp file per path, and a later
    /// snapshot must never be overtaken on disk by an earlier one.
    writes: tokio::sync::Mutex<()>,
}

impl<E: Env> std::fmt::Debug for Heartbeats<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeats")
            .field("path", &self.path)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

/// The name of the state file under the state directory.
pub const STATE_FILE: &str = "heartbeat-state.json";

impl<E: Env> Heartbeats<E> {
    /// Opens `state_dir/heartbeat-state.json` with each job's threshold; a corrupt file
    /// is reported (as `Err` alongside a fresh state via [`Self::open`]'s second value).
    pub async fn open(
        env: E,
        state_dir: &Path,
        thresholds: &[(String, Duration)],
    ) -> (Self, Option<StoreError>) {
        let path = state_dir.join(STATE_FILE);
        let (mut state, problem) =
            match store::read_json::<_, HeartbeatState>(env.fs(), &path).await {
                Ok(found) => (found.unwrap_or_default(), None),
                Err(err) => (HeartbeatState::default(), Some(err)),
            };
        // The configuration decides which jobs are watched and how closely; last
        // successes of jobs no longer configured are kept but never flagged.
        state.thresholds = thresholds
            .iter()
            .map(|(job, threshold)| (job.clone(), whole_seconds(*threshold)))
            .collect();
        let heartbeats = Self {
            env,
            path,
            state: Mutex::new(state),
            writes: tokio::sync::Mutex::new(()),
        };
        (heartbeats, problem)
    }

    /// Records a success of `job` at `at` durably.
    ///
    /// The success counts in memory even if the write fails: the job did succeed, and a
    /// full disk is reported by the error, not by a false overdue finding later.
    pub async fn record_success(&self, job: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let _write = self.writes.lock().await;
        let snapshot = {
            let mut state = self.lock();
            state.last_checks.insert(job.to_string(), at.timestamp());
            state.clone()
        };
        store::write_json(self.env.fs(), &self.path, &snapshot).await
    }

    /// The last success of `job`.
    pub fn last_success(&self, job: &str) -> Option<DateTime<Utc>> {
        self.lock()
            .last_checks
            .get(job)
            .and_then(|secs| DateTime::from_timestamp(*secs, 0))
    }

    /// Jobs overdue at `now`. A job never seen is measured from `since` (runner start).
    pub fn overdue(&self, now: DateTime<Utc>, since: DateTime<Utc>) -> Vec<Finding> {
        let state = self.lock();
        state
            .thresholds
            .iter()
            .filter_map(|(job, threshold_secs)| {
                // A value that is no valid time (edited by hand) counts as never seen.
                let last = state
                    .last_checks
                    .get(job)
                    .and_then(|secs| DateTime::from_timestamp(*secs, 0));
                let threshold = chrono::Duration::seconds((*threshold_secs).max(0));
                let silent_for = now - last.unwrap_or(since);
                (silent_for > threshold).then(|| Finding::Overdue {
                    job: job.clone(),
                    last_success: last,
                    threshold: Duration::from_secs(threshold_secs.unsigned_abs()),
                })
            })
            .collect()
    }

    /// A copy of the state.
    pub fn state(&self) -> HeartbeatState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeartbeatState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A threshold in the file's whole seconds, rounded up so a job is never flagged early.
fn whole_seconds(d: Duration) -> i64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}
