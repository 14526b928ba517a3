//! Pattern 6: time windows per action type, in the configured IANA zone, correct
//! across DST changes.
//!
//! The field report gated publishing on `datetime.now().hour`, the machine clock's
//! hour: move the machine (or run it in UTC) and "business hours" silently shift.
//! Here every window is read in one configured zone.
//!
//! # Semantics
//!
//! A window `[start, end)` is a set of instants, built day by day: for each local
//! date `D` it is open from the instant local time reaches `start` on `D` until the
//! instant local time reaches `end` (on `D`, or on `D + 1` when `end < start`, a
//! window spanning midnight). A local time is turned into an instant as follows:
//!
//! - it exists once: that instant;
//! - it exists twice (the clock falls back): the earlier instant for a start; for
//!   an end, the window closes at the first and reopens for as long as the repeated
//!   hour reads inside it again (see below);
//! - it does not exist (the clock springs forward over it): the first instant after
//!   the gap, so a window starting at 02:30 on a day that skips 02:00-03:00 opens
//!   at 03:00. A window lying wholly inside a gap does not open that day.
//!
//! Windows are wall-clock: an action may run exactly while the local clock reads a
//! time inside its window. When the clock falls back inside an interval to a time
//! before `start` (a 01:30-02:30 window on the night 02:00 EDT becomes 01:00 EST), the
//! stretch where it reads outside is cut out, so that night the window is open
//! 01:30-02:00 EDT and again 01:30-02:30 EST, never 01:00-01:30 EST. When the window
//! ends inside the repeated hour (01:30-02:30 in Berlin, where 03:00 CEST becomes 02:00
//! CET), it closes at 02:30 CEST and opens again 02:00-02:30 CET, while the wall clock
//! reads inside it once more. A window spanning the transition whose start stays
//! behind the rewound clock (22:00-03:00) is one interval: the wall clock never leaves
//! it.
//!
//! `start == end` means "always open" (a zero-length window would never open, which
//! nobody configures on purpose). `is_open`, `next_open` and `closes_at` all derive
//! from the same per-day intervals, so they never disagree with each other, even in
//! the repeated hour where plain local-time comparison would.

use std::collections::BTreeMap;

