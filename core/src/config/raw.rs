//! Stage one: the file as written, spanned, with unknown keys kept for reporting.
//!
//! The text is parsed with `toml`'s span-preserving [`toml::de::DeTable`] and copied into
//! the owned tree below, where every key and value carries its byte range. Entries are
//! kept in file order (not key order) so that stage two reports problems, and builds
//! ordered things such as headers, in the order a reader sees them. Nothing here knows
//! what the keys mean; that is [`super::reader`]'s job.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A byte range of the source text.
pub type Span = Range<usize>;

/// A table: a `[section]`, an inline `{ ... }` table, one `[[array]]` element, or the
/// whole document.
#[derive(Clone, PartialEq)]
pub struct RawTable {
    /// The header (`[runner]`), the braces of an inline table, or `0..0` for the document
    /// and for tables only implied by a dotted header.
    pub span: Span,
    /// The entries, in file order.
    pub entries: Vec<RawEntry>,
}

/// One `key = value` (or sub-table) of a table.
#[derive(Clone, PartialEq)]
pub struct RawEntry {
    /// The key as written, unquoted.
    pub key: String,
    /// Where the key is.
    pub key_span: Span,
    /// Its value.
    pub value: RawValue,
}

/// A value with its byte range.
#[derive(Clone, PartialEq)]
pub struct RawValue {
    /// Where the value is (for a table: its header or braces).
    pub span: Span,
    /// The value.
    pub kind: RawKind,
}

/// The kinds of TOML value.
#[derive(Clone, PartialEq)]
pub enum RawKind {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// A date, time or date-time.
    Datetime(toml::value::Datetime),
    /// An array (including an array of tables).
    Array(Vec<RawValue>),
    /// A table.
    Table(RawTable),
}

/// The text is not valid TOML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What the parser said, as a lowercase fragment.
    pub message: String,
    /// How to fix it.
    pub hint: String,
    /// Where, when the parser knows.
    pub span: Option<Span>,
}

/// The longest key quoted back in a message.
const MAX_QUOTED_KEY: usize = 64;

/// Parses a whole document. Only the first syntax error is returned: after one, the
/// parser's guesses about the rest of the file produce confusing follow-on errors.
pub fn parse(text: &str) -> Result<RawTable, SyntaxError> {
    let doc = DeTable::parse(text).map_err(|e| syntax_error(text, e.message(), e.span()))?;
    let span = doc.span();
    table(doc.get_ref(), span)
}

/// The parser's message as a fragment with a hint. "duplicate key" (the commonest
/// mistake: a key pasted twice, or a `[section]` written twice) names the key, which
/// the parser's message leaves out.
fn syntax_error(text: &str, message: &str, span: Option<Span>) -> SyntaxError {
    let first = message.lines().next().unwrap_or("").trim();
    let key = span
        .as_ref()
        .and_then(|s| text.get(s.clone()))
        .map(|k| k.trim().trim_matches(['[', ']', '"', '\'']).trim())
        .filter(|k| !k.is_empty() && k.len() <= MAX_QUOTED_KEY && !k.contains('\n'));
    if first.starts_with("duplicate key") {
        let message = match key {
            Some(k) => format!("invalid toml: duplicate key `{k}`"),
            None => "invalid toml: duplicate key".to_string(),
        };
        return SyntaxError {
            message,
            hint: "a key may appear once per table, and a [section] once per file; remove or merge the second one".to_string(),
            span,
        };
    }
    SyntaxError {
        message: if first.is_empty() {
            "invalid toml".to_string()
        } else {
            format!("invalid toml: {first}")
        },
        hint: "strings need quotes, each `key = value` goes on its own line, and [section] headers stand alone".to_string(),
        span,
    }
}

fn table(t: &DeTable<'_>, span: Span) -> Result<RawTable, SyntaxError> {
    let mut entries = Vec::with_capacity(t.len());
    for (k, v) in t.iter() {
        entries.push(RawEntry {
            key: k.get_ref().to_string(),
            key_span: k.span(),
            value: value(v)?,
        });
    }
    entries.sort_by_key(|e| (e.key_span.start, e.key_span.end));
    Ok(RawTable { span, entries })
}

fn value(v: &Spanned<DeValue<'_>>) -> Result<RawValue, SyntaxError> {
    let span = v.span();
    let kind = match v.get_ref() {
        DeValue::String(s) => RawKind::String(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => RawKind::Integer(n),
            Err(_) => {
                return Err(SyntaxError {
                    message: "integer does not fit in 64 bits".to_string(),
                    hint: "integers are at most 9223372036854775807".to_string(),
                    span: Some(span),
                });
            }
        },
        DeValue::Float(f) => match parse_float(f.as_str()) {
            Some(x) => RawKind::Float(x),
            None => {
                return Err(SyntaxError {
                    message: "float is out of range".to_string(),
                    hint: "write a smaller number".to_string(),
                    span: Some(span),
                });
            }
        },
        DeValue::Boolean(b) => RawKind::Boolean(*b),
        DeValue::Datetime(d) => RawKind::Datetime(*d),
        DeValue::Array(items) => RawKind::Array(items.iter().map(value).collect::<Result<_, _>>()?),
        DeValue::Table(t) => RawKind::Table(table(t, span.clone())?),
    };
    Ok(RawValue { span, kind })
}

