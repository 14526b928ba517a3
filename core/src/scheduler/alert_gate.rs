//! The runner's own alerts (a job stopped by a fatal error, memory over its fatal line)
//! pass a dedup window kept in the store, so a restart loop does not page a human once
//! per restart for the same stop: the window outlives the process.
//!
//! The window is the daemon's to choose (`Runner::dedup_alerts`, from its notification
//! settings); without one every alert goes out. The monitor's alerts do not pass here:
//! its episodes already alert once each, durably.

use std::sync::Arc;
use std::time::Duration;

use super::AlertSinkDyn;
use crate::alert::Alert;
use crate::db::Db;
use crate::env::Env;
use crate::event::{Event, EventKind};
use crate::taxonomy::ErrorClass;

/// Sends alerts unless one of the same key went out within the window.
#[derive(Debug)]
pub(super) struct AlertGate<E: Env> {
    pub(super) db: Arc<Db<E>>,
    pub(super) window: Option<Duration>,
    pub(super) sink: Arc<dyn AlertSinkDyn>,
}

impl<E: Env> AlertGate<E> {
    /// Sends `alert` unless its key was alerted within the window; records it sent.
    pub(super) async fn send(&self, env: &E, alert: Alert) {
        let Some(window) = self.window else {
            self.sink.send(alert);
            return;
        };
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let key = format!(
            "{}:{}:{}",
            alert.kind.as_str(),
            alert.job.as_deref().unwrap_or_default(),
            alert.service.as_deref().unwrap_or_default()
        );
        // An unreadable store does not silence an alert.
        if let Ok(Some(last)) = self.db.alert_sent_at(&key)
            && last <= alert.at
            && alert.at - last < window
        {
            return;
        }
        let at = alert.at;
        self.sink.send(alert);
        let forget_before = at.checked_sub_signed(window).unwrap_or(at);
        if let Err(e) = self.db.record_alert_sent(&key, at, forget_before).await {
            env.emit(
                Event::new(EventKind::HeartbeatFinding)
                    .class(ErrorClass::Degraded)
                    .detail(format!("alert dedup not kept: {e}")),
            );
        }
    }
}
