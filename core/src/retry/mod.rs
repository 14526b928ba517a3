//! Pattern 1: retry with exponential backoff and jitter, `Retry-After`, and a
//! per-service retry budget.
//!
//! # Layout
//! - [`backoff`]: the delay of attempt `n` under each jitter mode.
//! - [`retry_after`]: parsing the `Retry-After` header (seconds or HTTP date).
//! - [`budget`]: a token bucket per service so retries stay a bounded share of calls.
//! - [`gate`]: "not before T" per service, shared by every job (Retry-After, quota
//!   resets, open breakers), durable in the store.
//! - [`plan`](mod@plan): the decision after a failed attempt: retry after a delay, or give up.
//! - [`retrier`]: the pattern as a runner holds it, chosen once at construction.
//!
//! # How the pieces fit
//!
//! [`plan()`] is a pure function of its style, its input and the random source, so the
//! naive habits (`RetryMode::Immediate`, `Jitter::None`) and ours can be compared on
//! identical failures. A [`Retrier`] is the style a profile chose plus the budgets (or
//! none, when the budget pattern is off): it asks [`RetryBudgets::try_retry`] once the
//! plan says retry and gives up with [`GiveUp::Budget`] when the budget says no. The
//! caller records every first attempt with [`Retrier::record_call`], refreshes the token
//! before a critical retry, and parses `Retry-After` with [`retry_after::parse`] into the
//! [`StepError`](crate::taxonomy::StepError).

pub mod backoff;
pub mod budget;
pub mod gate;
pub mod plan;
pub mod retrier;
pub mod retry_after;

pub use backoff::Backoff;
pub use budget::RetryBudgets;
pub use gate::{Gates, Hold};
pub use plan::{GiveUp, RetryDecision, RetryInput, RetryStyle, plan};
pub use retrier::Retrier;
