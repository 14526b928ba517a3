//! Instants in the store: `BIGINT` milliseconds since the Unix epoch, UTC. Sortable,
//! exact to the millisecond and the same in SQLite and PostgreSQL.

use chrono::{DateTime, Utc};

/// An instant as stored.
pub fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// A stored instant; out-of-range values (only a hand-edited row) clamp to the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}
