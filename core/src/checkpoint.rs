//! Pattern 5: checkpoints. A run is a sequence of named steps; each step it finishes is
//! journaled (with its outputs) before the next starts, and a run that was interrupted,
//! failed or deferred resumes after its last finished step instead of starting over.
//! Each step has an idempotency key derived from the run and the step, sent to the
//! service, so a step whose side effect happened just before a crash is not applied
//! twice when the resumed run sends it again.
//!
//! The steps live in the journal ([`crate::db::journal`]); this module holds the
//! pattern's two choices: resume or start over, and the keys.

use sha2::{Digest, Sha256};

use crate::job::RunId;

/// Where a run picks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// After its last journaled step, with stable idempotency keys (pattern 5 on).
    FromLastStep,
    /// From its first step, with no idempotency keys (pattern 5 off: the naive habit).
    FromScratch,
}

/// The stable idempotency key of one step of one run.
pub fn idempotency_key(run: &RunId, step: &str) -> String {
    let mut h = Sha256::new();
    for part in [run.job(), &run.to_string(), step] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(32);
    for b in &h.finalize()[..16] {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}
