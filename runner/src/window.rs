//! Pattern 6: time windows per action type, in the configured IANA zone, correct
//! across DST changes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::WindowConfig;

/// The windows of all action types.
#[derive(Debug, Clone)]
pub struct Windows {
    _private: (),
}

impl Windows {
    /// Windows in `zone`; when `enabled` is false every action may run anytime.
    pub fn new(zone: Tz, windows: BTreeMap<String, WindowConfig>, enabled: bool) -> Self {
        let _ = (zone, windows, enabled);
        unimplemented!("windows")
    }

    /// Whether `action` may run at `at`. Actions without a window may always run.
    pub fn is_open(&self, action: Option<&str>, at: DateTime<Utc>) -> bool {
        let _ = (action, at);
        unimplemented!("windows")
    }

    /// The first instant at or after `at` when `action` may run.
    pub fn next_open(&self, action: Option<&str>, at: DateTime<Utc>) -> DateTime<Utc> {
        let _ = (action, at);
        unimplemented!("windows")
    }

    /// When the window open at `at` closes; `None` for an action without a window.
    pub fn closes_at(&self, action: Option<&str>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let _ = (action, at);
        unimplemented!("windows")
    }
}
