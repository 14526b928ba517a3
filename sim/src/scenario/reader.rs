//! Typed reads of a spanned TOML table, every problem collected as a diagnostic.
//!
//! The runner's configuration parser owns its own reader; the simulator's sections are
//! few and flat, so this small one reads them with the same diagnostics (file, line,
//! key path, hint) without reaching into the runner's private validation code.

use std::path::Path;
use std::time::Duration;

use steadfast_core::config::raw::{RawEntry, RawKind, RawTable};
use steadfast_core::config::{Diagnostic, Diagnostics, duration};

/// Reads one table; call [`Section::finish`] to report keys nobody asked for.
pub(crate) struct Section<'a> {
    file: &'a Path,
    text: &'a str,
    path: String,
    table: &'a RawTable,
    asked: Vec<&'static str>,
}

impl<'a> Section<'a> {
    pub(crate) fn new(
        file: &'a Path,
        text: &'a str,
        path: impl Into<String>,
        table: &'a RawTable,
    ) -> Self {
        Self {
            file,
            text,
            path: path.into(),
            table,
            asked: Vec::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A diagnostic at byte `at` about `key` of this section.
    pub(crate) fn diag(&self, at: usize, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at_offset(self.file, self.text, Some(at), self.key(key), message)
    }

    /// Where this section starts (for problems about the section as a whole).
    pub(crate) fn start(&self) -> usize {
        self.table.span.start
    }

    fn entry(&mut self, key: &'static str) -> Option<&'a RawEntry> {
        self.asked.push(key);
        self.table.entries.iter().find(|e| e.key == key)
    }

    fn wrong_type(&self, e: &RawEntry, want: &str, diags: &mut Diagnostics) {
        diags.push(
            self.diag(
                e.value.span.start,
                &e.key,
                format!("must be {want}, found {}", e.value.kind.type_name()),
            )
            .hint(format!("write `{} = ...` with {want}", e.key)),
        );
    }

    pub(crate) fn string(
        &mut self,
        key: &'static str,
        diags: &mut Diagnostics,
    ) -> Option<(String, usize)> {
        let e = self.entry(key)?;
        match &e.value.kind {
            RawKind::String(s) => Some((s.clone(), e.value.span.start)),
            _ => {
                self.wrong_type(e, "a string", diags);
                None
            }
        }
    }

    pub(crate) fn duration(
        &mut self,
        key: &'static str,
        diags: &mut Diagnostics,
    ) -> Option<Duration> {
        let (text, at) = self.string(key, diags)?;
        match duration::parse(&text) {
            Ok(d) => Some(d),
            Err(message) => {
                diags.push(
                    self.diag(at, key, message)
                        .hint("durations look like \"90s\", \"15m\", \"1h 30m\", \"21d\""),
                );
                None
            }
        }
    }

    pub(crate) fn float(
        &mut self,
        key: &'static str,
        range: (f64, f64),
        diags: &mut Diagnostics,
    ) -> Option<f64> {
        let e = self.entry(key)?;
        let v = match &e.value.kind {
            RawKind::Float(f) => *f,
            RawKind::Integer(i) => *i as f64,
            _ => {
                self.wrong_type(e, "a number", diags);
                return None;
            }
        };
        if !(range.0..=range.1).contains(&v) {
            diags.push(self.diag(
                e.value.span.start,
                key,
                format!("must be between {} and {}", range.0, range.1),
            ));
            return None;
        }
        Some(v)
    }

    pub(crate) fn integer(
        &mut self,
        key: &'static str,
        max: u64,
        diags: &mut Diagnostics,
    ) -> Option<u64> {
        let e = self.entry(key)?;
        match &e.value.kind {
            RawKind::Integer(i) if *i >= 0 && (*i as u64) <= max => Some(*i as u64),
            RawKind::Integer(_) => {
                diags.push(self.diag(
                    e.value.span.start,
                    key,
                    format!("must be between 0 and {max}"),
                ));
                None
            }
            _ => {
                self.wrong_type(e, "an integer", diags);
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, key: &'static str, diags: &mut Diagnostics) -> Option<bool> {
        let e = self.entry(key)?;
        match &e.value.kind {
            RawKind::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(e, "true or false", diags);
                None
            }
        }
    }

    pub(crate) fn strings(
        &mut self,
        key: &'static str,
        diags: &mut Diagnostics,
    ) -> Option<Vec<(String, usize)>> {
        let e = self.entry(key)?;
        let RawKind::Array(items) = &e.value.kind else {
            self.wrong_type(e, "an array of strings", diags);
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            match &item.kind {
                RawKind::String(s) => out.push((s.clone(), item.span.start)),
                _ => {
                    self.wrong_type(e, "an array of strings", diags);
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A sub-table, to read with its own [`Section`].
    pub(crate) fn table(
        &mut self,
        key: &'static str,
        diags: &mut Diagnostics,
    ) -> Option<&'a RawTable> {
        let e = self.entry(key)?;
        match &e.value.kind {
            RawKind::Table(t) => Some(t),
            _ => {
                self.wrong_type(e, "a table", diags);
                None
            }
        }
    }

    /// The named sub-tables of a table of tables (`[key.<name>]`), in file order.
    pub(crate) fn named_tables(
        &mut self,
        key: &'static str,
        diags: &mut Diagnostics,
    ) -> Vec<(String, &'a RawTable)> {
        let Some(t) = self.table(key, diags) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in &t.entries {
            match &e.value.kind {
                RawKind::Table(sub) => out.push((e.key.clone(), sub)),
                _ => self.wrong_type(e, "a table", diags),
            }
        }
        out
    }

    /// An array of tables (`[[key]]`).
    pub(crate) fn tables(
        &mut self,
        key: &'static str,
        diags: &mut Diagnostics,
    ) -> Vec<&'a RawTable> {
        let Some(e) = self.entry(key) else {
            return Vec::new();
        };
        match &e.value.kind {
            RawKind::Array(items) => items
                .iter()
                .filter_map(|v| match &v.kind {
                    RawKind::Table(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => {
                self.wrong_type(e, "an array of tables", diags);
                Vec::new()
            }
        }
    }

    /// Reports every key that was not read.
    pub(crate) fn finish(self, diags: &mut Diagnostics) {
        for e in &self.table.entries {
            if !self.asked.contains(&e.key.as_str()) {
                diags.push(
                    self.diag(e.key_span.start, &e.key, "unknown key")
                        .hint(format!("valid keys here: {}", self.asked.join(", "))),
                );
            }
        }
    }
}
