//! Pattern 3: heartbeats. Each job's last success and threshold live in a state file
//! shaped like the field report's `heartbeat-state.json`; a monitor flags overdue jobs
//! (silent deaths), memory over its threshold and services failing a health probe.

pub mod monitor;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::store::StoreError;

/// The state file: unix seconds, exactly the field report's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// The heartbeat store of all jobs.
#[derive(Debug)]
pub struct Heartbeats<E: Env> {
    _env: E,
}

impl<E: Env> Heartbeats<E> {
    /// Opens `state_dir/heartbeat-state.json` with each job's threshold; a corrupt file
    /// is reported (as `Err` alongside a fresh state via [`Self::open`]'s second value).
    pub async fn open(
        env: E,
        state_dir: &Path,
        thresholds: &[(String, Duration)],
    ) -> (Self, Option<StoreError>) {
        let _ = (state_dir, thresholds);
        (Self { _env: env }, None)
    }

    /// Records a success of `job` at `at` durably.
    pub async fn record_success(&self, job: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let _ = (job, at);
        unimplemented!("heartbeat")
    }

    /// The last success of `job`.
    pub fn last_success(&self, job: &str) -> Option<DateTime<Utc>> {
        let _ = job;
        unimplemented!("heartbeat")
    }

    /// Jobs overdue at `now`. A job never seen is measured from `since` (runner start).
    pub fn overdue(&self, now: DateTime<Utc>, since: DateTime<Utc>) -> Vec<Finding> {
        let _ = (now, since);
        unimplemented!("heartbeat")
    }

    /// A copy of the state.
    pub fn state(&self) -> HeartbeatState {
        unimplemented!("heartbeat")
    }
}
