//! Human-readable durations (`"90s"`, `"15m"`, `"1h 30m"`) via `humantime`, bounded so
//! that later `Instant + duration` arithmetic cannot overflow.

use std::time::Duration;

/// The longest duration a configuration may state: a year and a day. Longer values are
/// always typos (`"30d"` meant as `"30m"`, say) and would overflow timer arithmetic.
pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// How a duration is written, for hints.
pub const HINT: &str = "write a number and a unit, e.g. \"90s\", \"15m\" or \"1h 30m\"";

/// Parses a duration; the error is a lowercase fragment naming what is wrong.
pub fn parse(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                "a unit is missing".to_string()
            }
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!("unknown unit `{unit}`")
            }
            humantime::DurationError::NumberOverflow => "the number is too large".to_string(),
            humantime::DurationError::Empty => "it is empty".to_string(),
            humantime::DurationError::InvalidCharacter(_)
            | humantime::DurationError::NumberExpected(_) => "it is not a duration".to_string(),
        };
        format!("invalid duration `{text}`: {why}")
    })?;
    if d > MAX {
        return Err(format!("duration `{text}` is longer than a year"));
    }
    Ok(d)
}

/// Formats a duration the way a user would write it.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(format(Duration::from_secs(5400)), "1h 30m");
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse("5 minutez").unwrap_err(),
            "invalid duration `5 minutez`: unknown unit `minutez`"
        );
        assert_eq!(
            parse("30").unwrap_err(),
            "invalid duration `30`: a unit is missing"
        );
        assert_eq!(parse("").unwrap_err(), "invalid duration ``: it is empty");
        assert!(parse("400d").unwrap_err().contains("longer than a year"));
    }
}
