//! Pattern 1: retry with exponential backoff and jitter, `Retry-After`, and a
//! per-service retry budget.
//!
//! # Layout
//! - [`backoff`]: the delay of attempt `n` under each jitter mode.
//! - [`retry_after`]: parsing the `Retry-After` header (seconds or HTTP date).
//! - [`budget`]: a token bucket per service so retries stay a bounded share of calls.
//! - [`plan`](mod@plan): the decision after a failed attempt: retry after a delay, or give up.
//!
//! # How the pieces fit
//!
//! [`plan()`] is a pure function of its input and the random source, so the naive habits
//! (`RetryMode::Immediate`, `Jitter::None`) and ours can be compared on identical
//! failures. It does not consult the budget: the caller asks [`RetryBudgets::try_retry`]
//! only once the plan says retry, and gives the step up as `BudgetExhausted` when the
//! budget says no. The caller records every first attempt with
//! [`RetryBudgets::record_call`], refreshes the token before a critical retry, and parses
//! `Retry-After` with [`retry_after::parse`] into the [`StepError`](crate::taxonomy::StepError).

pub mod backoff;
pub mod budget;
pub mod plan;
pub mod retry_after;

pub use backoff::Backoff;
pub use budget::RetryBudgets;
pub use plan::{GiveUp, RetryDecision, RetryInput, plan};
