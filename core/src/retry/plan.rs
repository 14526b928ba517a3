//! The retry decision after a failed attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Jitter, RetryMode, RetryPolicy};
use crate::env::Rng;
use crate::retry::Backoff;
use crate::taxonomy::{ErrorClass, StepError};

/// How retries are planned: the pattern as a profile chooses it, once, at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryStyle {
    /// Off, immediate or backoff.
    pub mode: RetryMode,
    /// Jitter of the backoff.
    pub jitter: Jitter,
}

impl RetryStyle {
    /// Exponential backoff with full jitter (production).
    pub const BACKOFF: Self = Self {
        mode: RetryMode::Backoff,
        jitter: Jitter::Full,
    };
}

/// The facts of one failed attempt the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct RetryInput<'a> {
    /// The policy (attempts, base, cap, Retry-After cap).
    pub policy: &'a RetryPolicy,
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
    /// The service's retry budget is spent.
    Budget,
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
            Self::Budget => "budget",
        }
    }
}

/// Decides whether and when to retry.
///
/// In order: retries off; the error class (only critical and recoverable errors are
/// retried); the attempt limit. Immediate mode then retries a recoverable error at once
/// and honours nothing else (it is the naive habit, kept for comparison); it does not
/// retry a critical error (a 401): the naive code refreshes the token and leaves the
/// work to the next cycle. Backoff mode draws the jittered
/// delay, except that a critical error (a 401) is retried at once on the first retry,
/// because the caller has just refreshed the token; a `Retry-After` longer than the cap
/// gives up, a shorter one lengthens the delay; finally a retry that would land past the
/// run's deadline, or at or after the step's window closes, gives up.
pub fn plan(style: RetryStyle, input: &RetryInput<'_>, rng: &impl Rng) -> RetryDecision {
    let policy = input.policy;
    if style.mode == RetryMode::Off {
        return RetryDecision::GiveUp(GiveUp::Disabled);
    }
    match input.error.class {
        ErrorClass::Critical | ErrorClass::Recoverable => {}
        ErrorClass::Degraded | ErrorClass::Fatal => {
            return RetryDecision::GiveUp(GiveUp::NotRetryable);
        }
    }
    if input.attempt >= policy.max_attempts {
        return RetryDecision::GiveUp(GiveUp::Attempts);
    }
    if style.mode == RetryMode::Immediate {
        if input.error.class == ErrorClass::Critical {
            return RetryDecision::GiveUp(GiveUp::NotRetryable);
        }
        return RetryDecision::Retry(Duration::ZERO);
    }

    let mut delay = if input.error.class == ErrorClass::Critical && input.attempt <= 1 {
        Duration::ZERO
    } else {
        let backoff = Backoff {
            jitter: style.jitter,
            base: policy.base,
            cap: policy.cap,
        };
        backoff.delay(input.attempt, input.prev_delay, rng)
    };
    if let Some(wait) = input.error.retry_after {
        if wait > policy.retry_after_cap {
            return RetryDecision::GiveUp(GiveUp::RetryAfterTooLong);
        }
        delay = delay.max(wait);
    }

    // A delay too large for the calendar lands past any deadline.
    let Some(at) = chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| input.now.checked_add_signed(d))
    else {
        return RetryDecision::GiveUp(GiveUp::Deadline);
    };
    if at > input.deadline {
        return RetryDecision::GiveUp(GiveUp::Deadline);
    }
    if input.window_close.is_some_and(|close| at >= close) {
        return RetryDecision::GiveUp(GiveUp::Window);
    }
    RetryDecision::Retry(delay)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::env::SeededRng;
    use crate::taxonomy::FailureKind;

    const S: Duration = Duration::from_secs(1);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 3, 0, 0).unwrap()
    }

    fn rate_limited() -> StepError {
        StepError::new(FailureKind::RateLimited, "rate limited")
    }

    /// A backoff input with no jitter, far from any deadline.
    fn input<'a>(policy: &'a RetryPolicy, error: &'a StepError, attempt: u32) -> RetryInput<'a> {
        RetryInput {
            policy,
            attempt,
            prev_delay: Duration::ZERO,
            error,
            now: t0(),
            deadline: t0() + chrono::Duration::hours(1),
            window_close: None,
        }
    }

    /// Backoff without jitter, so delays are exact.
    const PLAIN: RetryStyle = RetryStyle {
        mode: RetryMode::Backoff,
        jitter: Jitter::None,
    };

    fn decide(input: &RetryInput<'_>) -> RetryDecision {
        decide_as(PLAIN, input)
    }

    fn decide_as(style: RetryStyle, input: &RetryInput<'_>) -> RetryDecision {
        plan(style, input, &SeededRng::from_seed(9))
    }

    #[test]
    fn off_never_retries() {
        let policy = RetryPolicy::default();
        let err = rate_limited();
        let off = RetryStyle {
            mode: RetryMode::Off,
            ..PLAIN
        };
        assert_eq!(
            decide_as(off, &input(&policy, &err, 1)),
            RetryDecision::GiveUp(GiveUp::Disabled)
        );
    }

    #[test]
    fn only_critical_and_recoverable_retry() {
        let policy = RetryPolicy::default();
        for kind in [
            FailureKind::ServiceDown,
            FailureKind::BreakerOpen,
            FailureKind::DiskFull,
        ] {
            let err = StepError::new(kind, "x");
            assert_eq!(
                decide(&input(&policy, &err, 1)),
                RetryDecision::GiveUp(GiveUp::NotRetryable),
                "{kind:?}"
            );
        }
        // The class, not the kind, decides: a policy may demote a 503 to degraded.
        let demoted =
            StepError::new(FailureKind::ServerError(503), "x").with_class(ErrorClass::Degraded);
        assert_eq!(
            decide(&input(&policy, &demoted, 1)),
            RetryDecision::GiveUp(GiveUp::NotRetryable)
        );
        let err = StepError::new(FailureKind::Timeout, "x");
        assert_eq!(decide(&input(&policy, &err, 1)), RetryDecision::Retry(S));
    }

    #[test]
    fn the_attempt_limit_counts_the_first_attempt() {
        let policy = RetryPolicy::default();
        let err = rate_limited();
        assert_eq!(
            decide(&input(&policy, &err, 4)),
            RetryDecision::Retry(8 * S)
        );
        assert_eq!(
            decide(&input(&policy, &err, 5)),
            RetryDecision::GiveUp(GiveUp::Attempts)
        );
    }

    #[test]
    fn immediate_retries_at_once_and_honours_nothing() {
        let policy = RetryPolicy::default();
        let err = rate_limited().with_retry_after(Some(Duration::from_secs(3600)));
        let mut i = input(&policy, &err, 3);
        i.deadline = t0();
        i.window_close = Some(t0());
        let immediate = RetryStyle {
            mode: RetryMode::Immediate,
            ..PLAIN
        };
        assert_eq!(
            decide_as(immediate, &i),
            RetryDecision::Retry(Duration::ZERO)
        );
    }

    #[test]
    fn immediate_leaves_a_401_to_the_next_cycle() {
        let policy = RetryPolicy::default();
        let err = StepError::new(FailureKind::Unauthorized, "401");
        let immediate = RetryStyle {
            mode: RetryMode::Immediate,
            ..PLAIN
        };
        assert_eq!(
            decide_as(immediate, &input(&policy, &err, 1)),
            RetryDecision::GiveUp(GiveUp::NotRetryable)
        );
        assert_eq!(
            decide(&input(&policy, &err, 1)),
            RetryDecision::Retry(Duration::ZERO),
            "backoff retries a 401 after the refresh"
        );
    }

    #[test]
    fn critical_retries_at_once_after_the_refresh_then_backs_off() {
        let policy = RetryPolicy::default();
        let err = StepError::new(FailureKind::Unauthorized, "401");
        assert_eq!(
            decide(&input(&policy, &err, 1)),
            RetryDecision::Retry(Duration::ZERO)
        );
        assert_eq!(
            decide(&input(&policy, &err, 2)),
            RetryDecision::Retry(2 * S)
        );
    }

    #[test]
    fn retry_after_lengthens_the_delay_but_never_shortens_it() {
        let policy = RetryPolicy::default();
        let err = rate_limited().with_retry_after(Some(Duration::from_secs(30)));
        assert_eq!(
            decide(&input(&policy, &err, 1)),
            RetryDecision::Retry(Duration::from_secs(30))
        );
        let short = rate_limited().with_retry_after(Some(S));
        assert_eq!(
            decide(&input(&policy, &short, 4)),
            RetryDecision::Retry(8 * S)
        );
    }

    #[test]
    fn retry_after_over_the_cap_gives_up() {
        let policy = RetryPolicy::default();
        let at_cap = rate_limited().with_retry_after(Some(policy.retry_after_cap));
        let mut i = input(&policy, &at_cap, 1);
        i.deadline = t0() + chrono::Duration::days(1);
        assert_eq!(decide(&i), RetryDecision::Retry(policy.retry_after_cap));
        let over = rate_limited().with_retry_after(Some(policy.retry_after_cap + S));
        i.error = &over;
        assert_eq!(decide(&i), RetryDecision::GiveUp(GiveUp::RetryAfterTooLong));
    }

    #[test]
    fn no_retry_past_the_deadline() {
        let policy = RetryPolicy::default();
        let err = rate_limited();
        let mut i = input(&policy, &err, 3);
        // The delay is 4 s: landing exactly on the deadline is allowed, after is not.
        i.deadline = t0() + chrono::Duration::seconds(4);
        assert_eq!(decide(&i), RetryDecision::Retry(4 * S));
        i.deadline = t0() + chrono::Duration::seconds(3);
        assert_eq!(decide(&i), RetryDecision::GiveUp(GiveUp::Deadline));
        // A Retry-After within the cap still cannot push past the deadline.
        let wait = rate_limited().with_retry_after(Some(Duration::from_secs(600)));
        let mut j = input(&policy, &wait, 1);
        j.deadline = t0() + chrono::Duration::seconds(599);
        assert_eq!(decide(&j), RetryDecision::GiveUp(GiveUp::Deadline));
    }

    #[test]
    fn no_retry_at_or_after_the_window_closes() {
        let policy = RetryPolicy::default();
        let err = rate_limited();
        let mut i = input(&policy, &err, 3);
        i.window_close = Some(t0() + chrono::Duration::seconds(5));
        assert_eq!(decide(&i), RetryDecision::Retry(4 * S));
        i.window_close = Some(t0() + chrono::Duration::seconds(4));
        assert_eq!(decide(&i), RetryDecision::GiveUp(GiveUp::Window));
    }

    #[test]
    fn an_enormous_delay_is_past_the_deadline_not_a_panic() {
        let policy = RetryPolicy {
            base: Duration::MAX,
            cap: Duration::MAX,
            ..RetryPolicy::default()
        };
        let err = rate_limited();
        assert_eq!(
            decide(&input(&policy, &err, 2)),
            RetryDecision::GiveUp(GiveUp::Deadline)
        );
    }

    #[test]
    fn give_up_names_are_snake_case() {
        assert_eq!(GiveUp::RetryAfterTooLong.as_str(), "retry_after_too_long");
        assert_eq!(GiveUp::NotRetryable.as_str(), "not_retryable");
    }

    /// The delays ten clients that failed at the same instant pick for their retry.
    fn herd(mode: RetryMode, jitter: Jitter) -> Vec<Duration> {
        let policy = RetryPolicy::default();
        let err = rate_limited();
        // One runner, one seeded generator shared by all its jobs.
        let rng = SeededRng::from_seed(42);
        (0..10)
            .map(|_| {
                let i = input(&policy, &err, 3);
                match plan(RetryStyle { mode, jitter }, &i, &rng) {
                    RetryDecision::Retry(d) => d,
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn naive_clients_retry_in_the_same_instant_jittered_ones_spread() {
        let distinct = |ds: Vec<Duration>| ds.into_iter().collect::<BTreeSet<_>>().len();
        // The naive habits: all ten hit the rate limiter again together.
        assert_eq!(distinct(herd(RetryMode::Immediate, Jitter::None)), 1);
        assert_eq!(distinct(herd(RetryMode::Backoff, Jitter::None)), 1);
        // Full jitter spreads them over [0, 4 s].
        let spread = herd(RetryMode::Backoff, Jitter::Full);
        assert!(distinct(spread.clone()) >= 8, "{spread:?}");
        assert!(spread.iter().all(|d| *d <= 4 * S));
        assert!(distinct(herd(RetryMode::Backoff, Jitter::Equal)) >= 8);
        assert!(distinct(herd(RetryMode::Backoff, Jitter::Decorrelated)) >= 8);
    }

    #[test]
    fn full_jitter_mean_is_half_the_exponential_step() {
        let policy = RetryPolicy::default();
        let err = rate_limited();
        let rng = SeededRng::from_seed(7);
        let n = 10_000u32;
        let i = input(&policy, &err, 4);
        let total: f64 = (0..n)
            .map(|_| match plan(RetryStyle::BACKOFF, &i, &rng) {
                RetryDecision::Retry(d) => d.as_secs_f64(),
                other => panic!("unexpected {other:?}"),
            })
            .sum();
        let mean = total / f64::from(n);
        // exp = 8 s, so the mean is 4 s; 10k samples put it well within 0.15 s.
        assert!((mean - 4.0).abs() < 0.15, "mean {mean}");
    }

    proptest! {
        /// Whatever the input, a retry never lands past the deadline or the window,
        /// and never waits less than the server asked.
        #[test]
        fn retries_respect_deadline_window_and_retry_after(
            seed in any::<u64>(),
            attempt in 1u32..10,
            deadline_s in 0i64..200,
            window_s in prop::option::of(0i64..200),
            retry_after_s in prop::option::of(0u64..2000),
            jitter in prop_oneof![
                Just(Jitter::None), Just(Jitter::Equal), Just(Jitter::Full), Just(Jitter::Decorrelated)
            ],
        ) {
            let policy = RetryPolicy::default();
            let err = rate_limited().with_retry_after(retry_after_s.map(Duration::from_secs));
            let mut i = input(&policy, &err, attempt);
            i.deadline = t0() + chrono::Duration::seconds(deadline_s);
            i.window_close = window_s.map(|s| t0() + chrono::Duration::seconds(s));
            let style = RetryStyle { jitter, ..PLAIN };
            if let RetryDecision::Retry(d) = plan(style, &i, &SeededRng::from_seed(seed)) {
                let at = t0() + chrono::Duration::from_std(d).unwrap();
                prop_assert!(at <= i.deadline);
                prop_assert!(i.window_close.is_none_or(|c| at < c));
                prop_assert!(retry_after_s.is_none_or(|w| d >= Duration::from_secs(w)));
                prop_assert!(attempt < policy.max_attempts);
            }
        }
    }
}
