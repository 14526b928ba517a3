//! The live status of every job: what the scheduler's job tasks write and what
//! `status`, `/metrics` and the daemon's status file read.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::event::Outcome;
use crate::state_machine::TaskState;

/// The live status of one job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobStatus {
    /// State machine state.
    pub state: TaskState,
    /// Outcome of the last run.
    pub last_outcome: Option<Outcome>,
    /// Last success (from the heartbeat file).
    pub last_success: Option<DateTime<Utc>>,
    /// When the next run is due.
    pub next_run: Option<DateTime<Utc>>,
    /// Failed runs in a row.
    pub consecutive_failures: u32,
}

/// Every job's [`JobStatus`], shared between the job tasks and their readers, with a
/// change signal so a reader can follow it without polling.
#[derive(Debug, Default)]
pub struct StatusBoard {
    jobs: Mutex<BTreeMap<String, JobStatus>>,
    changed: Notify,
}

impl StatusBoard {
    /// A board with these jobs.
    pub fn new(jobs: BTreeMap<String, JobStatus>) -> Self {
        Self {
            jobs: Mutex::new(jobs),
            changed: Notify::new(),
        }
    }

    /// A copy of every job's status, by name.
    pub fn snapshot(&self) -> BTreeMap<String, JobStatus> {
        self.lock().clone()
    }

    /// Changes one job's status (unknown jobs are ignored) and wakes a waiting reader.
    pub fn update(&self, job: &str, f: impl FnOnce(&mut JobStatus)) {
        if let Some(s) = self.lock().get_mut(job) {
            f(s);
        }
        self.changed.notify_one();
    }

    /// Whether `job` has a run in progress.
    pub fn is_running(&self, job: &str) -> bool {
        self.lock()
            .get(job)
            .is_some_and(|s| s.state == TaskState::Running)
    }

    /// Carries failure streaks over from an earlier process (jobs not in `counts`, or
    /// no longer configured, are left alone).
    pub fn restore_failures(&self, counts: &BTreeMap<String, u32>) {
        let mut jobs = self.lock();
        for (name, n) in counts {
            if let Some(s) = jobs.get_mut(name) {
                s.consecutive_failures = *n;
            }
        }
    }

    /// Resolves after the next change (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, JobStatus>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> StatusBoard {
        let s = JobStatus {
            state: TaskState::Idle,
            last_outcome: None,
            last_success: None,
            next_run: None,
            consecutive_failures: 0,
        };
        StatusBoard::new([("a".to_string(), s)].into_iter().collect())
    }

    #[tokio::test]
    async fn an_update_wakes_a_reader_that_was_not_yet_waiting() {
        let b = board();
        b.update("a", |s| s.consecutive_failures += 1);
        // The change happened before the reader waited: it must still see it.
        tokio::time::timeout(std::time::Duration::from_secs(5), b.changed())
            .await
            .expect("the change was signalled");
        assert_eq!(b.snapshot()["a"].consecutive_failures, 1);
    }

    #[test]
    fn failure_streaks_carry_over_for_known_jobs_only() {
        let b = board();
        b.restore_failures(&[("a".into(), 3), ("gone".into(), 9)].into_iter().collect());
        let s = b.snapshot();
        assert_eq!(s["a"].consecutive_failures, 3);
        assert!(!s.contains_key("gone"));
    }
}
