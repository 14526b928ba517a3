//! Schedules: fixed interval or cron (croner), in the runner's zone; catch-up after
//! downtime is at most one run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::ScheduleConfig;

/// A bad schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expr}`: {detail}")]
    Cron {
        /// The expression.
        expr: String,
        /// What croner said.
        detail: String,
    },
    /// The interval is zero.
    #[error("interval must be positive")]
    ZeroInterval,
}

/// A job's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    _private: (),
}

impl Schedule {
    /// Builds a schedule read in `zone`.
    pub fn new(config: &ScheduleConfig, zone: Tz) -> Result<Self, ScheduleError> {
        let _ = (config, zone);
        unimplemented!("schedule")
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let _ = after;
        unimplemented!("schedule")
    }

    /// The nominal interval between runs (for heartbeat thresholds and deadlines).
    pub fn nominal_interval(&self) -> Duration {
        unimplemented!("schedule")
    }

    /// After downtime: if at least one due time fell in `(last_due, now]`, the latest of
    /// them (run it once, now); `None` when nothing was missed or there is no history.
    pub fn missed(
        &self,
        last_due: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let _ = (last_due, now);
        unimplemented!("schedule")
    }
}
