//! `[retry]` and a job's `retry = { ... }` override: how a step's failures are retried.

use std::time::Duration;

use super::duration;
use super::reader::Table;

/// `[retry]`: how a step's failures are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per step, including the first (default 5).
    pub max_attempts: u32,
    /// First backoff step (default 1 s).
    pub base: Duration,
    /// Largest backoff (default 60 s).
    pub cap: Duration,
    /// Largest `Retry-After` honoured; longer waits give up on this run (default 15 min).
    pub retry_after_cap: Duration,
    /// Retries may be at most this share of calls per service (default 0.2).
    pub budget_ratio: f64,
    /// Retries always allowed per service per budget window regardless of ratio (default 10).
    pub budget_min_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(15 * 60),
            budget_ratio: 0.2,
            budget_min_retries: 10,
        }
    }
}

/// The keys of `[retry]`.
pub(crate) const KEYS: &[&str] = &[
    "max_attempts",
    "base",
    "cap",
    "retry_after_cap",
    "budget_ratio",
    "budget_min_retries",
];

/// Reads a retry table on top of `base` (unset keys keep `base`'s values).
pub(crate) fn read(t: &Table<'_>, base: RetryPolicy) -> RetryPolicy {
    let mut r = base;
    t.finish();
    if let Some(n) = t.u32_in("max_attempts", 1, 20) {
        r.max_attempts = n;
    }
    let base_set = t.positive_duration("base");
    let cap_set = t.positive_duration("cap");
    if let Some((d, _)) = &base_set {
        r.base = *d;
    }
    if let Some((d, _)) = &cap_set {
        r.cap = *d;
    }
    if r.cap < r.base {
        let (key, span) = match (&cap_set, &base_set) {
            (Some((_, span)), _) => ("cap", span),
            (None, Some((_, span))) => ("base", span),
            (None, None) => ("cap", t.span()),
        };
        t.error_hint(
            span,
            key,
            format!(
                "cap ({}) is shorter than base ({})",
                duration::format(r.cap),
                duration::format(r.base)
            ),
            "the largest backoff must be at least the first",
        );
    }
    if let Some((d, _)) = t.duration("retry_after_cap") {
        r.retry_after_cap = d;
    }
    if let Some(x) = t.fraction("budget_ratio", true) {
        r.budget_ratio = x;
    }
    if let Some(n) = t.u32_in("budget_min_retries", 0, 10_000) {
        r.budget_min_retries = n;
    }
    r
}
