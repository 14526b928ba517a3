//! Backoff delays under each jitter mode.

use std::time::Duration;

use crate::config::Jitter;
use crate::env::Rng;

/// Exponential backoff: base, cap and jitter mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Jitter mode.
    pub jitter: Jitter,
    /// First step.
    pub base: Duration,
    /// Largest delay.
    pub cap: Duration,
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry). `prev` is the
    /// previous delay (used by decorrelated jitter; `Duration::ZERO` for the first).
    pub fn delay(&self, retry: u32, prev: Duration, rng: &impl Rng) -> Duration {
        let _ = (retry, prev, rng);
        unimplemented!("backoff")
    }
}
