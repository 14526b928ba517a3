//! Secrets: a string literal, `{ env = "NAME" }` or `{ file = "PATH" }`.
//!
//! Resolved once, while the file is read, through the caller's [`super::SecretResolver`]
//! (the daemon's reads the process environment and files; the simulator's resolves
//! nothing). Credentials and the daemon's secret URLs (webhooks, pings) go through
//! this one function. Messages name the variable or file, never the value.

use secrecy::SecretString;

use super::raw::{RawEntry, RawKind};
use super::reader::{Table, join};

/// How secrets are written, for hints.
pub const SECRET_HINT: &str = "a secret is a string, { env = \"NAME\" } or { file = \"PATH\" }";

/// The keys of a secret reference.
const KEYS: &[&str] = &["env", "file"];

impl Table<'_> {
    /// The secret under `key`, resolved; `None` (reported) when it cannot be.
    pub fn secret(&self, key: &'static str) -> Option<SecretString> {
        let e = self.entry(key)?;
        self.secret_of(e)
    }

    /// The secret in entry `e` of this table (for tables whose keys are names).
    pub fn secret_of(&self, e: &RawEntry) -> Option<SecretString> {
        let key = self.key(&e.key);
        let span = &e.value.span;
        let reader = self.reader();
        let t = match &e.value.kind {
            RawKind::String(s) => {
                if s.trim().is_empty() {
                    reader.error_hint(span, &key, "secret is empty", SECRET_HINT);
                    return None;
                }
                return Some(SecretString::from(s.clone()));
            }
            RawKind::Table(t) => reader.table(t, key.clone(), KEYS),
            _ => {
                self.wrong_type(e, "a secret", Some(SECRET_HINT));
                return None;
            }
        };
        t.finish();
        match (t.entry("env"), t.entry("file")) {
            (Some(_), Some(_)) | (None, None) => {
                reader.error_hint(
                    span,
                    &key,
                    "a secret reference needs exactly one of `env` and `file`",
                    SECRET_HINT,
                );
                None
            }
            (Some(_), None) => {
                let (name, name_span) = t.string("env")?;
                let at = join(&key, "env");
                match reader.secrets().env(name) {
                    Some(v) if !v.trim().is_empty() => Some(SecretString::from(v)),
                    Some(_) => {
                        reader.error_hint(
                            &name_span,
                            &at,
                            format!("environment variable `{name}` is empty"),
                            format!("set {name} to the secret before starting the runner"),
                        );
                        None
                    }
                    None => {
                        reader.error_hint(
                            &name_span,
                            &at,
                            format!("environment variable `{name}` is not set"),
                            format!(
                                "export {name} before starting the runner, or keep the secret in a file with {{ file = \"PATH\" }}"
                            ),
                        );
                        None
                    }
                }
            }
            (None, Some(_)) => {
                let (file, file_span) = t.string("file")?;
                let abs = reader.resolve(file);
                let at = join(&key, "file");
                match reader.secrets().file(&abs) {
                    Ok(contents) if !contents.trim().is_empty() => {
                        Some(SecretString::from(contents.trim().to_string()))
                    }
                    Ok(_) => {
                        reader.error_hint(
                            &file_span,
                            &at,
                            format!("secret file `{}` is empty", abs.display()),
                            "write the secret into it (surrounding whitespace is ignored)",
                        );
                        None
                    }
                    Err(err) => {
                        reader.error_hint(
                            &file_span,
                            &at,
                            format!("cannot read secret file `{}`: {}", abs.display(), err.kind()),
                            "create it with the secret as its only content, readable by the runner; relative paths start at the config file's directory",
                        );
                        None
                    }
                }
            }
        }
    }
}
