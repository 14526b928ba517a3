//! Each service's circuit breaker: its state, the instant its open period ends, its
//! trip count and when its current episode began. One row per configured service,
//! rewritten in one transaction at every state change, so a restart finds the last
//! state any caller saw (the closed-state failure counters are not kept: a restart
//! forgives a partial run of failures).

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::time::{from_ms, to_ms};
use super::{Db, DbError};
use crate::breaker::BreakerState;
use crate::env::Env;

/// One breaker's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerRow {
    /// The service it guards.
    pub service: String,
    /// Its state.
    pub state: BreakerState,
    /// When its open period ends (meaningless while closed).
    pub until: DateTime<Utc>,
    /// Trips in a row (the cooldown grows with them).
    pub trips: u32,
    /// When the breaker opened for the episode that is still going on.
    pub opened_at: Option<DateTime<Utc>>,
}

impl<E: Env> Db<E> {
    /// At most `limit` breaker rows, by service.
    pub fn breakers(&self, limit: usize) -> Result<Vec<BreakerRow>, DbError> {
        self.read("read the breakers", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT service, state, until_at, trips, opened_at FROM breakers ORDER BY service LIMIT ?1",
            )?;
            stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let state: String = r.get(1)?;
                let state = BreakerState::parse(&state).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        format!("unknown breaker state `{state}`").into(),
                    )
                })?;
                Ok(BreakerRow {
                    service: r.get(0)?,
                    state,
                    until: from_ms(r.get(2)?),
                    trips: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                    opened_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
                })
            })?
            .collect()
        })
    }

    /// Writes every breaker's row in one transaction.
    pub async fn save_breakers(&self, rows: Vec<BreakerRow>) -> Result<(), DbError> {
        self.write("save the breakers", move |tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO breakers (service, state, until_at, trips, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (service) DO UPDATE SET state = excluded.state,
                     until_at = excluded.until_at, trips = excluded.trips,
                     opened_at = excluded.opened_at",
            )?;
            for row in &rows {
                upsert.execute(params![
                    row.service,
                    row.state.as_str(),
                    to_ms(row.until),
                    i64::from(row.trips),
                    row.opened_at.map(to_ms),
                ])?;
            }
            Ok(())
        })
        .await
    }
}
