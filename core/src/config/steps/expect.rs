//! `expect`: an http step's output contract, what an answer must hold to count as done.
//!
//! ```toml
//! [jobs.steps.expect]
//! status = [200, 201]        # default: any 2xx or 3xx
//! non_empty = true           # default: true when anything below is set or the step extracts
//! require = ["/data/id"]     # JSON pointers that must be present (each `extract` adds its own)
//! contains = "\"ok\":true"   # text the body must contain
//! ```
//!
//! An answer that breaks the contract is a failure like a 503 (see
//! [`crate::job`]'s contract check), never a success: a 200 with an empty, truncated or
//! non-JSON body, or without the field a later step needs, is what the field report
//! called "ran but produced no output".

use std::collections::BTreeSet;

use super::super::raw::RawKind;
use super::super::reader::Table;

/// The keys of `expect`.
pub(crate) const KEYS: &[&str] = &["status", "non_empty", "require", "contains"];
/// At most this many status codes and required pointers.
pub const MAX_ITEMS: usize = 64;
/// At most this many bytes of `contains`.
pub const MAX_CONTAINS_BYTES: usize = 1024;
const HINT: &str =
    "expect = { status = [200], non_empty = true, require = [\"/id\"], contains = \"text\" }";

/// What an answer must hold. The default (no `expect`, no `extract`) is today's rule:
/// any 2xx or 3xx passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Accepted status codes (empty: any 2xx or 3xx).
    pub status: BTreeSet<u16>,
    /// The body must not be empty (or only whitespace).
    pub non_empty: bool,
    /// JSON pointers the body must have (it must then be JSON); includes every
    /// `extract` pointer.
    pub require: BTreeSet<String>,
    /// Text the body must contain.
    pub contains: Option<String>,
}

impl Expect {
    /// Whether the contract asks nothing beyond a 2xx/3xx status.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Reads `expect` and folds in the `extract` pointers; `None` after reporting.
pub(crate) fn read<'a>(t: &Table<'_>, extract: impl Iterator<Item = &'a String>) -> Option<Expect> {
    let mut out = Expect::default();
    let mut ok = true;
    let mut explicit_non_empty = None;
    if t.entry("expect").is_some() {
        let x = t.table("expect", KEYS)?;
        x.finish();
        if let Some(codes) = status(&x) {
            out.status = codes;
        } else if x.entry("status").is_some() {
            ok = false;
        }
        explicit_non_empty = x.boolean("non_empty");
        if let Some(items) = x.strings("require", MAX_ITEMS, HINT) {
            for (i, (ptr, span)) in items.into_iter().enumerate() {
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    x.error_hint(
                        &span,
                        &format!("require[{i}]"),
                        format!("invalid JSON pointer `{}`", shown(ptr)),
                        format!("a JSON pointer starts with `/`, e.g. \"/{}\"", shown(ptr)),
                    );
                    ok = false;
                    continue;
                }
                out.require.insert(ptr.to_string());
            }
        } else if x.entry("require").is_some() {
            ok = false;
        }
        match x.string("contains") {
            Some((text, span)) if text.is_empty() || text.len() > MAX_CONTAINS_BYTES => {
                x.error_hint(
                    &span,
                    "contains",
                    format!(
                        "must be 1 to {MAX_CONTAINS_BYTES} bytes, not {}",
                        text.len()
                    ),
                    "name a short piece of text every good answer contains, or remove the key",
                );
                ok = false;
            }
            Some((text, _)) => out.contains = Some(text.to_string()),
            None if x.entry("contains").is_some() => ok = false,
            None => {}
        }
    }
    // An extract is a promise that the answer has the field: a later step needs it.
    out.require
        .extend(extract.filter(|p| !p.is_empty()).cloned());
    out.non_empty = explicit_non_empty
        .unwrap_or(!out.status.is_empty() || !out.require.is_empty() || out.contains.is_some());
    ok.then_some(out)
}

/// `expect.status`: codes in 100..=599.
fn status(x: &Table<'_>) -> Option<BTreeSet<u16>> {
    let e = x.entry("status")?;
    let RawKind::Array(items) = &e.value.kind else {
        x.wrong_type(e, "an array of status codes", Some(HINT));
        return None;
    };
    if items.is_empty() || items.len() > MAX_ITEMS {
        x.error_hint(
            &e.value.span,
            "status",
            format!("{} status codes; give 1 to {MAX_ITEMS}", items.len()),
            "list the codes a good answer has, e.g. status = [200, 201]",
        );
        return None;
    }
    let mut out = BTreeSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match &item.kind {
            RawKind::Integer(n) if (100..=599).contains(n) => {
                out.insert(*n as u16);
            }
            RawKind::Integer(n) => {
                x.error_hint(
                    &item.span,
                    &format!("status[{i}]"),
                    format!("{n} is not an http status code"),
                    "status codes are 100 to 599, e.g. 200",
                );
                ok = false;
            }
            _ => {
                x.wrong_item(item, &format!("status[{i}]"), "an integer", Some(HINT));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn shown(text: &str) -> &str {
    if text.len() > 64 {
        "(too long to show)"
    } else {
        text
    }
}
