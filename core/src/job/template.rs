//! The values `{{step.output}}` placeholders are filled from, and JSON-pointer
//! extraction. The placeholders themselves are parsed once, by the configuration reader
//! ([`crate::config::Template`]).

use std::collections::BTreeMap;

/// Values placeholders can name: `step.output`, plus `run.id`, `run.due` and `job.name`.
pub type Vars = BTreeMap<String, String>;

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
