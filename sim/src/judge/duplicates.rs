//! Duplicate side effects: the same write (same service, method, path and body, or
//! the same idempotency key) applied more than once, as the ledger marked them.

use crate::services::ledger::LedgerEntry;

/// Applied side effects that repeated an earlier applied one.
pub fn count(ledger: &[LedgerEntry]) -> u64 {
    ledger.iter().filter(|e| e.duplicate).count() as u64
}
