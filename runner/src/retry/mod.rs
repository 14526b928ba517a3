//! Pattern 1: retry with exponential backoff and jitter, `Retry-After`, and a
//! per-service retry budget.
//!
//! # Layout
//! - [`backoff`]: the delay of attempt `n` under each jitter mode.
//! - [`retry_after`]: parsing the `Retry-After` header (seconds or HTTP date).
//! - [`budget`]: a token bucket per service so retries stay a bounded share of calls.
//! - [`plan`]: the decision after a failed attempt: retry after a delay, or give up.

pub mod backoff;
pub mod budget;
pub mod plan;
pub mod retry_after;

pub use backoff::Backoff;
pub use budget::RetryBudgets;
pub use plan::{GiveUp, RetryDecision, RetryInput, plan};
