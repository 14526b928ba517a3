//! `{{step.output}}` placeholders, parsed once when the configuration is read.
//!
//! Http URLs, header values and bodies and command arguments are [`Template`]s: the
//! reader checks that every placeholder names an earlier step (or `run.id`, `run.due`,
//! `job.name`), and a run only fills them in. Hand-written because the whole language
//! is one substitution form; a template engine would add a dependency and a second
//! syntax users could trip on.

use std::collections::BTreeMap;
use std::fmt;

/// Placeholders every step may use: the run's id (stable across a resume), its due
/// time (RFC 3339) and the job's name. A step named `run` or `job` shadows nothing:
/// these names are checked first.
pub const BUILTIN: [(&str, &str); 3] = [("run", "id"), ("run", "due"), ("job", "name")];

/// Text with placeholders.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    /// As written (for messages and `Debug`).
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `step.output`; `dot` is the byte index of the `.`.
    Value {
        name: String,
        dot: usize,
    },
}

/// Why a text is not a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed placeholder: `{{{{` without `}}}}`")]
    Unclosed,
    /// `{{x}}` that is not `{{step.output}}`.
    #[error("malformed placeholder `{{{{{0}}}}}`")]
    Malformed(String),
}

/// A placeholder whose value a run does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "placeholder `{{{{{0}}}}}` has no value (hint: the step that produces it was skipped or did not return it)"
)]
pub struct MissingValue(pub String);

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// An unclosed `{{`, or a placeholder that is not `{{name.name}}`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let inner = after[..close].trim();
            match inner.split_once('.') {
                Some((step, output))
                    if super::names::is_name(step) && super::names::is_name(output) =>
                {
                    parts.push(Part::Value {
                        name: inner.to_string(),
                        dot: step.len(),
                    });
                }
                _ => return Err(TemplateError::Malformed(inner.to_string())),
            }
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            text: text.to_string(),
            parts,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The placeholders, in order, as `(step, output)`.
    pub fn refs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Value { name, dot } => Some((&name[..*dot], &name[dot + 1..])),
            Part::Text(_) => None,
        })
    }

    /// The text with every placeholder replaced by `x`: what the shape checks (a URL
    /// parses, a header value is valid) look at.
    pub fn sample(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Value { .. } => "x",
            })
            .collect()
    }

    /// Fills every placeholder from `vars` (keyed `step.output`).
    ///
    /// # Errors
    ///
    /// The first placeholder `vars` has no value for.
    pub fn fill(&self, vars: &BTreeMap<String, String>) -> Result<String, MissingValue> {
        let mut out = String::with_capacity(self.text.len());
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Value { name, .. } => match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => return Err(MissingValue(name.clone())),
                },
            }
        }
        Ok(out)
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_split_out() {
        let t = Template::parse("https://h/{{a.b}}/x?{{ c.d }}").unwrap();
        assert_eq!(t.sample(), "https://h/x/x?x");
        assert_eq!(t.refs().collect::<Vec<_>>(), [("a", "b"), ("c", "d")]);
        assert_eq!(Template::parse("{{a.b"), Err(TemplateError::Unclosed));
        assert_eq!(
            Template::parse("{{ab}}"),
            Err(TemplateError::Malformed("ab".into()))
        );
    }

    #[test]
    fn fills_and_reports_missing() {
        let vars = BTreeMap::from([("fetch.id".to_string(), "42".to_string())]);
        let fill = |t: &str| Template::parse(t).unwrap().fill(&vars);
        assert_eq!(fill("/v/{{fetch.id}}/x").unwrap(), "/v/42/x");
        assert_eq!(fill("{{ fetch.id }}").unwrap(), "42");
        assert_eq!(fill("plain").unwrap(), "plain");
        assert_eq!(fill("{{nope.x}}"), Err(MissingValue("nope.x".into())));
        assert_eq!(
            MissingValue("nope.x".into()).to_string(),
            "placeholder `{{nope.x}}` has no value (hint: the step that produces it was skipped or did not return it)"
        );
    }
}