use chrono::{
    DateTime, Days, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::config::WindowConfig;

/// How many local days before the instant's own date the search looks at: one, for a
/// midnight-spanning window opened yesterday.
const DAYS_BEFORE: u64 = 1;
/// How many local days after the instant's own date the search looks at. Three is
/// plenty: a window opens every day except when it lies wholly in a DST gap, and
/// even a zone that skipped a whole calendar day (Pacific/Apia, 2011-12-30) leaves
/// the next one.
const DAYS_AFTER: u64 = 3;
/// Half-width of the bracket searched for the end of a DST gap. UTC offsets stay
/// within about +-14 h, so 27 h on either side always brackets the gap.
const GAP_BRACKET_HOURS: i64 = 27;

/// The windows of all action types.
#[derive(Debug, Clone)]
pub struct Windows {
    /// The zone windows are read in: the runner's, not the machine's.
    zone: Tz,
    /// The windows, by action type; an action without an entry may always run (so an
    /// empty map is the pattern switched off).
    windows: BTreeMap<String, WindowConfig>,
}

impl Windows {
    /// Windows in `zone`.
    pub fn new(zone: Tz, windows: BTreeMap<String, WindowConfig>) -> Self {
        Self { zone, windows }
    }

    /// No windows: every action may run anytime (the pattern switched off).
    pub fn anytime(zone: Tz) -> Self {
        Self::new(zone, BTreeMap::new())
    }

    /// Whether `action` may run at `at`. Actions without a window may always run.
    pub fn is_open(&self, action: Option<&str>, at: DateTime<Utc>) -> bool {
        let Some(window) = self.bounded_window(action) else {
            return true;
        };
        // Intervals come in order and do not overlap, so the first one that has not
        // closed yet is the only one that can contain `at`.
        self.intervals_from(window, at)
            .next()
            .is_some_and(|(open, _)| open <= at)
    }

    /// The first instant at or after `at` when `action` may run.
    ///
    /// `at` itself when the window is open; otherwise the instant the next window
    /// opens (see the module docs for DST gaps and repeated hours).
    pub fn next_open(&self, action: Option<&str>, at: DateTime<Utc>) -> DateTime<Utc> {
        let Some(window) = self.bounded_window(action) else {
            return at;
        };
        match self.intervals_from(window, at).next() {
            Some((open, _)) => open.max(at),
            // Unreachable with real zone data (some day in the search opens); waiting a
            // day and asking again fails closed instead of running outside the window.
            None => at.checked_add_signed(TimeDelta::days(1)).unwrap_or(at),
        }
    }

    /// When the window open at `at` closes; `None` for an action without a window.
    ///
    /// Also `None` when the window is always open
    /// (`start == end`): it never closes. When the window is not open at `at`, the
    /// close of the next window. Back-to-back intervals (possible when an end and the
    /// next start both fall in the same DST gap) count as one window.
    pub fn closes_at(&self, action: Option<&str>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let window = self.bounded_window(action)?;
        let mut intervals = self.intervals_from(window, at);
        let (_, mut close) = intervals.next()?;
        for (open, next_close) in intervals {
            if open > close {
                break;
            }
            close = close.max(next_close);
        }
        Some(close)
    }

    /// The window that can actually close for `action`: `None` when the action has
    /// none or it is always open.
    fn bounded_window(&self, action: Option<&str>) -> Option<WindowConfig> {
        let window = *self.windows.get(action?)?;
        (window.start != window.end).then_some(window)
    }

    /// The local calendar date of `at` in the zone.
    fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }

    /// The non-empty intervals, in order, whose close is after `at`: the one open at
    /// `at` (if any) first. Bounded to a few local days.
    fn intervals_from(
        &self,
        window: WindowConfig,
        at: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let today = self.local_date(at);
        let first = today
            .checked_sub_days(Days::new(DAYS_BEFORE))
            .unwrap_or(today);
        first
            .iter_days()
            .take((DAYS_BEFORE + 1 + DAYS_AFTER) as usize)
            .flat_map(move |date| self.interval(window, date).into_iter().flatten())
            .filter(move |&(open, close)| open < close && close > at)
    }

    /// The interval opened on local date `date`: `[start on date, end on date or the
    /// day after)`, each resolved to an instant by the rules in the module docs.
    ///
    /// When the clock falls back inside that interval, it comes in up to two pieces,
    /// each where the wall clock reads inside the window: before the fall-back, until
    /// the wall clock first reaches `end`; after it, from where the rewound clock reads
    /// `start` again (at once, if it already does) until it reaches `end` the last time.
    fn interval(&self, window: WindowConfig, date: NaiveDate) -> [Option<Interval>; 2] {
        let Some((open, first_close)) = self.whole_interval(window, date) else {
            return [None, None];
        };
        let start = date.and_time(window.start);
        let end = self.end_local(window, date);
        let last_close = end
            .and_then(|end| resolve_last(self.zone, end))
            .unwrap_or(first_close);
        let (Some(back), Some(end)) = (fall_back_within(self.zone, open, last_close), end) else {
            return [Some((open, first_close)), None];
        };
        let before = (open, first_close.min(back));
        let wall = back.with_timezone(&self.zone).naive_local();
        let reopen = if wall < start {
            Some(back + (start - wall))
        } else if wall < end {
            Some(back)
        } else {
            None
        };
        match reopen.filter(|at| *at < last_close) {
            Some(at) if at == before.1 => [Some((before.0, last_close)), None],
            Some(at) => [Some(before), Some((at, last_close))],
            None => [Some(before), None],
        }
    }

    /// The local time the window opened on `date` ends: `end` on `date`, or on the day
    /// after for a window spanning midnight.
    fn end_local(&self, window: WindowConfig, date: NaiveDate) -> Option<NaiveDateTime> {
        let end_date = if window.end < window.start {
            date.succ_opt()?
        } else {
            date
        };
        Some(end_date.and_time(window.end))
    }

    /// `[start on date, end on date or the day after)` as instants (an ambiguous end
    /// at its first occurrence).
    fn whole_interval(&self, window: WindowConfig, date: NaiveDate) -> Option<Interval> {
        let open = resolve(self.zone, date.and_time(window.start))?;
        let close = resolve(self.zone, self.end_local(window, date)?)?;
        Some((open, close))
    }
}

