//! Names of jobs, steps, services, credentials, actions and outputs.
//!
//! Names become file names (`checkpoints/<job>.json.tmp`, a command step's
//! `<job>.<step>.<run id>.script`, `tokens/<credential>.json`) and table cells, so they
//! are short and plain: at most [`MAX_NAME_CHARS`] of `[A-Za-z0-9_-]`. The longest file
//! name made from names, the script's, is `3 * 64 + 26 = 218` bytes, under the 255 of
//! every common file system; a 247-character job name used to pass `check` and then fail
//! every multi-step run, and a 65,536-character one crashed `runner status`.

/// The longest name.
pub const MAX_NAME_CHARS: usize = 64;

/// How names are written, for hints.
pub const NAME_HINT: &str = "use letters, digits, `_` and `-` only";

/// Why a name is not valid, as a lowercase fragment naming what `what` is
/// ("job name"); the value is quoted only when short.
pub(crate) fn check(name: &str, what: &str) -> Result<(), (String, String)> {
    if name.len() > MAX_NAME_CHARS {
        return Err((
            format!(
                "{what} is {} characters long, more than the {MAX_NAME_CHARS} allowed",
                name.chars().count()
            ),
            "shorten it; names become file names and table cells".to_string(),
        ));
    }
    if !is_name(name) {
        return Err((format!("invalid {what} `{name}`"), NAME_HINT.to_string()));
    }
    Ok(())
}

/// `[A-Za-z0-9_-]+`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_length_before_quoting() {
        assert!(check("nightly-backup", "job name").is_ok());
        assert!(check(&"a".repeat(MAX_NAME_CHARS), "job name").is_ok());
        let (message, _) = check(&"a".repeat(65_536), "job name").unwrap_err();
        assert_eq!(
            message,
            "job name is 65536 characters long, more than the 64 allowed"
        );
        let (message, hint) = check("a b", "step name").unwrap_err();
        assert_eq!(
            (message.as_str(), hint.as_str()),
            ("invalid step name `a b`", NAME_HINT)
        );
    }
}
