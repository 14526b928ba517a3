//! Calls made with an expired access token, as the services that checked them saw.

use crate::services::ledger::{LedgerEntry, TokenSeen};

/// Requests that presented an access token past its expiry.
pub fn expired_calls(ledger: &[LedgerEntry]) -> u64 {
    ledger
        .iter()
        .filter(|e| matches!(e.token, TokenSeen::Expired { .. }))
        .count() as u64
}
