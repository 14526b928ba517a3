//! Per-service gates: "not before T" for every call to a service, whoever makes it.
//!
//! A `Retry-After` (seconds or HTTP date) on any answer, a quota that says it is spent
//! until its reset, or a breaker that opened holds the service's gate until that
//! instant. Every job, step and run consults the gate before it calls: a step waits
//! for a gate that opens within its run's deadline and is deferred (not failed, no
//! call) when it opens later; the next slot consults the same gate, so nobody calls
//! inside a window the service advertised to anyone.
//!
//! Gates live in memory and in the store's `gates` table (written on every change,
//! read back at start), so a restart does not forget a quota that resets tomorrow. A
//! hold only ever moves later; a stored hold further ahead than [`MAX_HOLD`] (a
//! hand-edited row, a clock that jumped) is pulled back to it. With the pattern off
//! ([`Gates::none`]) nothing is held: the naive habit, where only the step that got
//! the 429 waits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::retry_after;
use crate::db::time::{from_ms, to_ms};
use crate::db::{Db, DbError};
use crate::env::Env;
use crate::event::{Event, EventKind};

/// The longest a gate holds: a daily quota's reset is within it, a typo in a header
/// is not allowed to lock a service out for a year.
pub const MAX_HOLD: Duration = Duration::from_secs(48 * 3600);
/// How long a caller refused by a half-open breaker (another caller's probe out)
/// waits before it asks again.
pub const PROBE_POLL: Duration = Duration::from_secs(1);
/// At most this many gates are read back (one per configured service).
const MAX_ROWS: i64 = 10_000;

/// Why and until when a service's gate holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    /// No call before this instant.
    pub not_before: DateTime<Utc>,
    /// What set it: `retry_after`, `quota_reset` or `breaker_open`.
    pub reason: String,
}

/// The gates of every service, shared by all jobs.
#[derive(Debug)]
pub struct Gates<E: Env> {
    env: E,
    db: Arc<Db<E>>,
    /// Off: nothing is ever held.
    on: bool,
    held: Mutex<BTreeMap<String, Hold>>,
    /// Serialises writers, so an older hold never lands after a newer one.
    persist: tokio::sync::Mutex<()>,
}

impl<E: Env> Gates<E> {
    /// Gates that hold (the pattern on).
    pub fn new(env: E, db: Arc<Db<E>>) -> Self {
        Self::build(env, db, true)
    }

    /// Gates that never hold (the pattern off).
    pub fn none(env: E, db: Arc<Db<E>>) -> Self {
        Self::build(env, db, false)
    }

