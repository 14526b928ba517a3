//! A retry budget per service: retries may be at most a share of calls.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The budgets of all services, shared by all jobs.
#[derive(Debug)]
pub struct RetryBudgets {
    _private: (),
}

impl RetryBudgets {
    /// Budgets allowing `ratio` retries per call plus `min_retries` per `window`.
    /// Disabled budgets always allow.
    pub fn new(ratio: f64, min_retries: u32, window: Duration, enabled: bool) -> Self {
        let _ = (ratio, min_retries, window, enabled);
        unimplemented!("budget")
    }

    /// Records a first attempt (a call) to `service`.
    pub fn record_call(&self, service: &str, now: DateTime<Utc>) {
        let _ = (service, now);
        unimplemented!("budget")
    }

    /// Takes one retry from `service`'s budget; `false` when it is spent.
    pub fn try_retry(&self, service: &str, now: DateTime<Utc>) -> bool {
        let _ = (service, now);
        unimplemented!("budget")
    }
}
