//! Pattern 1 as a runner holds it: the retry style and the budgets, chosen once when the
//! runner is built, so a run asks one object and never checks which patterns are on.

use chrono::{DateTime, Utc};

use super::{GiveUp, RetryBudgets, RetryDecision, RetryInput, RetryStyle, plan};
use crate::env::Rng;

/// Decides retries for every job of a runner.
#[derive(Debug)]
pub struct Retrier {
    style: RetryStyle,
    /// `None` when the budget pattern is off: every retry the plan wants is made.
    budgets: Option<RetryBudgets>,
}

impl Retrier {
    /// Retries in `style`, bounded by `budgets` when there are any.
    pub fn new(style: RetryStyle, budgets: Option<RetryBudgets>) -> Self {
        Self { style, budgets }
    }

    /// Records a first attempt (a call) to `service`.
    pub fn record_call(&self, service: &str, now: DateTime<Utc>) {
        if let Some(b) = &self.budgets {
            b.record_call(service, now);
        }
    }

    /// What to do after the failed attempt `input` describes; `service` is the service
    /// it called (`None` for a command step, which has no budget).
    pub fn decide(
        &self,
        input: &RetryInput<'_>,
        service: Option<&str>,
        rng: &impl Rng,
    ) -> RetryDecision {
        let decision = plan(self.style, input, rng);
        let spent = |b: &RetryBudgets| service.is_some_and(|s| !b.try_retry(s, input.now));
        match (&decision, &self.budgets) {
            (RetryDecision::Retry(_), Some(b)) if spent(b) => RetryDecision::GiveUp(GiveUp::Budget),
            _ => decision,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::config::{Jitter, RetryMode, RetryPolicy};
    use crate::env::SeededRng;
    use crate::taxonomy::{FailureKind, StepError};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 3, 0, 0).unwrap()
    }

    /// How many of `n` failed calls to one service get a retry.
    fn retries_granted(retrier: &Retrier, n: u32) -> u32 {
        let policy = RetryPolicy::default();
        let err = StepError::new(FailureKind::RateLimited, "429");
        let rng = SeededRng::from_seed(1);
        let input = RetryInput {
            policy: &policy,
            attempt: 1,
            prev_delay: Duration::ZERO,
            error: &err,
            now: t0(),
            deadline: t0() + chrono::Duration::hours(1),
            window_close: None,
        };
        (0..n)
            .filter(|_| {
                retrier.record_call("api", t0());
                matches!(
                    retrier.decide(&input, Some("api"), &rng),
                    RetryDecision::Retry(_)
                )
            })
            .count() as u32
    }

    #[test]
    fn a_budget_bounds_retries_and_its_absence_does_not() {
        let style = RetryStyle {
            mode: RetryMode::Backoff,
            jitter: Jitter::None,
        };
        let budgeted = Retrier::new(
            style,
            Some(RetryBudgets::new(0.2, 10, Duration::from_secs(60))),
        );
        assert_eq!(retries_granted(&budgeted, 1000), 200 + 10);
        let unbounded = Retrier::new(style, None);
        assert_eq!(retries_granted(&unbounded, 1000), 1000);
    }

    #[test]
    fn a_command_step_has_no_budget_to_spend() {
        let retrier = Retrier::new(
            RetryStyle::BACKOFF,
            Some(RetryBudgets::new(0.0, 0, Duration::from_secs(60))),
        );
        let policy = RetryPolicy::default();
        let err = StepError::new(FailureKind::ServerError(503), "503");
        let input = RetryInput {
            policy: &policy,
            attempt: 1,
            prev_delay: Duration::ZERO,
            error: &err,
            now: t0(),
            deadline: t0() + chrono::Duration::hours(1),
            window_close: None,
        };
        let rng = SeededRng::from_seed(1);
        assert!(matches!(
            retrier.decide(&input, None, &rng),
            RetryDecision::Retry(_)
        ));
        assert_eq!(
            retrier.decide(&input, Some("api"), &rng),
            RetryDecision::GiveUp(GiveUp::Budget)
        );
    }
}
