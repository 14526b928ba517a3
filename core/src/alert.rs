//! Alerts: findings that need a human. The daemon's notifiers and the simulator's
//! operator model implement [`AlertSink`].

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Why a human is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A job stopped on a fatal error.
    Fatal,
    /// A job has not succeeded within its heartbeat threshold.
    Overdue,
    /// Resident memory is over the warning threshold.
    Memory,
    /// A service failed its health probe.
    ServiceUnhealthy,
    /// A breaker stayed open past its limit.
    BreakerStuck,
    /// The state database cannot be opened or read (corrupt, unreadable, newer): the
    /// runner refuses to start rather than start over and lose runs and tokens.
    StateUnreadable,
    /// Slots passed while the runner was down, asleep or stopped and its catch-up
    /// policy did not run them: they are journaled missed, and said so (`alert_missed`).
    SlotsMissed,
}

impl AlertKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::Overdue => "overdue",
            Self::Memory => "memory",
            Self::ServiceUnhealthy => "service_unhealthy",
            Self::BreakerStuck => "breaker_stuck",
            Self::StateUnreadable => "state_unreadable",
            Self::SlotsMissed => "slots_missed",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// When it was raised.
    pub at: DateTime<Utc>,
    /// What kind.
    pub kind: AlertKind,
    /// The job concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The service concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A lowercase message (never a secret).
    pub message: String,
}

/// Where alerts go.
pub trait AlertSink: Send + Sync + 'static {
    /// Delivers one alert (must not block; queue if delivery is slow).
    fn alert(&self, alert: Alert);
}

/// Drops alerts (they still appear as `alert` events in the log).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAlerts;

impl AlertSink for NoAlerts {
    fn alert(&self, _alert: Alert) {}
}

/// Keeps alerts in memory (tests).
#[derive(Debug, Default)]
pub struct CollectAlerts(pub std::sync::Mutex<Vec<Alert>>);

impl AlertSink for CollectAlerts {
    fn alert(&self, alert: Alert) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(alert);
    }
}

impl<T: AlertSink> AlertSink for std::sync::Arc<T> {
    fn alert(&self, alert: Alert) {
        (**self).alert(alert);
    }
}
