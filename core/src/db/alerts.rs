//! Alert deduplication in the store, so a restart neither repeats an alert a human
//! already has nor forgets an episode that is still open.
//!
//! Two kinds of rows share the `alerts` table, told apart by their key's prefix: the
//! heartbeat monitor's open episodes (`episode:...`: how many looks in a row have seen
//! the finding, and when it alerted), and the last time an alert of a key went out
//! (`sent:...`), for a dedup window across restarts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::time::{from_ms, to_ms};
use super::{Db, DbError};
use crate::env::Env;

/// Prefix of the monitor's episode keys.
pub const EPISODE: &str = "episode:";
/// Prefix of sent-alert keys.
pub const SENT: &str = "sent:";

/// At most this many episodes are read back (a runner has a few dozen at most).
const MAX_EPISODES: i64 = 10_000;

/// One open episode of the heartbeat monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    /// When the finding was first seen.
    pub opened_at: DateTime<Utc>,
    /// Looks in a row that saw it (capped where it stops mattering).
    pub looks: u32,
    /// When it alerted, if it has.
    pub sent_at: Option<DateTime<Utc>>,
}

impl<E: Env> Db<E> {
    /// The open episodes, by key without the [`EPISODE`] prefix.
    pub fn episodes(&self) -> Result<BTreeMap<String, Episode>, DbError> {
        let rows: Vec<(String, Episode)> = self.read("read alert episodes", |c| {
            // The bound is in the SQL text, as in the store's other bounded reads.
            let mut stmt = c.prepare(&format!(
                "SELECT dedup_key, opened_at, looks, sent_at FROM alerts
                 WHERE substr(dedup_key, 1, 8) = 'episode:' ORDER BY dedup_key LIMIT {MAX_EPISODES}"
            ))?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Episode {
                        opened_at: from_ms(r.get(1)?),
                        looks: r.get::<_, i64>(2)?.clamp(0, i64::from(u32::MAX)) as u32,
                        sent_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                    },
                ))
            })?
            .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, e)| Some((k.strip_prefix(EPISODE)?.to_string(), e)))
            .collect())
    }

    /// Writes the episodes that changed and forgets the ones that closed, in one
    /// transaction (keys without the prefix).
    pub async fn save_episodes(
        &self,
        changed: Vec<(String, Episode)>,
        closed: Vec<String>,
    ) -> Result<(), DbError> {
        if changed.is_empty() && closed.is_empty() {
            return Ok(());
        }
        self.write("save alert episodes", move |tx| {
            for key in closed {
                tx.execute(
                    "DELETE FROM alerts WHERE dedup_key = ?1",
                    [format!("{EPISODE}{key}")],
                )?;
            }
            for (key, e) in changed {
                tx.execute(
                    "INSERT INTO alerts (dedup_key, opened_at, looks, sent_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (dedup_key) DO UPDATE SET opened_at = excluded.opened_at,
                         looks = excluded.looks, sent_at = excluded.sent_at",
                    params![
                        format!("{EPISODE}{key}"),
                        to_ms(e.opened_at),
                        i64::from(e.looks),
                        e.sent_at.map(to_ms)
                    ],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// When an alert of `key` (without the [`SENT`] prefix) last went out.
    pub fn alert_sent_at(&self, key: &str) -> Result<Option<DateTime<Utc>>, DbError> {
        self.read("read when an alert was sent", |c| {
            c.query_row(
                "SELECT sent_at FROM alerts WHERE dedup_key = ?1",
                [format!("{SENT}{key}")],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
        })
        .map(|ms| ms.flatten().map(from_ms))
    }

    /// Records that an alert of `key` went out at `at`; forgets sent-alert rows older
    /// than `forget_before` in the same transaction (bounded table).
    pub async fn record_alert_sent(
        &self,
        key: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let key = format!("{SENT}{key}");
        self.write("record an alert sent", move |tx| {
            tx.execute(
                "DELETE FROM alerts WHERE substr(dedup_key, 1, 5) = 'sent:' AND sent_at < ?1",
                [to_ms(forget_before)],
            )?;
            tx.execute(
                "INSERT INTO alerts (dedup_key, opened_at, looks, sent_at) VALUES (?1, ?2, 0, ?2)
                 ON CONFLICT (dedup_key) DO UPDATE SET sent_at = excluded.sent_at",
                params![key, to_ms(at)],
            )?;
            Ok(())
        })
        .await
    }
}