    fn build(env: E, db: Arc<Db<E>>, on: bool) -> Self {
        Self {
            env,
            db,
            on,
            held: Mutex::new(BTreeMap::new()),
            persist: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads back the holds that have not passed yet.
    pub fn restore(&self) -> Result<(), DbError> {
        if !self.on {
            return Ok(());
        }
        let now = self.env.now();
        let latest = now + chrono::Duration::from_std(MAX_HOLD).unwrap_or_default();
        let rows = self.db.read("read service gates", |c| {
            // The bound is in the SQL text, as in the store's other bounded reads.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT service, not_before, reason FROM gates ORDER BY service LIMIT {MAX_ROWS}"
            ))?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    from_ms(r.get(1)?),
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut held = lock(&self.held);
        for (service, not_before, reason) in rows {
            if not_before > now {
                let not_before = not_before.min(latest);
                self.env.emit(
                    Event::new(EventKind::GateHeld)
                        .service(&service)
                        .delay((not_before - now).to_std().unwrap_or_default())
                        .detail(format!(
                            "{reason}: no call before {}; restored from the store",
                            not_before.to_rfc3339()
                        )),
                );
                held.insert(service, Hold { not_before, reason });
            }
        }
        Ok(())
    }

    /// The hold on `service` at `now`, if its gate is closed.
    pub fn closed(&self, service: &str, now: DateTime<Utc>) -> Option<Hold> {
        lock(&self.held)
            .get(service)
            .filter(|h| h.not_before > now)
            .cloned()
    }

    /// When a call refused because another caller holds the half-open probe should
    /// ask again: shortly, within the deadline; `None` when it should not wait (the
    /// pattern off, or no time left).
    pub fn after_probe(
        &self,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let at = now + chrono::Duration::from_std(PROBE_POLL).unwrap_or_default();
        (self.on && at <= deadline).then_some(at)
    }

    /// Every hold that has not passed, by service (for status and metrics).
    pub fn holds(&self, now: DateTime<Utc>) -> BTreeMap<String, Hold> {
        lock(&self.held)
            .iter()
            .filter(|(_, h)| h.not_before > now)
            .map(|(s, h)| (s.clone(), h.clone()))
            .collect()
    }

    /// Holds `service` until `until` (never earlier than it already is); persists and
    /// emits when that moves the gate. Returns the hold in force.
    pub async fn hold(&self, service: &str, until: DateTime<Utc>, reason: &str) -> Option<Hold> {
        if !self.on {
            return None;
        }
        let now = self.env.now();
        let until = until.min(now + chrono::Duration::from_std(MAX_HOLD).unwrap_or_default());
        let hold = {
            let mut held = lock(&self.held);
            let current = held.get(service);
            if current.is_some_and(|h| h.not_before >= until) || until <= now {
                return current.cloned();
            }
            let hold = Hold {
                not_before: until,
                reason: reason.to_string(),
            };
            held.insert(service.to_string(), hold.clone());
            hold
        };
        self.env.emit(
            Event::new(EventKind::GateHeld)
                .service(service)
                .delay((until - now).to_std().unwrap_or_default())
                .detail(format!("{reason}: no call before {}", until.to_rfc3339())),
        );
        self.save(service).await;
        Some(hold)
    }

    async fn save(&self, service: &str) {
        let _writer = self.persist.lock().await;
        let Some(hold) = lock(&self.held).get(service).cloned() else {
            return;
        };
        let service = service.to_string();
        let written = self
            .db
            .write("save a service gate", move |tx| {
                tx.execute(
                    "INSERT INTO gates (service, not_before, reason) VALUES (?1, ?2, ?3)
                     ON CONFLICT (service) DO UPDATE SET not_before = excluded.not_before,
                         reason = excluded.reason",
                    params![service, to_ms(hold.not_before), hold.reason],
                )
                .map(|_| ())
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(
                target: "steadfast",
                error = %e,
                "failed to persist a service gate (hint: the gate holds in memory; a restart forgets it)"
            );
        }
    }
}

/// When an answer says the service takes no calls before: its `Retry-After`, or the
/// reset of a quota it says is spent (`RateLimit-Remaining: 0` or
/// `X-RateLimit-Remaining: 0` with the matching `...-Reset`, in seconds from now or,
/// above 10^9, a Unix time).
pub fn advertised(
    header: impl Fn(&str) -> Option<String>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, &'static str)> {
    let after = |d: Duration| now + chrono::Duration::from_std(d.min(MAX_HOLD)).unwrap_or_default();
    if let Some(wait) = header("retry-after").and_then(|v| retry_after::parse(&v, now)) {
        return Some((after(wait), "retry_after"));
    }
    for prefix in ["ratelimit", "x-ratelimit"] {
        let spent = header(&format!("{prefix}-remaining")).is_some_and(|v| v.trim() == "0");
        if !spent {
            continue;
        }
        let reset = header(&format!("{prefix}-reset"))?;
        let n: u64 = reset.trim().parse().ok()?;
        let at = if n > 1_000_000_000 {
            let epoch = DateTime::<Utc>::from_timestamp(i64::try_from(n).ok()?, 0)?;
            (epoch - now).to_std().map_or(now, after)
        } else {
            after(Duration::from_secs(n))
        };
        return Some((at, "quota_reset"));
    }
    None
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
    }

    fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let secs = advertised(headers(&[("retry-after", "120")]), now());
        assert_eq!(
            secs,
            Some((now() + chrono::Duration::seconds(120), "retry_after"))
        );
        let date = advertised(
            headers(&[("retry-after", "Mon, 02 Mar 2026 10:05:00 GMT")]),
            now(),
        );
        assert_eq!(
            date,
            Some((now() + chrono::Duration::minutes(5), "retry_after"))
        );
    }

    #[test]
    fn a_spent_quota_holds_until_its_reset() {
        let delta = advertised(
            headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "3600"),
            ]),
            now(),
        );
        assert_eq!(
            delta,
            Some((now() + chrono::Duration::hours(1), "quota_reset"))
        );
        let epoch = (now() + chrono::Duration::hours(2)).timestamp().to_string();
        let at = advertised(
            headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", &epoch)]),
            now(),
        );
        assert_eq!(
            at,
            Some((now() + chrono::Duration::hours(2), "quota_reset"))
        );
        let left = advertised(
            headers(&[
                ("x-ratelimit-remaining", "3"),
                ("x-ratelimit-reset", "3600"),
            ]),
            now(),
        );
        assert_eq!(left, None);
    }

    #[test]
    fn holds_are_bounded() {
        let far = advertised(headers(&[("retry-after", "999999999")]), now());
        assert_eq!(
            far.map(|(at, _)| at),
            Some(now() + chrono::Duration::from_std(MAX_HOLD).unwrap())
        );
    }
}
