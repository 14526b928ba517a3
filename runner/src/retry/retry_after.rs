//! The `Retry-After` header: delta-seconds or an HTTP date.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parses a `Retry-After` value relative to `now`. A date in the past gives zero;
/// garbage gives `None`.
pub fn parse(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let _ = (value, now);
    unimplemented!("retry-after")
}
