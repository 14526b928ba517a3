//! The `Retry-After` header: delta-seconds or an HTTP date.
//!
//! RFC 9110 §10.2.3 allows either form. A server that says when to come back knows its
//! rate limiter better than any backoff formula, so the planner waits at least this long
//! (up to the policy's cap).

use std::time::{Duration, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// The longest wait this parser reports; larger values saturate here.
///
/// Anything near it is far above every sensible `retry_after_cap`, so the planner gives
/// up either way; the bound only keeps later clock arithmetic from overflowing.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Parses a `Retry-After` value relative to `now`. A date in the past gives zero;
/// garbage gives `None`.
///
/// Accepts delta-seconds (ASCII digits only, surrounding whitespace allowed) and the
/// three HTTP date forms (IMF-fixdate and the obsolete RFC 850 and asctime forms).
/// Results saturate at [`MAX_WAIT`].
pub fn parse(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail, and overflow means "absurdly long".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_WAIT));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let secs = date.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let date = DateTime::<Utc>::from_timestamp(i64::try_from(secs).ok()?, 0)?;
    // A negative difference (a date in the past) means "retry now".
    let wait = (date - now).to_std().unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_WAIT))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn now() -> DateTime<Utc> {
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date, minus 90 s.
        Utc.with_ymd_and_hms(1994, 11, 6, 8, 48, 7).unwrap()
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse("120", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse("  0 ", now()), Some(Duration::ZERO));
        assert_eq!(parse("\t7\r\n", now()), Some(Duration::from_secs(7)));
    }

    #[test]
    fn all_three_date_forms() {
        let want = Some(Duration::from_secs(90));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now()), want);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT", now()), want);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994", now()), want);
        assert_eq!(parse(" Sun, 06 Nov 1994 08:49:37 GMT ", now()), want);
    }

    #[test]
    fn a_past_date_means_now() {
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_is_none() {
        for v in [
            "",
            "   ",
            "-5",
            "+5",
            "1.5",
            "5s",
            "soon",
            "0x10",
            "12 34",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
        ] {
            assert_eq!(parse(v, now()), None, "{v:?}");
        }
    }

    #[test]
    fn absurd_values_saturate() {
        assert_eq!(parse("99999999999999999999999999", now()), Some(MAX_WAIT));
        assert_eq!(parse(&u64::MAX.to_string(), now()), Some(MAX_WAIT));
        assert_eq!(
            parse("Fri, 31 Dec 9999 23:59:59 GMT", now()),
            Some(MAX_WAIT)
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,64}") {
            let _ = parse(&s, now());
        }

        #[test]
        fn every_integer_round_trips(n in any::<u64>()) {
            let want = Duration::from_secs(n).min(MAX_WAIT);
            prop_assert_eq!(parse(&n.to_string(), now()), Some(want));
        }

        #[test]
        fn every_future_date_round_trips(ahead in 0u32..100_000_000) {
            let at = now() + chrono::Duration::seconds(i64::from(ahead));
            let header = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            prop_assert_eq!(parse(&header, now()), Some(Duration::from_secs(u64::from(ahead))));
        }
    }
}
