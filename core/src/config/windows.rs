//! `[windows]`: when actions of one type may run, in the runner's zone.

use std::collections::BTreeMap;

use chrono::NaiveTime;

use super::reader::Table;

/// `[windows.<action>]`: when actions of one type may run, in the runner's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Opens at this local time.
    pub start: NaiveTime,
    /// Closes at this local time (may be before `start`: the window spans midnight).
    pub end: NaiveTime,
}

/// The keys of one window.
const KEYS: &[&str] = &["start", "end"];
/// At most this many windows.
pub const MAX_WINDOWS: usize = 1_000;

/// Reads `[windows]` from the top-level table.
pub(crate) fn read(top: &Table<'_>) -> BTreeMap<String, WindowConfig> {
    let mut out = BTreeMap::new();
    let windows = top.named_tables(
        "windows",
        "action name",
        MAX_WINDOWS,
        KEYS,
        "write it as { start = \"09:00\", end = \"22:00\" }",
    );
    for (name, _, w) in windows {
        w.finish();
        for key in KEYS {
            if w.raw().get(key).is_none() {
                w.missing(key, "a window needs `start` and `end`, e.g. \"09:00\"");
            }
        }
        let start = w.time_of_day("start");
        let end = w.time_of_day("end");
        if let (Some(start), Some(end)) = (start, end) {
            if start == end {
                let span = w
                    .raw()
                    .get("end")
                    .map_or(w.span().clone(), |x| x.value.span.clone());
                w.error_hint(
                    &span,
                    "end",
                    "window is empty: `start` equals `end`",
                    "an action allowed all day needs no window; remove it",
                );
            } else {
                out.insert(name.to_string(), WindowConfig { start, end });
            }
        }
    }
    out
}
