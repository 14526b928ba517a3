//! Schedules: fixed interval or cron (croner), in the runner's zone; catch-up after
//! downtime is at most one run.
//!
//! The field report ran cron jobs "every 15-30 minutes" on a Mac Mini. Two things go
//! wrong there after a sleep, crash or upgrade: an interval counted from process start
//! drifts with every restart, and a naive catch-up replays every slot it slept
//! through (20 back-to-back runs after 5 hours down on a 15-minute job, all hitting
//! the same rate limit). Here an interval is a fixed grid counted from the Unix epoch,
//! and [`Schedule::missed`] yields at most one catch-up run.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::config::ScheduleConfig;

/// A bad schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expr}`: {detail}")]
    Cron {
        /// The expression.
        expr: String,
        /// What croner said.
        detail: String,
    },
    /// The interval is zero.
    #[error("interval must be positive")]
    ZeroInterval,
}

/// A job's schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// What fires when.
    kind: Kind,
    /// See [`Schedule::nominal_interval`]; computed once, at construction.
    nominal: Duration,
}

/// The two kinds of schedule.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Multiples of this many nanoseconds since the Unix epoch (never zero).
    Every(u128),
    /// A cron pattern read in a zone.
    Cron {
        /// The parsed pattern.
        cron: Box<Cron>,
        /// The zone its wall-clock fields are read in.
        zone: Tz,
    },
}

/// Where [`Schedule::nominal_interval`] samples a cron schedule: a Monday
/// (2026-01-05T00:00Z), far from any DST change in either hemisphere's usual rules,
/// so a weekday pattern is sampled on weekdays first.
const NOMINAL_REFERENCE_SECS: i64 = 1_767_571_200;
/// How many occurrences [`Schedule::nominal_interval`] looks at (so this many - 1 gaps).
const NOMINAL_SAMPLES: usize = 8;
/// The number of nanoseconds in a second.
const NANOS_PER_SEC: u128 = 1_000_000_000;

impl Schedule {
    /// Builds a schedule read in `zone`.
    ///
    /// `Every` ignores the zone (the grid is counted in UTC from the Unix epoch; use
    /// cron for "every day at local midnight"). A cron expression has 5 fields, or 6
    /// with seconds first; it must parse and must fire at least twice after the
    /// reference instant, so "February 30th" is rejected here rather than never
    /// running.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::ZeroInterval`] for `Every(0)`, [`ScheduleError::Cron`] for an
    /// expression that does not parse or never fires.
    pub fn new(config: &ScheduleConfig, zone: Tz) -> Result<Self, ScheduleError> {
        match config {
            ScheduleConfig::Every(interval) => {
                let nanos = interval.as_nanos();
                if nanos == 0 {
                    return Err(ScheduleError::ZeroInterval);
                }
                Ok(Self {
                    kind: Kind::Every(nanos),
                    nominal: *interval,
                })
            }
            ScheduleConfig::Cron(expr) => {
                let cron = Cron::from_str(expr).map_err(|e| ScheduleError::Cron {
                    expr: expr.clone(),
                    detail: e.to_string(),
                })?;
                Self::from_cron(cron, zone)
            }
        }
    }