/// An interval of instants, `[open, close)`.
type Interval = (DateTime<Utc>, DateTime<Utc>);

/// The zone's UTC offset at `at`, in seconds.
fn offset_secs(zone: Tz, at: DateTime<Utc>) -> i32 {
    at.with_timezone(&zone).offset().fix().local_minus_utc()
}

/// The instant in `(open, close)` where the clock falls back (its offset drops), if
/// it does: binary search over whole seconds between the two offsets.
fn fall_back_within(zone: Tz, open: DateTime<Utc>, close: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut lo = open.timestamp();
    let mut hi = close.timestamp() - 1;
    if hi <= lo {
        return None;
    }
    let at = |secs: i64| DateTime::from_timestamp(secs, 0);
    let before = offset_secs(zone, open);
    if offset_secs(zone, at(hi)?) >= before {
        return None;
    }
    // Invariant: offset(lo) == before > offset(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_secs(zone, at(mid)?) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(hi)
}

/// The instant local time in `zone` reaches `local`: the instant itself, the earlier
/// one when the clock falls back over it, the first instant after the gap when the
/// clock springs forward over it. `None` only at the ends of chrono's range.
fn resolve(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => gap_end(zone, local),
    }
}

/// Like [`resolve`], but the later instant when the clock falls back over `local`.
fn resolve_last(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Ambiguous(a, b) => Some(a.max(b).with_timezone(&Utc)),
        _ => resolve(zone, local),
    }
}

