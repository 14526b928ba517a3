//! The heartbeat monitor loop (stub until the heartbeat branch lands).
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Heartbeats;
use crate::alert::AlertSink;
use crate::config::Url;
use crate::env::Env;

/// Stub.
#[derive(Debug)]
pub struct Monitor<E: Env, A: AlertSink> {
    _x: (E, A),
}
impl<E: Env, A: AlertSink> Monitor<E, A> {
    /// Stub.
    pub fn new(
        env: E,
        heartbeats: Arc<Heartbeats<E>>,
        services: Vec<(String, Url, Duration)>,
        memory_warn_bytes: u64,
        alerts: A,
        since: DateTime<Utc>,
    ) -> Self {
        let _ = (heartbeats, services, memory_warn_bytes, since);
        Self { _x: (env, alerts) }
    }
    /// Stub.
    pub async fn run(self, interval: Duration, shutdown: tokio::sync::watch::Receiver<bool>) {
        let _ = (interval, shutdown);
    }
}
