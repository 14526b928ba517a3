//! The judge's own time-window reference: is a window open at an instant, read on the
//! world's wall clock (the true time in the scenario's zone, via chrono-tz)?
//!
//! Written here rather than calling the runner's `Windows`, so a bug there is not
//! repeated by its judge. A window `{ start, end }` is open from `start` (inclusive)
//! to `end` (exclusive) local time; `end` before `start` spans midnight; `start ==
//! end` is always open. On a DST fall-back night the repeated hour is read as the wall
//! clock shows it, twice; in a spring-forward gap there is no local time to read.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use steadfast_core::config::WindowConfig;

/// Whether `window` is open at `at` on the wall clock of `zone`.
pub fn is_open(window: &WindowConfig, zone: Tz, at: DateTime<Utc>) -> bool {
    let local = at.with_timezone(&zone).time();
    match window.start.cmp(&window.end) {
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => window.start <= local && local < window.end,
        std::cmp::Ordering::Greater => local >= window.start || local < window.end,
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveTime;

    use super::*;

    fn w(start: &str, end: &str) -> WindowConfig {
        let t = |s: &str| NaiveTime::parse_from_str(s, "%H:%M").unwrap_or_default();
        WindowConfig {
            start: t(start),
            end: t(end),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn day_and_overnight_windows_on_the_local_clock() {
        let la = chrono_tz::America::Los_Angeles;
        let day = w("09:00", "22:00");
        // 2026-03-02 is PST (UTC-8): 17:00Z is 09:00 local, 06:00Z next day is 22:00.
        assert!(!is_open(&day, la, at("2026-03-02T16:59:59Z")));
        assert!(is_open(&day, la, at("2026-03-02T17:00:00Z")));
        assert!(is_open(&day, la, at("2026-03-03T05:59:59Z")));
        assert!(!is_open(&day, la, at("2026-03-03T06:00:00Z")));
        let night = w("22:00", "06:00");
        assert!(is_open(&night, la, at("2026-03-03T07:00:00Z")));
        assert!(!is_open(&night, la, at("2026-03-02T20:00:00Z")));
        assert!(is_open(
            &w("00:00", "00:00"),
            la,
            at("2026-03-02T20:00:00Z")
        ));
    }

    #[test]
    fn fall_back_night_reads_the_wall_clock_twice() {
        // Berlin falls back on 2026-10-25 at 03:00 CEST to 02:00 CET: 02:30 happens at
        // 00:30Z and again at 01:30Z; a 02:00-03:00 window is open both times and not
        // at 02:00Z (03:00 CET).
        let berlin = chrono_tz::Europe::Berlin;
        let window = w("02:00", "03:00");
        assert!(is_open(&window, berlin, at("2026-10-25T00:30:00Z")));
        assert!(is_open(&window, berlin, at("2026-10-25T01:30:00Z")));
        assert!(!is_open(&window, berlin, at("2026-10-25T02:00:00Z")));
    }
}