/// The first instant whose local time is at or past `local`, which lies in a gap:
/// that is the instant the clock jumped over it. Binary search over whole seconds
/// (zone transitions fall on whole seconds), about 18 steps.
fn gap_end(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let as_utc = local.and_utc();
    let bracket = TimeDelta::hours(GAP_BRACKET_HOURS);
    // Invariant: local(lo) < local <= local(hi).
    let mut lo = as_utc.checked_sub_signed(bracket)?.timestamp();
    let mut hi = as_utc.checked_add_signed(bracket)?.timestamp();
    let reached = |secs: i64| -> Option<bool> {
        let at = DateTime::from_timestamp(secs, 0)?;
        Some(at.with_timezone(&zone).naive_local() >= local)
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reached(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, Timelike};
    use proptest::prelude::*;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn hm(start: (u32, u32), end: (u32, u32)) -> WindowConfig {
        WindowConfig {
            start: NaiveTime::from_hms_opt(start.0, start.1, 0).unwrap(),
            end: NaiveTime::from_hms_opt(end.0, end.1, 0).unwrap(),
        }
    }

    /// One window, for the action "a".
    fn one(zone: Tz, window: WindowConfig) -> Windows {
        Windows::new(zone, BTreeMap::from([("a".to_owned(), window)]))
    }

    /// The field report's rule: publishing actions in business hours, internal ones
    /// anytime (no entry).
    fn field_report(zone: Tz) -> Windows {
        let business = hm((9, 0), (22, 0));
        let windows = ["publish", "post", "push"]
            .into_iter()
            .map(|a| (a.to_owned(), business))
            .collect();
        Windows::new(zone, windows)
    }

    const A: Option<&str> = Some("a");
    const NY: Tz = chrono_tz::America::New_York;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn field_report_rule_in_local_time() {
        let w = field_report(BERLIN);
        // Berlin is UTC+2 in July.
        for action in ["publish", "post", "push"] {
            let a = Some(action);
            assert!(
                !w.is_open(a, utc("2026-07-01T06:59:59Z")),
                "{action} at 08:59:59"
            );
            assert!(
                w.is_open(a, utc("2026-07-01T07:00:00Z")),
                "{action} at 09:00"
            );
            assert!(
                w.is_open(a, utc("2026-07-01T19:59:59Z")),
                "{action} at 21:59:59"
            );
            assert!(
                !w.is_open(a, utc("2026-07-01T20:00:00Z")),
                "{action} at 22:00"
            );
            assert_eq!(
                w.next_open(a, utc("2026-07-01T01:00:00Z")),
                utc("2026-07-01T07:00:00Z")
            );
            assert_eq!(
                w.next_open(a, utc("2026-07-01T20:00:00Z")),
                utc("2026-07-02T07:00:00Z")
            );
            assert_eq!(
                w.closes_at(a, utc("2026-07-01T12:00:00Z")),
                Some(utc("2026-07-01T20:00:00Z"))
            );
            // Not open: the close of the next window.
            assert_eq!(
                w.closes_at(a, utc("2026-07-01T21:00:00Z")),
                Some(utc("2026-07-02T20:00:00Z"))
            );
        }
        // Research (and anything else without a window, or no action at all) runs anytime.
        for a in [Some("research"), Some("build"), Some("prepare"), None] {
            let at = utc("2026-07-01T01:00:00Z");
            assert!(w.is_open(a, at));
            assert_eq!(w.next_open(a, at), at);
            assert_eq!(w.closes_at(a, at), None);
        }
    }

    #[test]
    fn without_windows_everything_is_always_open() {
        let w = Windows::anytime(BERLIN);
        let at = utc("2026-07-01T01:00:00Z");
        assert!(w.is_open(Some("publish"), at));
        assert_eq!(w.next_open(Some("publish"), at), at);
        assert_eq!(w.closes_at(Some("publish"), at), None);
    }

    #[test]
    fn start_equal_to_end_is_always_open() {
        let w = one(NY, hm((9, 0), (9, 0)));
        for at in [
            "2026-07-01T12:59:00Z",
            "2026-07-01T13:00:00Z",
            "2026-03-08T07:00:00Z",
        ] {
            let at = utc(at);
            assert!(w.is_open(A, at));
            assert_eq!(w.next_open(A, at), at);
            assert_eq!(w.closes_at(A, at), None);
        }
    }

    #[test]
    fn naive_utc_hour_check_publishes_outside_the_local_window() {
        // What the field report did: `9 <= now.hour < 22` on the machine clock, here UTC.
        let naive_can_publish = |at: DateTime<Utc>| (9..22).contains(&at.hour());
        for zone in [NY, BERLIN] {
            let w = field_report(zone);
            let mut naive_outside = 0;
            let mut ours_outside = 0;
            let mut at = utc("2026-07-01T00:00:00Z");
            for _ in 0..24 * 60 {
                let local_hour = at.with_timezone(&zone).hour();
                let locally_business = (9..22).contains(&local_hour);
                if naive_can_publish(at) && !locally_business {
                    naive_outside += 1;
                }
                if w.is_open(Some("publish"), at) && !locally_business {
                    ours_outside += 1;
                }
                assert_eq!(
                    w.is_open(Some("publish"), at),
                    locally_business,
                    "{zone} {at}"
                );
                at += TimeDelta::minutes(1);
            }
            // New York (UTC-4): naive publishes 05:00-09:00 local; Berlin (UTC+2):
            // 22:00-24:00 local.
            let expected = if zone == NY { 4 * 60 } else { 2 * 60 };
            assert_eq!(naive_outside, expected, "{zone}");
            assert_eq!(ours_outside, 0, "{zone}");
        }
    }

    #[test]
    fn business_hours_follow_new_york_dst() {
        let w = field_report(NY);
        let p = Some("publish");
        // Saturday 2026-03-07 is EST (UTC-5), Sunday 03-08 EDT (UTC-4) from 02:00 on.
        assert_eq!(
            w.next_open(p, utc("2026-03-07T05:00:00Z")),
            utc("2026-03-07T14:00:00Z")
        );
        assert_eq!(
            w.closes_at(p, utc("2026-03-07T15:00:00Z")),
            Some(utc("2026-03-08T03:00:00Z"))
        );
        assert_eq!(
            w.next_open(p, utc("2026-03-08T03:00:00Z")),
            utc("2026-03-08T13:00:00Z")
        );
        assert_eq!(
            w.closes_at(p, utc("2026-03-08T13:00:00Z")),
            Some(utc("2026-03-09T02:00:00Z"))
        );
        // Fall back on 2026-11-01: EDT until 06:00Z, then EST.
        assert_eq!(
            w.next_open(p, utc("2026-10-31T04:00:00Z")),
            utc("2026-10-31T13:00:00Z")
        );
        assert_eq!(
            w.next_open(p, utc("2026-11-01T04:00:00Z")),
            utc("2026-11-01T14:00:00Z")
        );
        assert_eq!(
            w.closes_at(p, utc("2026-11-01T14:00:00Z")),
            Some(utc("2026-11-02T03:00:00Z"))
        );
    }

    #[test]
    fn business_hours_follow_berlin_dst() {
        let w = field_report(BERLIN);
        let p = Some("publish");
        // 2026-03-29: CET (UTC+1) until 01:00Z, then CEST (UTC+2).
        assert_eq!(
            w.next_open(p, utc("2026-03-28T00:00:00Z")),
            utc("2026-03-28T08:00:00Z")
        );
        assert_eq!(
            w.next_open(p, utc("2026-03-29T00:00:00Z")),
            utc("2026-03-29T07:00:00Z")
        );
        // 2026-10-25: CEST until 01:00Z, then CET.
        assert_eq!(
            w.next_open(p, utc("2026-10-24T00:00:00Z")),
            utc("2026-10-24T07:00:00Z")
        );
        assert_eq!(
            w.next_open(p, utc("2026-10-25T00:00:00Z")),
            utc("2026-10-25T08:00:00Z")
        );
        assert_eq!(
            w.closes_at(p, utc("2026-10-25T08:00:00Z")),
            Some(utc("2026-10-25T21:00:00Z"))
        );
    }

    #[test]
    fn start_inside_the_spring_forward_gap_opens_after_the_gap() {
        // New York 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z; 02:30 never happens.
        let w = one(NY, hm((2, 30), (6, 0)));
        let gap_end = utc("2026-03-08T07:00:00Z");
        assert_eq!(w.next_open(A, utc("2026-03-08T05:00:00Z")), gap_end);
        assert!(!w.is_open(A, gap_end - TimeDelta::seconds(1)));
        assert!(w.is_open(A, gap_end));
        assert_eq!(w.closes_at(A, gap_end), Some(utc("2026-03-08T10:00:00Z")));
        // The day before and after: 02:30 local as usual.
        assert_eq!(
            w.next_open(A, utc("2026-03-07T05:00:00Z")),
            utc("2026-03-07T07:30:00Z")
        );
        assert_eq!(
            w.next_open(A, utc("2026-03-09T05:00:00Z")),
            utc("2026-03-09T06:30:00Z")
        );

        // Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z.
        let w = one(BERLIN, hm((2, 30), (6, 0)));
        assert_eq!(
            w.next_open(A, utc("2026-03-28T23:00:00Z")),
            utc("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            w.closes_at(A, utc("2026-03-29T01:00:00Z")),
            Some(utc("2026-03-29T04:00:00Z"))
        );
    }

    #[test]
    fn window_wholly_inside_the_gap_skips_that_day() {
        let w = one(NY, hm((2, 10), (2, 50)));
        // 2026-03-07 02:10 EST = 07:10Z opens; 03-08 has no 02:xx, so the next is 03-09.
        let after = utc("2026-03-07T08:00:00Z");
        assert_eq!(w.next_open(A, after), utc("2026-03-09T06:10:00Z"));
        assert!(!w.is_open(A, utc("2026-03-08T07:00:00Z")));
        assert_eq!(w.closes_at(A, after), Some(utc("2026-03-09T06:50:00Z")));
    }

    #[test]
    fn end_and_next_start_in_the_same_gap_are_one_window() {
        // 02:40-02:10 (open all day but half an hour) in New York: on 2026-03-08 both
        // the close (02:10) and the next open (02:40) fall in the gap and resolve to
        // 07:00Z, so the window never closes that night.
        let w = one(NY, hm((2, 40), (2, 10)));
        let gap_end = utc("2026-03-08T07:00:00Z");
        assert!(w.is_open(A, gap_end - TimeDelta::seconds(1)));
        assert!(w.is_open(A, gap_end));
        assert_eq!(
            w.closes_at(A, utc("2026-03-07T08:00:00Z")),
            Some(utc("2026-03-09T06:10:00Z"))
        );
    }

    #[test]
    fn ambiguous_start_opens_at_the_first_occurrence() {
        // New York 2026-11-01: 01:00-01:59 happens in EDT (05:xxZ) and again in EST (06:xxZ).
        let w = one(NY, hm((1, 30), (4, 0)));
        assert_eq!(
            w.next_open(A, utc("2026-11-01T04:00:00Z")),
            utc("2026-11-01T05:30:00Z")
        );
        // At 02:00 EDT the clock reads 01:00 EST, outside the window: it closes then
        // and opens again at 01:30 EST (issue 11, case 5: it used to stay open).
        assert!(!w.is_open(A, utc("2026-11-01T06:10:00Z")));
        assert_eq!(
            w.closes_at(A, utc("2026-11-01T05:30:00Z")),
            Some(utc("2026-11-01T06:00:00Z"))
        );
        assert_eq!(
            w.next_open(A, utc("2026-11-01T06:10:00Z")),
            utc("2026-11-01T06:30:00Z")
        );
        assert_eq!(
            w.closes_at(A, utc("2026-11-01T06:30:00Z")),
            Some(utc("2026-11-01T09:00:00Z"))
        );

        // Berlin 2026-10-25: 02:00-02:59 in CEST (00:xxZ) and again in CET (01:xxZ).
        let w = one(BERLIN, hm((2, 30), (6, 0)));
        assert_eq!(
            w.next_open(A, utc("2026-10-24T22:00:00Z")),
            utc("2026-10-25T00:30:00Z")
        );
        // 02:10 CET, after the clock fell back: outside 02:30-06:00 until 02:30 CET.
        assert!(!w.is_open(A, utc("2026-10-25T01:10:00Z")));
        assert_eq!(
            w.closes_at(A, utc("2026-10-25T00:30:00Z")),
            Some(utc("2026-10-25T01:00:00Z"))
        );
        assert_eq!(
            w.closes_at(A, utc("2026-10-25T01:30:00Z")),
            Some(utc("2026-10-25T05:00:00Z"))
        );
    }

    #[test]
    fn ambiguous_end_closes_at_the_first_occurrence_and_reopens_while_the_wall_clock_is_inside() {
        // 22:00-01:30 in New York over the fall-back night.
        let w = one(NY, hm((22, 0), (1, 30)));
        let open = utc("2026-11-01T02:00:00Z"); // 2026-10-31 22:00 EDT
        let close = utc("2026-11-01T05:30:00Z"); // 01:30 EDT, the first one
        assert_eq!(w.next_open(A, utc("2026-10-31T20:00:00Z")), open);
        assert_eq!(w.closes_at(A, open), Some(close));
        assert!(w.is_open(A, close - TimeDelta::seconds(1)));
        assert!(!w.is_open(A, close));
        // 01:00-01:30 EST: the wall clock reads inside 22:00-01:30 again: open again.
        assert!(!w.is_open(A, utc("2026-11-01T05:45:00Z"))); // 01:45 EDT
        assert_eq!(w.next_open(A, close), utc("2026-11-01T06:00:00Z")); // 01:00 EST
        assert!(w.is_open(A, utc("2026-11-01T06:10:00Z"))); // 01:10 EST
        assert_eq!(
            w.closes_at(A, utc("2026-11-01T06:10:00Z")),
            Some(utc("2026-11-01T06:30:00Z")) // 01:30 EST
        );
        assert_eq!(
            w.next_open(A, utc("2026-11-01T06:30:00Z")),
            utc("2026-11-02T03:00:00Z") // 22:00 EST
        );

        // Berlin: 22:00-02:30 over 2026-10-25 closes at 02:30 CEST.
        let w = one(BERLIN, hm((22, 0), (2, 30)));
        assert_eq!(
            w.closes_at(A, utc("2026-10-24T21:00:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        assert!(w.is_open(A, utc("2026-10-25T01:10:00Z"))); // 02:10 CET, inside again
        assert!(!w.is_open(A, utc("2026-10-25T00:45:00Z"))); // 02:45 CEST, outside
        // Issue 11's Berlin night: 01:30-02:30 is open 01:30-02:30 CEST and 02:00-02:30 CET.
        let w = one(BERLIN, hm((1, 30), (2, 30)));
        assert!(w.is_open(A, utc("2026-10-24T23:45:00Z"))); // 01:45 CEST
        assert!(!w.is_open(A, utc("2026-10-25T00:45:00Z"))); // 02:45 CEST
        assert!(w.is_open(A, utc("2026-10-25T01:15:00Z"))); // 02:15 CET
        assert!(!w.is_open(A, utc("2026-10-25T01:30:00Z"))); // 02:30 CET
    }

    /// Whether the wall clock in `zone` at `at` reads a time inside `window`.
    fn wall_inside(zone: Tz, window: WindowConfig, at: DateTime<Utc>) -> bool {
        let t = at.with_timezone(&zone).time();
        if window.start <= window.end {
            window.start <= t && t < window.end
        } else {
            window.start <= t || t < window.end
        }
    }

    /// Issue 11, case 5: on both DST nights of 2026 in New York and Berlin, minute by
    /// minute, a window is open exactly while the wall clock reads a time inside it.
    #[test]
    fn windows_are_wall_clock_on_both_dst_nights_in_two_zones() {
        let cases = [
            (NY, hm((1, 30), (2, 30)), ["2026-03-08", "2026-11-01"]),
            (NY, hm((0, 30), (1, 30)), ["2026-03-08", "2026-11-01"]),
            (NY, hm((22, 0), (1, 30)), ["2026-03-08", "2026-11-01"]),
            (BERLIN, hm((1, 30), (2, 30)), ["2026-03-29", "2026-10-25"]),
            (BERLIN, hm((2, 30), (3, 30)), ["2026-03-29", "2026-10-25"]),
            (BERLIN, hm((2, 15), (6, 0)), ["2026-03-29", "2026-10-25"]),
        ];
        for (zone, window, nights) in cases {
            let w = one(zone, window);
            for night in nights {
                let from = utc(&format!("{night}T00:00:00Z")) - TimeDelta::hours(12);
                let mut opened = 0;
                for minute in 0..36 * 60 {
                    let at = from + TimeDelta::minutes(minute);
                    let open = w.is_open(A, at);
                    assert_eq!(
                        open,
                        wall_inside(zone, window, at),
                        "{zone} {window:?} open {open} at {at} while the wall clock reads {}",
                        at.with_timezone(&zone)
                    );
                    opened += usize::from(open);
                }
                assert!(opened > 0, "{zone} {window:?} never opened on {night}");
            }
        }
        // The issue's own night: 01:30-02:30 in New York on 2026-11-01 is open 01:30-02:00
        // EDT and 01:30-02:30 EST, closed 01:00-01:30 EST in between.
        let w = one(NY, hm((1, 30), (2, 30)));
        assert!(w.is_open(A, utc("2026-11-01T05:45:00Z"))); // 01:45 EDT
        assert!(!w.is_open(A, utc("2026-11-01T06:15:00Z"))); // 01:15 EST
        assert!(w.is_open(A, utc("2026-11-01T06:45:00Z"))); // 01:45 EST
        assert!(!w.is_open(A, utc("2026-11-01T07:30:00Z"))); // 02:30 EST
        assert_eq!(
            w.closes_at(A, utc("2026-11-01T05:45:00Z")),
            Some(utc("2026-11-01T06:00:00Z"))
        );
        // Berlin 2026-10-25, 02:30-03:30: 02:30 CEST to 03:00 CEST, then 02:30-03:30 CET.
        let w = one(BERLIN, hm((2, 30), (3, 30)));
        assert!(w.is_open(A, utc("2026-10-25T00:45:00Z"))); // 02:45 CEST
        assert!(!w.is_open(A, utc("2026-10-25T01:15:00Z"))); // 02:15 CET
        assert!(w.is_open(A, utc("2026-10-25T01:45:00Z"))); // 02:45 CET
    }

    #[test]
    fn midnight_spanning_window() {
        let w = one(BERLIN, hm((22, 0), (6, 0)));
        // January: Berlin is UTC+1.
        assert!(w.is_open(A, utc("2026-01-05T22:00:00Z"))); // 23:00
        assert!(w.is_open(A, utc("2026-01-06T04:59:59Z"))); // 05:59:59
        assert!(!w.is_open(A, utc("2026-01-06T05:00:00Z"))); // 06:00
        assert!(!w.is_open(A, utc("2026-01-06T20:59:00Z"))); // 21:59
        assert!(w.is_open(A, utc("2026-01-06T21:00:00Z"))); // 22:00
        assert_eq!(
            w.next_open(A, utc("2026-01-06T11:00:00Z")),
            utc("2026-01-06T21:00:00Z")
        );
        // Open since yesterday evening: closes this morning.
        assert_eq!(
            w.closes_at(A, utc("2026-01-06T02:00:00Z")),
            Some(utc("2026-01-06T05:00:00Z"))
        );
        assert_eq!(
            w.closes_at(A, utc("2026-01-05T22:00:00Z")),
            Some(utc("2026-01-06T05:00:00Z"))
        );
        // Across spring forward: opens 22:00 CET, closes 06:00 CEST, 7 real hours.
        let open = utc("2026-03-28T21:00:00Z");
        assert_eq!(w.next_open(A, utc("2026-03-28T12:00:00Z")), open);
        assert_eq!(w.closes_at(A, open), Some(utc("2026-03-29T04:00:00Z")));
    }

    #[test]
    fn gap_end_is_the_transition_instant() {
        let local = NaiveDate::from_ymd_opt(2026, 3, 8)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(gap_end(NY, local), Some(utc("2026-03-08T07:00:00Z")));
        // Samoa skipped all of 2011-12-30: local noon that day resolves to the start of
        // the 31st (UTC+14 from then on).
        let apia: Tz = chrono_tz::Pacific::Apia;
        let local = NaiveDate::from_ymd_opt(2011, 12, 30)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        assert_eq!(resolve(apia, local), Some(utc("2011-12-30T10:00:00Z")));
    }

    fn zones() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            chrono_tz::UTC,
            BERLIN,
            NY,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::America::Santiago,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Pacific::Apia,
        ])
    }

    /// Instants from 2010 to 2030, dense around the 2026 DST changes used above.
    fn instants() -> impl Strategy<Value = DateTime<Utc>> {
        let anchors = vec![
            utc("2026-03-08T07:00:00Z"),
            utc("2026-11-01T06:00:00Z"),
            utc("2026-03-29T01:00:00Z"),
            utc("2026-10-25T01:00:00Z"),
            utc("2011-12-30T10:00:00Z"),
        ];
        prop_oneof![
            (1_262_304_000i64..1_893_456_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
            (prop::sample::select(anchors), -30 * 3600i64..30 * 3600)
                .prop_map(|(a, s)| a + TimeDelta::seconds(s)),
        ]
    }

    fn windows() -> impl Strategy<Value = WindowConfig> {
        // Whole minutes, biased toward the small hours where DST changes happen.
        let minute = prop_oneof![0u32..24 * 60, 60u32..4 * 60];
        (minute.clone(), minute).prop_map(|(s, e)| hm((s / 60, s % 60), (e / 60, e % 60)))
    }

    proptest! {
        #[test]
        fn next_open_is_open_and_nothing_earlier_is(zone in zones(), at in instants(), window in windows()) {
            let w = one(zone, window);
            let next = w.next_open(A, at);
            prop_assert!(next >= at);
            prop_assert!(w.is_open(A, next), "next_open {} is not open", next);
            prop_assert_eq!(next == at, w.is_open(A, at));
            // No whole minute in [at, next) is open.
            let mut minute = at.with_second(0).unwrap();
            if minute < at {
                minute += TimeDelta::minutes(1);
            }
            let mut checked = 0;
            while minute < next {
                prop_assert!(!w.is_open(A, minute), "{} is open before next_open {}", minute, next);
                minute += TimeDelta::minutes(1);
                checked += 1;
                prop_assert!(checked <= 3 * 24 * 60, "next_open {} more than 3 days after {}", next, at);
            }
        }

        #[test]
        fn closes_at_bounds_the_open_window(zone in zones(), at in instants(), window in windows()) {
            let w = one(zone, window);
            let Some(close) = w.closes_at(A, at) else {
                prop_assert!(window.start == window.end);
                return Ok(());
            };
            prop_assert!(close > at);
            prop_assert!(!w.is_open(A, close), "closes_at {} is open", close);
            prop_assert!(w.is_open(A, close - TimeDelta::seconds(1)), "just before {} is closed", close);
            if w.is_open(A, at) {
                // Open all the way from `at` to the close, checked minute by minute.
                let mut t = at;
                while t < close {
                    prop_assert!(w.is_open(A, t), "{} closed before closes_at {}", t, close);
                    t += TimeDelta::minutes(7);
                }
            } else {
                // The close of the next window.
                let next = w.next_open(A, at);
                prop_assert!(next < close);
                prop_assert_eq!(w.closes_at(A, next), Some(close));
            }
        }
    }
}
