//! The retry decision after a failed attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Jitter, RetryMode, RetryPolicy};
use crate::env::Rng;
use crate::taxonomy::StepError;

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct RetryInput<'a> {
    /// The policy (attempts, base, cap, Retry-After cap).
    pub policy: &'a RetryPolicy,
    /// Off, immediate or backoff.
    pub mode: RetryMode,
    /// Jitter of the backoff.
    pub jitter: Jitter,
    /// The attempt that just failed, from 1.
    pub attempt: u32,
    /// The delay chosen before this attempt (zero for the first).
    pub prev_delay: Duration,
    /// The failure.
    pub error: &'a StepError,
    /// Now.
    pub now: DateTime<Utc>,
    /// The run's deadline: no retry is scheduled past it.
    pub deadline: DateTime<Utc>,
    /// When the step's time window closes, if it has one.
    pub window_close: Option<DateTime<Utc>>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    Retry(Duration),
    /// Stop retrying this step.
    GiveUp(GiveUp),
}

/// Why the policy gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Retries are off.
    Disabled,
    /// The error's class is not retried (degraded, fatal).
    NotRetryable,
    /// The attempt limit was reached.
    Attempts,
    /// The server asked to wait longer than the Retry-After cap.
    RetryAfterTooLong,
    /// The retry would land past the run's deadline.
    Deadline,
    /// The retry would land after the step's window closes.
    Window,
}

impl GiveUp {
    /// The snake_case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::NotRetryable => "not_retryable",
            Self::Attempts => "attempts",
            Self::RetryAfterTooLong => "retry_after_too_long",
            Self::Deadline => "deadline",
            Self::Window => "window",
        }
    }
}

/// Decides whether and when to retry.
pub fn plan(input: &RetryInput<'_>, rng: &impl Rng) -> RetryDecision {
    let _ = (input, rng);
    unimplemented!("plan")
}
