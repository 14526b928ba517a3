//! `{{step.output}}` placeholders and JSON-pointer extraction.
//!
//! Hand-written because the whole language is one substitution form; a template engine
//! would add a dependency and a second syntax users could trip on.

use std::collections::BTreeMap;

/// Values placeholders can name: `step.output`, plus `run.id`, `run.due` and `job.name`.
pub type Vars = BTreeMap<String, String>;

/// Why a template could not be filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The value is not known (its step was skipped or produced no such output).
    #[error(
        "placeholder `{{{{{0}}}}}` has no value (hint: the step that produces it was skipped or did not return it)"
    )]
    Missing(String),
    /// `{{` without `}}`.
    #[error("unclosed placeholder in `{0}`")]
    Unclosed(String),
}

/// Fills every `{{name}}` in `text` from `vars`.
pub fn fill(text: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(text.to_string()))?;
        let name = after[..close].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| TemplateError::Missing(name.to_string()))?;
        out.push_str(value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The names of the placeholders in `text`, in order.
pub fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        names.push(after[..close].trim().to_string());
        rest = &after[close + 2..];
    }
    names
}

/// Extracts `name -> JSON pointer` values from a JSON body. Strings are taken as is,
/// other values as their JSON text; missing pointers are left out.
pub fn extract(body: &[u8], pointers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    if pointers.is_empty() {
        return BTreeMap::new();
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return BTreeMap::new();
    };
    pointers
        .iter()
        .filter_map(|(name, ptr)| {
            json.pointer(ptr).map(|v| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_reports_missing() {
        let vars = Vars::from([("fetch.id".to_string(), "42".to_string())]);
        assert_eq!(fill("/v/{{fetch.id}}/x", &vars).unwrap(), "/v/42/x");
        assert_eq!(fill("{{ fetch.id }}", &vars).unwrap(), "42");
        assert_eq!(fill("plain", &vars).unwrap(), "plain");
        assert_eq!(
            fill("{{nope.x}}", &vars),
            Err(TemplateError::Missing("nope.x".into()))
        );
        assert!(matches!(
            fill("{{open", &vars),
            Err(TemplateError::Unclosed(_))
        ));
        assert_eq!(placeholders("a{{x.y}}b{{z.w}}"), vec!["x.y", "z.w"]);
    }

    #[test]
    fn extracts_by_pointer() {
        let body = br#"{"data": {"id": "v1", "n": 3}}"#;
        let ptrs = BTreeMap::from([
            ("id".to_string(), "/data/id".to_string()),
            ("n".to_string(), "/data/n".to_string()),
            ("gone".to_string(), "/nope".to_string()),
        ]);
        let out = extract(body, &ptrs);
        assert_eq!(out.get("id").map(String::as_str), Some("v1"));
        assert_eq!(out.get("n").map(String::as_str), Some("3"));
        assert!(!out.contains_key("gone"));
        assert!(extract(b"not json", &ptrs).is_empty());
    }
}