    /// A schedule from a cron pattern already parsed (the configuration reader parses
    /// it once, for its own messages).
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Cron`] when the pattern never fires repeatedly.
    pub fn from_cron(cron: Cron, zone: Tz) -> Result<Self, ScheduleError> {
        let nominal = cron_nominal_interval(&cron, zone).map_err(|detail| ScheduleError::Cron {
            expr: cron.as_str().to_string(),
            detail,
        })?;
        Ok(Self {
            kind: Kind::Cron {
                cron: Box::new(cron),
                zone,
            },
            nominal,
        })
    }

    /// The cron pattern as written, or `None` for a fixed interval.
    pub fn cron_pattern(&self) -> Option<&str> {
        match &self.kind {
            Kind::Every(_) => None,
            Kind::Cron { cron, .. } => Some(cron.as_str()),
        }
    }

    /// The first due time strictly after `after`.
    ///
    /// For cron, occurrences are found on the wall clock of the zone: a time skipped
    /// by a spring-forward change is left out, and a pattern matching every few
    /// minutes fires in both halves of a repeated fall-back hour (croner's rules);
    /// due times are always strictly increasing instants. Should croner find no
    /// occurrence (only past its year limit), this returns the latest representable
    /// instant: the job is never due rather than due in a loop.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        match &self.kind {
            Kind::Every(step) => {
                let k = floor_div(epoch_nanos(after), *step).saturating_add(1);
                from_epoch_nanos(k.saturating_mul(*step as i128))
            }
            Kind::Cron { cron, zone } => cron_next(cron, *zone, after),
        }
    }

    /// The nominal interval between runs (for heartbeat thresholds and deadlines).
    ///
    /// `Every(d)` gives `d`. A cron schedule gives the smallest gap between its first
    /// 8 occurrences after 2026-01-05T00:00Z (a Monday) in its zone: the tightest
    /// spacing it runs at. For irregular patterns this under-states the longest gap
    /// (`0 9 * * 1-5` gives one day, though Friday to Monday is three), so a
    /// heartbeat threshold derived from it should allow for that.
    pub fn nominal_interval(&self) -> Duration {
        self.nominal
    }

    /// After downtime: if at least one due time fell in `(last_due, now]`, the latest of
    /// them (run it once, now); `None` when nothing was missed or there is no history.
    pub fn missed(
        &self,
        last_due: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let last_due = last_due?;
        let first_missed = self.next_after(last_due);
        if first_missed > now {
            return None;
        }
        let latest = match &self.kind {
            Kind::Every(step) => {
                from_epoch_nanos(floor_div(epoch_nanos(now), *step).saturating_mul(*step as i128))
            }
            Kind::Cron { cron, zone } => cron
                .find_previous_occurrence(&now.with_timezone(zone), true)
                .map(|at| at.with_timezone(&Utc))
                .unwrap_or(first_missed),
        };
        // Both bounds hold by construction; the clamp keeps a surprise from croner's
        // backward search from ever reporting a slot outside `(last_due, now]`.
        Some(latest.clamp(first_missed, now))
    }
}

/// The next cron occurrence strictly after `after`, searched on `zone`'s wall clock.
fn cron_next(cron: &Cron, zone: Tz, after: DateTime<Utc>) -> DateTime<Utc> {
    cron.find_next_occurrence(&after.with_timezone(&zone), false)
        .map(|at| at.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The smallest gap between the first [`NOMINAL_SAMPLES`] occurrences after the
/// reference instant, or why there is none.
fn cron_nominal_interval(cron: &Cron, zone: Tz) -> Result<Duration, String> {
    let reference = DateTime::from_timestamp(NOMINAL_REFERENCE_SECS, 0)
        .ok_or_else(|| "reference instant out of range".to_owned())?;
    let mut previous = reference.with_timezone(&zone);
    let mut smallest: Option<Duration> = None;
    for i in 0..NOMINAL_SAMPLES {
        let next = cron.find_next_occurrence(&previous, false).map_err(|e| {
            format!("it never fires: {e} (hint: check that the day of month exists in that month)")
        })?;
        if i > 0 {
            let gap = (next - previous).to_std().unwrap_or(Duration::ZERO);
            smallest = Some(smallest.map_or(gap, |s| s.min(gap)));
        }
        previous = next;
    }
    smallest
        .filter(|gap| !gap.is_zero())
        .ok_or_else(|| "the expression does not fire repeatedly".to_owned())
}

/// Nanoseconds since the Unix epoch (negative before it).
fn epoch_nanos(at: DateTime<Utc>) -> i128 {
    i128::from(at.timestamp()) * NANOS_PER_SEC as i128 + i128::from(at.timestamp_subsec_nanos())
}

/// The instant `nanos` after the Unix epoch, saturating at chrono's range.
fn from_epoch_nanos(nanos: i128) -> DateTime<Utc> {
    let nanos_per_sec = NANOS_PER_SEC as i128;
    let secs = nanos.div_euclid(nanos_per_sec);
    let subsec = nanos.rem_euclid(nanos_per_sec);
    i64::try_from(secs)
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, subsec as u32))
        .unwrap_or(if nanos < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// `floor(n / d)` for a positive `d`, so instants before the epoch land on the grid too.
fn floor_div(n: i128, d: u128) -> i128 {
    // `d` is a nanosecond count of a `Duration`, at most ~1.8e28, well inside i128.
    n.div_euclid(d as i128)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use proptest::prelude::*;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn berlin() -> Tz {
        chrono_tz::Europe::Berlin
    }

    fn every(d: Duration) -> Schedule {
        Schedule::new(&ScheduleConfig::Every(d), chrono_tz::UTC).unwrap()
    }

    fn cron(expr: &str, zone: Tz) -> Schedule {
        Schedule::new(&ScheduleConfig::Cron(expr.to_owned()), zone).unwrap()
    }

    /// Every due time in `(from, to]`, walking `next_after` (bounded).
    fn due_times(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..10_000 {
            t = s.next_after(t);
            if t > to {
                return out;
            }
            out.push(t);
        }
        panic!("more than 10000 due times in ({from}, {to}]");
    }

    const FIFTEEN_MIN: Duration = Duration::from_secs(15 * 60);

    #[test]
    fn interval_grid_is_aligned_to_the_epoch() {
        let s = every(FIFTEEN_MIN);
        assert_eq!(
            s.next_after(utc("2026-01-05T10:07:13.5Z")),
            utc("2026-01-05T10:15:00Z")
        );
        // Strictly after: sitting on a slot gives the next one.
        assert_eq!(
            s.next_after(utc("2026-01-05T10:15:00Z")),
            utc("2026-01-05T10:30:00Z")
        );
        assert_eq!(
            s.next_after(utc("2026-01-05T10:14:59.999999999Z")),
            utc("2026-01-05T10:15:00Z")
        );
        // An odd interval: 7 minutes counted from 1970-01-01T00:00Z.
        let seven = every(Duration::from_secs(7 * 60));
        let next = seven.next_after(utc("2026-01-05T10:00:00Z"));
        assert_eq!(next.timestamp() % (7 * 60), 0);
        assert!(next > utc("2026-01-05T10:00:00Z"));
        assert!(next - utc("2026-01-05T10:00:00Z") <= TimeDelta::minutes(7));
        // Before the epoch the grid continues (floor, not truncation toward zero).
        assert_eq!(
            s.next_after(utc("1969-12-31T23:50:00Z")),
            utc("1970-01-01T00:00:00Z")
        );
    }

    #[test]
    fn interval_grid_survives_a_restart() {
        // Two processes, the second started after a crash at an arbitrary instant:
        // both produce the same grid, so restarts neither shift nor double runs.
        let before_crash = every(FIFTEEN_MIN);
        let after_restart = every(FIFTEEN_MIN);
        let first = due_times(
            &before_crash,
            utc("2026-01-05T09:00:00Z"),
            utc("2026-01-05T12:00:00Z"),
        );
        let second = due_times(
            &after_restart,
            utc("2026-01-05T10:03:41Z"),
            utc("2026-01-05T12:00:00Z"),
        );
        assert!(first.ends_with(&second), "{first:?} vs {second:?}");

        // The naive alternative, "start + k * interval" from process start, lands on
        // a different grid after the restart.
        let restart = utc("2026-01-05T10:03:41Z");
        let naive_next = restart + TimeDelta::minutes(15);
        assert!(
            !first.contains(&naive_next),
            "naive grid {naive_next} should drift"
        );
    }

    #[test]
    fn zero_interval_is_rejected() {
        let err = Schedule::new(&ScheduleConfig::Every(Duration::ZERO), berlin()).unwrap_err();
        assert_eq!(err, ScheduleError::ZeroInterval);
    }

    #[test]
    fn nominal_interval() {
        assert_eq!(every(FIFTEEN_MIN).nominal_interval(), FIFTEEN_MIN);
        assert_eq!(
            cron("*/15 * * * *", berlin()).nominal_interval(),
            FIFTEEN_MIN
        );
        assert_eq!(
            cron("0 9 * * *", berlin()).nominal_interval(),
            Duration::from_secs(86_400)
        );
        // The smallest gap: weekdays only still reads as daily.
        assert_eq!(
            cron("0 9 * * 1-5", berlin()).nominal_interval(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            cron("0 9,10 * * *", berlin()).nominal_interval(),
            Duration::from_secs(3_600)
        );
        assert_eq!(
            cron("*/10 * * * * *", berlin()).nominal_interval(),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn cron_every_15_minutes_across_berlin_spring_forward() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z); local 02:xx does not exist.
        let s = cron("*/15 * * * *", berlin());
        let due = due_times(&s, utc("2026-03-28T23:00:00Z"), utc("2026-03-29T22:00:00Z"));
        // The local day has 23 hours, so 23 * 4 slots, each 15 real minutes apart.
        assert_eq!(due.len(), 23 * 4);
        for pair in due.windows(2) {
            assert_eq!(pair[1] - pair[0], TimeDelta::minutes(15), "at {}", pair[0]);
        }
        let walls: Vec<String> = due
            .iter()
            .map(|t| t.with_timezone(&berlin()).format("%H:%M").to_string())
            .collect();
        assert!(walls.iter().all(|w| !w.starts_with("02:")), "{walls:?}");
        let around: Vec<&str> = walls[5..9].iter().map(String::as_str).collect();
        assert_eq!(around, ["01:30", "01:45", "03:00", "03:15"]);
    }

    #[test]
    fn cron_every_15_minutes_across_berlin_fall_back() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); local 02:xx happens twice.
        let s = cron("*/15 * * * *", berlin());
        let due = due_times(&s, utc("2026-10-24T22:00:00Z"), utc("2026-10-25T23:00:00Z"));
        // 25 hours of 15-minute slots: none skipped, none doubled in real time.
        assert_eq!(due.len(), 25 * 4);
        for pair in due.windows(2) {
            assert_eq!(pair[1] - pair[0], TimeDelta::minutes(15), "at {}", pair[0]);
        }
        // Both halves of the repeated hour run, each wall time at most twice.
        let mut counts = std::collections::BTreeMap::new();
        for t in &due {
            *counts
                .entry(t.with_timezone(&berlin()).format("%H:%M").to_string())
                .or_insert(0) += 1;
        }
        assert_eq!(counts["02:00"], 2);
        assert_eq!(counts["02:45"], 2);
        assert_eq!(counts["01:45"], 1);
        assert_eq!(counts["03:00"], 1);
    }

    #[test]
    fn cron_fixed_time_in_the_gap_or_the_repeated_hour_runs_once() {
        let s = cron("30 2 * * *", berlin());
        // Spring forward: 02:30 does not exist; croner runs at 03:00 CEST instead.
        let spring = due_times(&s, utc("2026-03-28T12:00:00Z"), utc("2026-03-30T12:00:00Z"));
        assert_eq!(
            spring,
            [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]
        );
        // Fall back: 02:30 happens twice; it runs at the first (CEST) only.
        let fall = due_times(&s, utc("2026-10-24T12:00:00Z"), utc("2026-10-26T12:00:00Z"));
        assert_eq!(
            fall,
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
    }

    #[test]
    fn cron_is_read_in_the_configured_zone() {
        let at = utc("2026-07-01T00:00:00Z");
        assert_eq!(
            cron("0 9 * * *", chrono_tz::UTC).next_after(at),
            utc("2026-07-01T09:00:00Z")
        );
        assert_eq!(
            cron("0 9 * * *", berlin()).next_after(at),
            utc("2026-07-01T07:00:00Z")
        );
        assert_eq!(
            cron("0 9 * * *", chrono_tz::America::New_York).next_after(at),
            utc("2026-07-01T13:00:00Z")
        );
    }

    #[test]
    fn six_field_expression_has_seconds_first() {
        let s = cron("30 */10 * * * *", berlin());
        assert_eq!(
            s.next_after(utc("2026-01-05T10:00:00Z")),
            utc("2026-01-05T10:00:30Z")
        );
        assert_eq!(
            s.next_after(utc("2026-01-05T10:00:30Z")),
            utc("2026-01-05T10:10:30Z")
        );
        // Sub-second `after` still gives a strictly later, whole-second due time.
        assert_eq!(
            s.next_after(utc("2026-01-05T10:00:30.4Z")),
            utc("2026-01-05T10:10:30Z")
        );
        assert_eq!(s.nominal_interval(), Duration::from_secs(600));
    }

    #[test]
    fn invalid_cron_expressions_are_rejected_with_croners_message() {
        for expr in ["61 * * * *", "not a cron", "", "* * *", "0 0 30 2 *"] {
            match Schedule::new(&ScheduleConfig::Cron(expr.to_owned()), berlin()) {
                Err(ScheduleError::Cron { expr: got, detail }) => {
                    assert_eq!(got, expr);
                    assert!(!detail.is_empty());
                }
                other => panic!("{expr:?}: expected a cron error, got {other:?}"),
            }
        }
        let err = Schedule::new(&ScheduleConfig::Cron("61 * * * *".into()), berlin()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cron expression `61 * * * *`: Component error: Number out of bounds."
        );
    }

    #[test]
    fn missed_without_history_is_none() {
        let s = every(FIFTEEN_MIN);
        assert_eq!(s.missed(None, utc("2026-01-05T15:00:00Z")), None);
    }

    #[test]
    fn missed_is_none_when_no_slot_passed() {
        let s = every(FIFTEEN_MIN);
        let last = utc("2026-01-05T10:00:00Z");
        assert_eq!(s.missed(Some(last), last), None);
        assert_eq!(s.missed(Some(last), utc("2026-01-05T10:14:59Z")), None);
        assert_eq!(
            s.missed(Some(last), utc("2026-01-05T10:15:00Z")),
            Some(utc("2026-01-05T10:15:00Z"))
        );
    }

    #[test]
    fn five_hours_down_on_a_15_minute_schedule_catches_up_once() {
        let last_due = utc("2026-01-05T10:00:00Z");
        let now = utc("2026-01-05T15:07:00Z");
        for s in [every(FIFTEEN_MIN), cron("*/15 * * * *", berlin())] {
            // Naive catch-up replays every slot slept through: 20 runs in a burst,
            // all against the same rate limits.
            let naive_replay = due_times(&s, last_due, now);
            assert_eq!(naive_replay.len(), 20);
            // Ours: exactly one run, for the latest slot.
            assert_eq!(
                s.missed(Some(last_due), now),
                Some(utc("2026-01-05T15:00:00Z"))
            );
            assert_eq!(naive_replay.last(), Some(&utc("2026-01-05T15:00:00Z")));
        }
    }

    #[test]
    fn missed_across_berlin_fall_back_is_the_latest_slot() {
        let s = cron("*/15 * * * *", berlin());
        // Down from 01:50 CEST to 02:20 CET: the repeated hour lies in between.
        let last_due = utc("2026-10-24T23:45:00Z");
        let now = utc("2026-10-25T01:20:00Z");
        assert_eq!(
            s.missed(Some(last_due), now),
            Some(utc("2026-10-25T01:15:00Z"))
        );
    }

    fn zones() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            chrono_tz::UTC,
            chrono_tz::Europe::Berlin,
            chrono_tz::America::New_York,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Asia::Kolkata,
        ])
    }

    proptest! {
        #[test]
        fn interval_next_after_is_the_next_grid_point(
            secs in -1_000_000_000i64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
            step_secs in 1u64..200_000,
        ) {
            let s = every(Duration::from_secs(step_secs));
            let at = DateTime::from_timestamp(secs, nanos).unwrap();
            let next = s.next_after(at);
            prop_assert!(next > at);
            prop_assert!(next - at <= TimeDelta::seconds(step_secs as i64));
            prop_assert_eq!(next.timestamp_subsec_nanos(), 0);
            prop_assert_eq!(next.timestamp().rem_euclid(step_secs as i64), 0);
        }

        #[test]
        fn missed_is_the_last_due_time_in_the_gap(
            zone in zones(),
            expr in prop::sample::select(vec!["*/15 * * * *", "0 * * * *", "5,35 1-3 * * *"]),
            start in 1_735_689_600i64..1_798_761_600,
            down_mins in 0i64..(3 * 24 * 60),
        ) {
            let s = cron(expr, zone);
            let last_due = s.next_after(DateTime::from_timestamp(start, 0).unwrap());
            let now = last_due + TimeDelta::minutes(down_mins);
            let due = due_times(&s, last_due, now);
            prop_assert_eq!(s.missed(Some(last_due), now), due.last().copied());
            for pair in due.windows(2) {
                prop_assert!(pair[0] < pair[1]);
            }
        }
    }
}
