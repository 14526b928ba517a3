//! The one spanned reader: typed reads of a [`RawTable`], every problem collected.
//!
//! The runner's configuration, the daemon's own sections and the simulator's scenario
//! sections are all read through [`Table`]: each read names a key declared for its
//! table, checks the value's type and range, and reports a [`Diagnostic`] at the
//! value's line and column with the full key path and a hint. [`Table::finish`]
//! reports every key that is not declared, with a did-you-mean. Nothing stops at the
//! first problem; [`Reader::finish`] returns them all, in file order.

use std::cell::RefCell;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;

use super::raw::{RawEntry, RawKind, RawTable, RawValue, Span};
use super::source::Source;
use super::suggest::{did_you_mean, list};
use super::url::{URL_HINT, Url};
use super::{Diagnostic, Diagnostics, SecretResolver, duration, names};

/// Collects the diagnostics of one file.
pub struct Reader<'s> {
    source: &'s Source,
    secrets: &'s dyn SecretResolver,
    diags: RefCell<Vec<Diagnostic>>,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("file", &self.source.file())
            .field("problems", &self.diags.borrow().len())
            .finish()
    }
}

impl<'s> Reader<'s> {
    /// A reader of `source` that resolves secret references with `secrets`.
    pub fn new(source: &'s Source, secrets: &'s dyn SecretResolver) -> Self {
        Self {
            source,
            secrets,
            diags: RefCell::new(Vec::new()),
        }
    }

    /// The file being read.
    pub fn source(&self) -> &'s Source {
        self.source
    }

    /// Where `{ env = ... }` and `{ file = ... }` secrets come from.
    pub fn secrets(&self) -> &'s dyn SecretResolver {
        self.secrets
    }

    /// Reports a problem at byte `at` (or about the whole file).
    pub fn report(
        &self,
        at: Option<usize>,
        key: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut d = self.source.diagnostic(at, key, message);
        d.hint = hint;
        self.diags.borrow_mut().push(d);
    }

    /// Reports a problem at `span`.
    pub fn error(&self, span: &Span, key: &str, message: impl Into<String>) {
        self.report(Some(span.start), key, message, None);
    }

    /// Reports a problem at `span`, with a hint.
    pub fn error_hint(
        &self,
        span: &Span,
        key: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.report(Some(span.start), key, message, Some(hint.into()));
    }

    /// Problems so far.
    pub fn error_count(&self) -> usize {
        self.diags.borrow().len()
    }

    /// A path from the file, made absolute against the file's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.source.dir().join(p)
        }
    }

    /// 1-based line of byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        self.source.line_col(offset).0
    }

    /// A reader of `raw` whose keys are `path.<key>` and may only be `keys`.
    pub fn table<'r>(
        &'r self,
        raw: &'r RawTable,
        path: impl Into<String>,
        keys: &[&'static str],
    ) -> Table<'r> {
        Table {
            reader: self,
            raw,
            path: path.into(),
            keys: keys.to_vec(),
        }
    }

    /// `value` when nothing was reported, else every problem in file order.
    ///
    /// # Errors
    ///
    /// Every problem reported; one about the whole file if `value` is `None` without any.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Diagnostics> {
        let mut diags = Diagnostics(self.diags.into_inner());
        match value {
            Some(v) if diags.is_empty() => Ok(v),
            _ => {
                if diags.is_empty() {
                    diags.push(self.source.diagnostic(None, "", "invalid configuration"));
                }
                diags.sort();
                Err(diags)
            }
        }
    }
}

/// `path.key`, or `key` at the top level.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// One table being read. Every read names a key declared in `keys`.
#[derive(Debug)]
pub struct Table<'r> {
    reader: &'r Reader<'r>,
    raw: &'r RawTable,
    path: String,
    keys: Vec<&'static str>,
}

impl<'r> Table<'r> {
    /// The reader (to report problems that span tables).
    pub fn reader(&self) -> &'r Reader<'r> {
        self.reader
    }