fn parse_float(text: &str) -> Option<f64> {
    let x: f64 = text.parse().ok()?;
    // A literal too large for f64 parses as infinity; only `inf` itself may mean that.
    if x.is_infinite() && !text.contains("inf") {
        None
    } else {
        Some(x)
    }
}

impl RawTable {
    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&RawEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Converts to a plain (unspanned) table, for callers that validate a section
    /// themselves.
    pub fn to_toml(&self) -> toml::Table {
        let mut out = toml::Table::new();
        for e in &self.entries {
            out.insert(e.key.clone(), e.value.to_toml());
        }
        out
    }
}

impl RawValue {
    /// Converts to a plain (unspanned) value.
    pub fn to_toml(&self) -> toml::Value {
        match &self.kind {
            RawKind::String(s) => toml::Value::String(s.clone()),
            RawKind::Integer(n) => toml::Value::Integer(*n),
            RawKind::Float(x) => toml::Value::Float(*x),
            RawKind::Boolean(b) => toml::Value::Boolean(*b),
            RawKind::Datetime(d) => toml::Value::Datetime(*d),
            RawKind::Array(items) => {
                toml::Value::Array(items.iter().map(RawValue::to_toml).collect())
            }
            RawKind::Table(t) => toml::Value::Table(t.to_toml()),
        }
    }
}

impl RawKind {
    /// The TOML type's name with an article, for messages ("a string").
    pub fn type_name(&self) -> &'static str {
        match self {
            RawKind::String(_) => "a string",
            RawKind::Integer(_) => "an integer",
            RawKind::Float(_) => "a float",
            RawKind::Boolean(_) => "a boolean",
            RawKind::Datetime(_) => "a date-time",
            RawKind::Array(_) => "an array",
            RawKind::Table(_) => "a table",
        }
    }
}

// Debug never prints string contents: a raw tree holds literal secrets until stage two
// has moved them into `SecretString`s.
impl fmt::Debug for RawKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawKind::String(s) => write!(f, "String(<{} bytes>)", s.len()),
            RawKind::Integer(n) => write!(f, "Integer({n})"),
            RawKind::Float(x) => write!(f, "Float({x})"),
            RawKind::Boolean(b) => write!(f, "Boolean({b})"),
            RawKind::Datetime(d) => write!(f, "Datetime({d})"),
            RawKind::Array(items) => f.debug_tuple("Array").field(items).finish(),
            RawKind::Table(t) => f.debug_tuple("Table").field(t).finish(),
        }
    }
}

impl fmt::Debug for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{:?}", self.kind, self.span)
    }
}

impl fmt::Debug for RawEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:?} = {:?}", self.key, self.key_span, self.value)
    }
}

impl fmt::Debug for RawTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTable")
            .field("span", &self.span)
            .field("entries", &self.entries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<'a>(t: &'a RawTable, k: &str) -> &'a RawKind {
        &t.get(k).unwrap().value.kind
    }

    #[test]
    fn keys_and_values_keep_their_spans_in_file_order() {
        let text = "zeta = 1\nalpha = \"x\"\n[sec]\nb = 2.5\n[[arr]]\nc = true\n";
        let doc = parse(text).unwrap();
        let keys: Vec<_> = doc.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["zeta", "alpha", "sec", "arr"]);
        let alpha = doc.get("alpha").unwrap();
        assert_eq!(&text[alpha.key_span.clone()], "alpha");
        assert_eq!(&text[alpha.value.span.clone()], "\"x\"");
        let RawKind::Table(sec) = kind(&doc, "sec") else {
            panic!()
        };
        assert_eq!(&text[sec.span.clone()], "[sec]");
        assert_eq!(kind(sec, "b"), &RawKind::Float(2.5));
        let RawKind::Array(arr) = kind(&doc, "arr") else {
            panic!()
        };
        assert_eq!(&text[arr[0].span.clone()], "[[arr]]");
    }

    #[test]
    fn syntax_errors_have_a_span() {
        let err = parse("a = 1\nb = \n").unwrap_err();
        assert!(err.message.starts_with("invalid toml"), "{err:?}");
        assert!(err.span.is_some());
        let err = parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!(err.message, "invalid toml: duplicate key `a`");
        let err = parse("[runner]\n[runner]\n").unwrap_err();
        assert_eq!(err.message, "invalid toml: duplicate key `runner`");
    }

    #[test]
    fn debug_never_shows_string_contents() {
        let doc = parse("token = \"hunter2\"\n").unwrap();
        assert!(!format!("{doc:?}").contains("hunter2"));
    }

    #[test]
    fn converts_to_plain_toml() {
        let doc = parse("[world]\nseed = 7\nhosts = [\"a\", \"b\"]\n").unwrap();
        let plain = doc.to_toml();
        assert_eq!(plain["world"]["seed"].as_integer(), Some(7));
        assert_eq!(plain["world"]["hosts"][1].as_str(), Some("b"));
    }
}
