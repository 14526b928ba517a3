//! One alert per unusable state database, not one per restart.
//!
//! A runner that refuses its `state.db` exits 4. systemd is told not to restart on 4;
//! launchd's `KeepAlive` cannot exclude an exit code, so it starts the runner again every
//! `ThrottleInterval` (10 s), and each start would send the same `state_unreadable`
//! alert. The alert is the only copy of this problem that reaches a human who is not
//! reading logs, so it is kept, but repeated at most once a day for the same problem:
//! a small mark file beside the database (the database itself is the thing that cannot
//! be written) records when the alert for which message went out. Every start still logs
//! the error event and prints the hint. A start that can use the store removes the mark,
//! so the next problem alerts at once.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// The mark file's name in the state directory.
pub const MARK_FILE: &str = "state_unreadable.alerted";

/// The same problem is alerted again after this long.
pub const REALERT_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// At most this many bytes of the mark are read (it holds one time and one message).
const MAX_MARK_BYTES: u64 = 16 * 1024;

fn mark(state_dir: &Path) -> PathBuf {
    state_dir.join(MARK_FILE)
}

/// Whether the alert for `message` should go out at `now`: no mark, a mark for another
/// message, an unreadable mark, or one older than [`REALERT_AFTER`].
pub fn should_alert(state_dir: &Path, message: &str, now: DateTime<Utc>) -> bool {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(mark(state_dir)) else {
        return true;
    };
    let mut text = String::new();
    if file.take(MAX_MARK_BYTES).read_to_string(&mut text).is_err() {
        return true;
    }
    let Some((at, marked)) = text.split_once('\n') else {
        return true;
    };
    let Ok(at) = DateTime::parse_from_rfc3339(at.trim()) else {
        return true;
    };
    marked != message || now - at.with_timezone(&Utc) >= REALERT_AFTER || now < at
}

/// Records that the alert for `message` went out at `now`. Best effort: a mark that
/// cannot be written only means the next start alerts again.
pub fn record(state_dir: &Path, message: &str, now: DateTime<Utc>) {
    let _ = std::fs::write(mark(state_dir), format!("{}\n{message}", now.to_rfc3339()));
}

/// The store is usable again: the next problem alerts at once.
pub fn clear(state_dir: &Path) {
    let _ = std::fs::remove_file(mark(state_dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("steadfast-refusal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_default();
        d
    }

    fn t(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default()
            + chrono::Duration::hours(hours)
    }

    #[test]
    fn the_same_problem_alerts_once_a_day() {
        let d = dir("same");
        assert!(should_alert(&d, "file is not a database", t(0)));
        record(&d, "file is not a database", t(0));
        assert!(!should_alert(&d, "file is not a database", t(0)));
        assert!(!should_alert(&d, "file is not a database", t(23)));
        assert!(should_alert(&d, "file is not a database", t(24)));
        assert!(
            should_alert(&d, "database disk image is malformed", t(1)),
            "another problem"
        );
        clear(&d);
        assert!(
            should_alert(&d, "file is not a database", t(1)),
            "cleared by a good start"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_or_future_mark_alerts() {
        let d = dir("damaged");
        std::fs::write(d.join(MARK_FILE), "not a time\nm").unwrap_or_default();
        assert!(should_alert(&d, "m", t(0)));
        record(&d, "m", t(5));
        assert!(
            should_alert(&d, "m", t(0)),
            "a clock set back does not silence it"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