    /// The table as parsed.
    pub fn raw(&self) -> &'r RawTable {
        self.raw
    }

    /// This table's key path (`jobs[2]`), empty at the top level.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full path of `key`.
    pub fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Where the table starts: its header, or its first key for a table that has none.
    pub fn start(&self) -> Option<usize> {
        if self.raw.span.is_empty() {
            self.raw.entries.first().map(|e| e.key_span.start)
        } else {
            Some(self.raw.span.start)
        }
    }

    /// The header's span (empty for the document and implied tables).
    pub fn span(&self) -> &'r Span {
        &self.raw.span
    }

    /// The entry of a declared key.
    pub fn entry(&self, key: &'static str) -> Option<&'r RawEntry> {
        debug_assert!(
            self.keys.contains(&key),
            "`{key}` read but not declared at `{}`",
            self.path
        );
        self.raw.get(key)
    }

    /// Reports a problem about `key` of this table at `span`.
    pub fn error(&self, span: &Span, key: &str, message: impl Into<String>) {
        self.reader.error(span, &self.key(key), message);
    }

    /// Reports a problem about `key` of this table at `span`, with a hint.
    pub fn error_hint(
        &self,
        span: &Span,
        key: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.reader.error_hint(span, &self.key(key), message, hint);
    }

    /// Reports that `key` is missing, at the table's start.
    pub fn missing(&self, key: &str, hint: impl Into<String>) {
        self.reader.report(
            self.start(),
            &self.key(key),
            format!("missing required key `{key}`"),
            Some(hint.into()),
        );
    }

    /// Reports a value of the wrong type.
    pub fn wrong_type(&self, e: &RawEntry, want: &str, hint: Option<&str>) {
        self.reader.report(
            Some(e.value.span.start),
            &self.key(&e.key),
            format!("must be {want}, not {}", e.value.kind.type_name()),
            hint.map(str::to_string),
        );
    }

    /// Reports an array item of the wrong type.
    pub fn wrong_item(&self, item: &RawValue, key: &str, want: &str, hint: Option<&str>) {
        self.reader.report(
            Some(item.span.start),
            &self.key(key),
            format!("must be {want}, not {}", item.kind.type_name()),
            hint.map(str::to_string),
        );
    }

    /// Reports every entry whose key is not declared, with a did-you-mean.
    pub fn finish(&self) {
        self.finish_with(|_| None);
    }

    /// Like [`Table::finish`], but `special` may explain an undeclared key itself
    /// (message, hint) instead.
    pub fn finish_with(&self, special: impl Fn(&RawEntry) -> Option<(String, String)>) {
        for e in self.unknown() {
            let (message, hint) = special(e).unwrap_or_else(|| {
                (
                    format!("unknown key `{}`", e.key),
                    format!(
                        "{}valid keys here: {}",
                        did_you_mean(&e.key, self.keys.iter().copied()),
                        list(self.keys.iter().copied())
                    ),
                )
            });
            self.error_hint(&e.key_span, &e.key, message, hint);
        }
    }

    /// The entries whose key is not declared.
    pub fn unknown(&self) -> impl Iterator<Item = &'r RawEntry> + '_ {
        self.raw
            .entries
            .iter()
            .filter(|e| !self.keys.contains(&e.key.as_str()))
    }

    /// A sub-table of declared key `key`, reading `keys`.
    pub fn table(&self, key: &'static str, keys: &[&'static str]) -> Option<Table<'r>> {
        let e = self.entry(key)?;
        match &e.value.kind {
            RawKind::Table(inner) => Some(self.reader.table(inner, self.key(key), keys)),
            _ => {
                self.wrong_type(e, "a table", None);
                None
            }
        }
    }

    /// `[key.<name>]` sub-tables, in file order: name, its span, and the table. Names
    /// are checked ([`names`]); at most `max` are read.
    pub fn named_tables(
        &self,
        key: &'static str,
        what: &str,
        max: usize,
        keys: &[&'static str],
        wrong_type_hint: &str,
    ) -> Vec<(&'r str, Span, Table<'r>)> {
        let Some(e) = self.entry(key) else {
            return Vec::new();
        };
        let RawKind::Table(t) = &e.value.kind else {
            self.wrong_type(e, "a table", None);
            return Vec::new();
        };
        let path = self.key(key);
        if t.entries.len() > max {
            self.reader.error_hint(
                &e.key_span,
                &path,
                format!("{} entries, more than the {max} allowed", t.entries.len()),
                "a configuration this large is a mistake; remove the ones no job uses",
            );
        }
        let mut out = Vec::new();
        for entry in t.entries.iter().take(max) {
            let entry_path = join(&path, &entry.key);
            if let Err((message, hint)) = names::check(&entry.key, what) {
                self.reader
                    .error_hint(&entry.key_span, &entry_path, message, hint);
            }
            match &entry.value.kind {
                RawKind::Table(sub) => out.push((
                    entry.key.as_str(),
                    entry.key_span.clone(),
                    self.reader.table(sub, entry_path, keys),
                )),
                other => self.reader.error_hint(
                    &entry.value.span,
                    &entry_path,
                    format!("must be a table, not {}", other.type_name()),
                    wrong_type_hint,
                ),
            }
        }
        out
    }

    /// The elements of an array of tables (`[[key]]`), with their paths `key[i]`; at
    /// most `max`. `None` when the key is absent or not an array (reported).
    pub fn array_of_tables(
        &self,
        key: &'static str,
        max: usize,
        keys: &[&'static str],
        hint: &str,
    ) -> Option<(Span, Vec<Option<Table<'r>>>)> {
        let e = self.entry(key)?;
        let RawKind::Array(items) = &e.value.kind else {
            self.wrong_type(e, "an array of tables", Some(hint));
            return None;
        };
        if items.len() > max {
            self.error_hint(
                &e.value.span,
                key,
                format!("{} entries, more than the {max} allowed", items.len()),
                "split the configuration, or check that it was generated as intended",
            );
        }
        let tables = items
            .iter()
            .take(max)
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{}[{i}]", self.key(key));
                match &item.kind {
                    RawKind::Table(t) => Some(self.reader.table(t, path, keys)),
                    other => {
                        self.reader.error_hint(
                            &item.span,
                            &path,
                            format!("must be a table, not {}", other.type_name()),
                            hint,
                        );
                        None
                    }
                }
            })
            .collect();
        Some((e.value.span.clone(), tables))
    }

    /// A string.
    pub fn string(&self, key: &'static str) -> Option<(&'r str, Span)> {
        let e = self.entry(key)?;
        match &e.value.kind {
            RawKind::String(s) => Some((s.as_str(), e.value.span.clone())),
            _ => {
                self.wrong_type(e, "a string", None);
                None
            }
        }
    }

    /// A string that must be present.
    pub fn required_string(&self, key: &'static str, hint: &str) -> Option<(&'r str, Span)> {
        if self.entry(key).is_none() {
            self.missing(key, hint);
            return None;
        }
        self.string(key)
    }

    /// A string of at most `max` characters (longer values are not quoted back).
    pub fn short_string(
        &self,
        key: &'static str,
        max: usize,
        hint: &str,
    ) -> Option<(&'r str, Span)> {
        let (s, span) = self.string(key)?;
        if s.len() > max {
            self.error_hint(
                &span,
                key,
                format!(
                    "is {} characters long, more than the {max} allowed",
                    s.chars().count()
                ),
                hint,
            );
            return None;
        }
        Some((s, span))
    }

    /// A required name ([`names`]).
    pub fn name(&self, key: &'static str, what: &str) -> Option<(&'r str, Span)> {
        let (name, span) =
            self.required_string(key, "give it a name such as \"nightly-backup\"")?;
        match names::check(name, what) {
            Ok(()) => Some((name, span)),
            Err((message, hint)) => {
                self.error_hint(&span, key, message, hint);
                None
            }
        }
    }

    /// A boolean.
    pub fn boolean(&self, key: &'static str) -> Option<bool> {
        let e = self.entry(key)?;
        match e.value.kind {
            RawKind::Boolean(b) => Some(b),
            _ => {
                self.wrong_type(e, "a boolean", Some("write true or false"));
                None
            }
        }
    }

    /// An integer in `[min, max]`.
    pub fn integer(&self, key: &'static str, min: i64, max: i64) -> Option<(i64, Span)> {
        let e = self.entry(key)?;
        let RawKind::Integer(n) = e.value.kind else {
            self.wrong_type(e, "an integer", None);
            return None;
        };
        if n < min || n > max {
            self.error(
                &e.value.span,
                key,
                format!("must be between {min} and {max}, not {n}"),
            );
            return None;
        }
        Some((n, e.value.span.clone()))
    }

    /// An integer in `[min, max]` as `u32`.
    pub fn u32_in(&self, key: &'static str, min: u32, max: u32) -> Option<u32> {
        let (n, _) = self.integer(key, i64::from(min), i64::from(max))?;
        u32::try_from(n).ok()
    }

    /// An integer in `[0, max]` as `u64`.
    pub fn u64_to(&self, key: &'static str, max: u64) -> Option<u64> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let (n, _) = self.integer(key, 0, max)?;
        u64::try_from(n).ok()
    }

    /// A number (integer or float) in `range`; `describe` says the range in words.
    pub fn number(
        &self,
        key: &'static str,
        range: RangeInclusive<f64>,
        describe: &str,
    ) -> Option<f64> {
        let e = self.entry(key)?;
        let x = match e.value.kind {
            RawKind::Float(x) => x,
            RawKind::Integer(n) => n as f64,
            _ => {
                self.wrong_type(e, "a number", None);
                return None;
            }
        };
        if !range.contains(&x) {
            self.error(&e.value.span, key, format!("must be {describe}, not {x}"));
            return None;
        }
        Some(x)
    }

    /// A number in `[0, 1]` (or `(0, 1]` when `zero_ok` is false).
    pub fn fraction(&self, key: &'static str, zero_ok: bool) -> Option<f64> {
        if zero_ok {
            self.number(key, 0.0..=1.0, "between 0.0 and 1.0")
        } else {
            self.number(key, f64::MIN_POSITIVE..=1.0, "above 0.0 and at most 1.0")
        }
    }

    /// A duration string (`"90s"`).
    pub fn duration(&self, key: &'static str) -> Option<(Duration, Span)> {
        let e = self.entry(key)?;
        let RawKind::String(s) = &e.value.kind else {
            self.wrong_type(e, "a duration string", Some(duration::HINT));
            return None;
        };
        match duration::parse(s) {
            Ok(d) => Some((d, e.value.span.clone())),
            Err(message) => {
                self.error_hint(&e.value.span, key, message, duration::HINT);
                None
            }
        }
    }

    /// A duration longer than zero.
    pub fn positive_duration(&self, key: &'static str) -> Option<(Duration, Span)> {
        let (d, span) = self.duration(key)?;
        if d.is_zero() {
            self.error(&span, key, "must be longer than zero");
            return None;
        }
        Some((d, span))
    }

    /// A duration in `[min, max]`; `hint` says why.
    pub fn duration_in(
        &self,
        key: &'static str,
        min: Duration,
        max: Duration,
        hint: &str,
    ) -> Option<(Duration, Span)> {
        let (d, span) = self.duration(key)?;
        if d < min || d > max {
            self.error_hint(
                &span,
                key,
                format!(
                    "must be between {} and {}, not {}",
                    duration::format(min),
                    duration::format(max),
                    duration::format(d)
                ),
                hint,
            );
            return None;
        }
        Some((d, span))
    }

    /// One of `options`.
    pub fn choice(&self, key: &'static str, options: &[&'static str]) -> Option<&'static str> {
        let (s, span) = self.string(key)?;
        if let Some(o) = options.iter().find(|o| **o == s) {
            return Some(o);
        }
        let hint = format!(
            "{}one of {}",
            did_you_mean(s, options.iter().copied()),
            list(options.iter().copied())
        );
        let shown = if s.len() > names::MAX_NAME_CHARS {
            "(too long to show)"
        } else {
            s
        };
        self.error_hint(&span, key, format!("unknown value `{shown}`"), hint);
        None
    }

    /// An absolute http(s) URL.
    pub fn url(&self, key: &'static str) -> Option<Url> {
        let (s, span) = self.string(key)?;
        match Url::parse_config(s) {
            Ok(u) => Some(u),
            Err(message) => {
                self.error_hint(&span, key, message, URL_HINT);
                None
            }
        }
    }

    /// An array of strings, with each item's span; `None` when any item is not a
    /// string (each reported).
    pub fn strings(
        &self,
        key: &'static str,
        max: usize,
        hint: &str,
    ) -> Option<Vec<(&'r str, Span)>> {
        self.string_items(key, max, hint)?.into_iter().collect()
    }

    /// An array of strings, item by item: `None` for an item that is not a string
    /// (reported), so callers can still use the others.
    pub fn string_items(
        &self,
        key: &'static str,
        max: usize,
        hint: &str,
    ) -> Option<Vec<Option<(&'r str, Span)>>> {
        let e = self.entry(key)?;
        let RawKind::Array(items) = &e.value.kind else {
            self.wrong_type(e, "an array of strings", Some(hint));
            return None;
        };
        if items.len() > max {
            self.error_hint(
                &e.value.span,
                key,
                format!("{} items, more than the {max} allowed", items.len()),
                hint,
            );
            return None;
        }
        let out = items
            .iter()
            .enumerate()
            .map(|(i, item)| match &item.kind {
                RawKind::String(s) => Some((s.as_str(), item.span.clone())),
                _ => {
                    self.wrong_item(item, &format!("{key}[{i}]"), "a string", Some(hint));
                    None
                }
            })
            .collect();
        Some(out)
    }

    /// A local time of day: `"09:00"`, `"09:00:30"` or a TOML local time.
    pub fn time_of_day(&self, key: &'static str) -> Option<NaiveTime> {
        let e = self.entry(key)?;
        self.time_value(&e.value, key)
    }

    /// A time of day from any value (also array items); `key` names it.
    pub fn time_value(&self, value: &RawValue, key: &str) -> Option<NaiveTime> {
        const HINT: &str = "write a local time as \"HH:MM\" or \"HH:MM:SS\", e.g. \"09:00\"";
        match &value.kind {
            RawKind::String(s) => {
                let parsed = NaiveTime::parse_from_str(s, "%H:%M")
                    .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"));
                match parsed {
                    Ok(time) => Some(time),
                    Err(_) => {
                        let shown = if s.len() > 16 {
                            "(too long to show)"
                        } else {
                            s
                        };
                        self.error_hint(
                            &value.span,
                            key,
                            format!("invalid time of day `{shown}`"),
                            HINT,
                        );
                        None
                    }
                }
            }
            RawKind::Datetime(d) if d.date.is_none() && d.offset.is_none() => {
                let time = d.time.and_then(|t| {
                    NaiveTime::from_hms_opt(
                        u32::from(t.hour),
                        u32::from(t.minute),
                        u32::from(t.second),
                    )
                });
                if time.is_none() {
                    self.error_hint(&value.span, key, format!("invalid time of day `{d}`"), HINT);
                }
                time
            }
            other => {
                self.reader.report(
                    Some(value.span.start),
                    &self.key(key),
                    format!("must be a time of day, not {}", other.type_name()),
                    Some(HINT.to_string()),
                );
                None
            }
        }
    }
}
