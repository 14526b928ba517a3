//! Output contracts: whether an answer the taxonomy let through is really done.
//!
//! A 2xx with an empty, truncated or non-JSON body, or without a field a later step
//! extracts, is not a success: it is a [`FailureKind::BadAnswer`], recoverable, retried
//! and counted against the service's breaker like a 503. The naive profile ignores
//! contracts ([`Contracts::Ignored`]): any 2xx or 3xx is done, whatever it holds.

use crate::config::Expect;
use crate::taxonomy::{FailureKind, StepError};

/// How answers are checked, chosen once from the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contracts {
    /// Each step's `expect` (and its `extract` pointers) must hold.
    Checked,
    /// The status alone decides (the naive habit).
    Ignored,
}

impl Contracts {
    /// The contract's verdict on an answer: `None` when the status decides by the
    /// taxonomy alone (not an accepted code), `Some(Ok)` when it is done, `Some(Err)`
    /// when it is a bad answer.
    pub fn check(self, expect: &Expect, status: u16, body: &[u8]) -> Option<Result<(), StepError>> {
        let accepted = if expect.status.is_empty() || self == Self::Ignored {
            FailureKind::from_status(status).is_none()
        } else {
            expect.status.contains(&status)
        };
        if self == Self::Ignored {
            return accepted.then_some(Ok(()));
        }
        if !accepted {
            // A 2xx or 3xx the contract does not list is a bad answer; anything else
            // the taxonomy classifies.
            return FailureKind::from_status(status).is_none().then(|| {
                Err(bad(format!(
                    "http {status}, expected one of {}",
                    codes(expect)
                )))
            });
        }
        Some(answer(expect, status, body).map_err(bad))
    }
}

fn bad(detail: String) -> StepError {
    StepError::new(FailureKind::BadAnswer, detail)
}

fn codes(expect: &Expect) -> String {
    expect
        .status
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The body checks, in the order a reader would debug them.
fn answer(expect: &Expect, status: u16, body: &[u8]) -> Result<(), String> {
    if expect.non_empty && body.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("http {status} with an empty body"));
    }
    if !expect.require.is_empty() {
        let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "http {status} with a body that is not JSON ({} bytes; {})",
                body.len(),
                e.classify_name()
            )
        })?;
        for ptr in &expect.require {
            match json.pointer(ptr) {
                None | Some(serde_json::Value::Null) => {
                    return Err(format!("http {status} without `{ptr}` in its body"));
                }
                Some(_) => {}
            }
        }
    }
    if let Some(text) = &expect.contains
        && !contains(body, text.as_bytes())
    {
        return Err(format!("http {status} whose body lacks the expected text"));
    }
    Ok(())
}

fn contains(body: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || body.windows(needle.len()).any(|w| w == needle)
}

/// A short name for a JSON parse error's category (never the body's text).
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Eof => "truncated",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Io => "unreadable",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::taxonomy::ErrorClass;

    fn extracting(ptr: &str) -> Expect {
        Expect {
            non_empty: true,
            require: BTreeSet::from([ptr.to_string()]),
            ..Expect::default()
        }
    }

    #[test]
    fn the_naive_check_passes_any_2xx() {
        let e = extracting("/id");
        assert!(matches!(
            Contracts::Ignored.check(&e, 200, b""),
            Some(Ok(()))
        ));
        assert!(Contracts::Ignored.check(&e, 503, b"").is_none());
    }

    #[test]
    fn empty_truncated_non_json_and_missing_fields_are_bad_answers() {
        let e = extracting("/id");
        for body in [
            &b""[..],
            b"  \n",
            b"{\"id\": \"4",
            b"<html>ok</html>",
            b"{\"x\": 1}",
            b"{\"id\": null}",
        ] {
            let verdict = Contracts::Checked.check(&e, 200, body);
            let Some(Err(err)) = verdict else {
                panic!("{:?} passed", String::from_utf8_lossy(body));
            };
            assert_eq!(err.kind, FailureKind::BadAnswer);
            assert_eq!(err.class, ErrorClass::Recoverable);
        }
        assert!(matches!(
            Contracts::Checked.check(&e, 200, b"{\"id\": 4}"),
            Some(Ok(()))
        ));
    }

    #[test]
    fn the_default_contract_is_the_status_rule() {
        let e = Expect::default();
        assert!(matches!(
            Contracts::Checked.check(&e, 204, b""),
            Some(Ok(()))
        ));
        assert!(Contracts::Checked.check(&e, 429, b"").is_none());
    }

    #[test]
    fn listed_codes_and_content() {
        let e = Expect {
            status: BTreeSet::from([201]),
            contains: Some("\"ok\":true".into()),
            non_empty: true,
            ..Expect::default()
        };
        assert!(matches!(
            Contracts::Checked.check(&e, 200, b"{\"ok\":true}"),
            Some(Err(_))
        ));
        assert!(matches!(
            Contracts::Checked.check(&e, 201, b"{\"ok\":false}"),
            Some(Err(_))
        ));
        assert!(matches!(
            Contracts::Checked.check(&e, 201, b"{\"ok\":true}"),
            Some(Ok(()))
        ));
        assert!(Contracts::Checked.check(&e, 503, b"").is_none());
    }
}
