//! The human operator: fixes what an alert points at after a delay, and looks at the
//! system at a few times of day, fixing whatever is visibly broken.
//!
//! Every fix is a manual intervention, the field report's "daily manual fixes". A fix
//! frees disk space, re-authorises revoked credentials and restarts the runner.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use steadfast_core::alert::{Alert, AlertSink};

/// Alerts kept for the report (bounded).
const MAX_ALERTS: usize = 10_000;

/// One manual intervention.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Intervention {
    /// When the human acted.
    pub at: DateTime<Utc>,
    /// What prompted it: `alert: ...` or `check: ...`.
    pub reason: String,
    /// Fault kinds that fired since the previous intervention (what it was about).
    pub recent_faults: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    alerts: Vec<Alert>,
    pending: Option<(DateTime<Utc>, String)>,
}

/// The runner's alert sink in the simulation: alerts go to the operator's inbox.
#[derive(Debug, Clone)]
pub struct OperatorSink {
    state: Arc<Mutex<State>>,
    delivered: bool,
    response: Duration,
}

impl OperatorSink {
    /// A sink; with `delivered` off alerts are recorded but nobody reads them (the naive
    /// runner had no alerting).
    pub fn new(delivered: bool, response: Duration) -> Self {
        Self {
            state: Arc::default(),
            delivered,
            response,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fix that is due at or before `now`, taken from the inbox.
    pub fn due_fix(&self, now: DateTime<Utc>) -> Option<String> {
        let mut s = self.lock();
        match &s.pending {
            Some((at, _)) if *at <= now => s.pending.take().map(|(_, r)| r),
            _ => None,
        }
    }

    /// Forgets a pending fix (a check fixed things first).
    pub fn clear_pending(&self) {
        self.lock().pending = None;
    }

    /// Every alert raised so far.
    pub fn alerts(&self) -> Vec<Alert> {
        self.lock().alerts.clone()
    }
}

impl AlertSink for OperatorSink {
    fn alert(&self, alert: Alert) {
        let response = chrono::Duration::from_std(self.response).unwrap_or_default();
        let mut s = self.lock();
        if self.delivered && s.pending.is_none() {
            let what = match &alert.job {
                Some(job) => format!("alert: {:?} {job}: {}", alert.kind, alert.message),
                None => format!("alert: {:?}: {}", alert.kind, alert.message),
            };
            s.pending = Some((alert.at + response, what.to_lowercase()));
        }
        if s.alerts.len() < MAX_ALERTS {
            s.alerts.push(alert);
        }
    }
}
