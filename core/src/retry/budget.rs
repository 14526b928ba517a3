//! A retry budget per service: retries may be at most a share of calls.
//!
//! Per-call retry limits bound one call's retries, not a fleet's: when a service is
//! struggling, every job retrying five times multiplies its load five-fold. Like
//! Finagle's `RetryBudget`, each service has a token bucket shared by all jobs:
//!
//! - every call (first attempt) deposits `ratio` tokens;
//! - every retry withdraws one token;
//! - in addition, `min_retries` retries are always allowed per `window` (a reserve that
//!   refills when a new window starts), so a rarely-called service can still retry.
//!
//! The balance is bounded: at each window boundary it is cut to what the calls of the
//! window just ended deposited (`ratio * calls_previous_window`). Deposits therefore
//! expire after at most two windows, and a long quiet period banks nothing. Over any
//! stretch of time, retries are at most `ratio * calls + min_retries * windows`.
//!
//! Windows are measured in wall time from `now`. A wall clock that steps backwards
//! re-anchors the current window without refilling the reserve, so a clock jump cannot
//! mint retries.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// One retry, in micro-tokens (integers keep `0.2 * 5 == 1` exact).
const TOKEN: u64 = 1_000_000;

/// The largest ratio honoured; more would be a retry storm by configuration.
const MAX_RATIO: f64 = 1_000.0;

/// The budgets of all services, shared by all jobs.
#[derive(Debug)]
pub struct RetryBudgets {
    /// Micro-tokens deposited per call.
    deposit: u64,
    /// Reserve retries per window.
    min_retries: u32,
    /// The window, in milliseconds (at least one second).
    window_ms: i64,
    /// Per service; the names come from the validated configuration, so this is bounded.
    buckets: Mutex<BTreeMap<String, Bucket>>,
}

/// The bucket of one service.
#[derive(Debug, Clone)]
struct Bucket {
    /// Start of the current window.
    window_start: DateTime<Utc>,
    /// Calls recorded in the current window.
    calls: u64,
    /// Calls recorded in the previous window (bounds the balance).
    calls_previous: u64,
    /// Micro-tokens available.
    balance: u64,
    /// Reserve retries left in this window.
    reserve: u32,
}

impl RetryBudgets {
    /// Budgets allowing `ratio` retries per call plus `min_retries` per `window`.
    /// (Without the pattern there are no budgets at all: see [`super::Retrier`].)
    ///
    /// A negative or NaN ratio is read as zero, and ratios above 1000 are capped;
    /// a window shorter than one second is read as one second.
    pub fn new(ratio: f64, min_retries: u32, window: Duration) -> Self {
        // `NaN > 0.0` is false, so NaN lands on zero too.
        let ratio = if ratio > 0.0 {
            ratio.min(MAX_RATIO)
        } else {
            0.0
        };
        let window_ms = i64::try_from(window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1_000);
        Self {
            // Bounded by MAX_RATIO * TOKEN, well inside u64.
            deposit: (ratio * TOKEN as f64).round() as u64,
            min_retries,
            window_ms,
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records a first attempt (a call) to `service`.
    pub fn record_call(&self, service: &str, now: DateTime<Utc>) {
        self.with_bucket(service, now, |b| {
            b.calls = b.calls.saturating_add(1);
            b.balance = b.balance.saturating_add(self.deposit);
        });
    }

    /// Takes one retry from `service`'s budget; `false` when it is spent.
    pub fn try_retry(&self, service: &str, now: DateTime<Utc>) -> bool {
        self.with_bucket(service, now, |b| {
            if b.balance >= TOKEN {
                b.balance -= TOKEN;
                true
            } else if b.reserve > 0 {
                b.reserve -= 1;
                true
            } else {
                false
            }
        })
    }

    /// Runs `f` on `service`'s bucket after rolling it forward to `now`.
    fn with_bucket<T>(
        &self,
        service: &str,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut Bucket) -> T,
    ) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(service.to_string())
            .or_insert_with(|| Bucket {
                window_start: now,
                calls: 0,
                calls_previous: 0,
                balance: 0,
                reserve: self.min_retries,
            });
        self.roll(bucket, now);
        f(bucket)
    }

    /// Starts a new window when the current one has ended.
    fn roll(&self, b: &mut Bucket, now: DateTime<Utc>) {
        let elapsed = (now - b.window_start).num_milliseconds();
        if elapsed < 0 {
            // The wall clock stepped back: re-anchor, but do not refill the reserve.
            b.window_start = now;
            return;
        }
        if elapsed < self.window_ms {
            return;
        }
        let windows = elapsed / self.window_ms;
        // Only the window just ended counts; an idle gap in between leaves nothing.
        b.calls_previous = if windows == 1 { b.calls } else { 0 };
        b.calls = 0;
        b.balance = b.balance.min(b.calls_previous.saturating_mul(self.deposit));
        b.reserve = self.min_retries;
        b.window_start += chrono::Duration::milliseconds(windows.saturating_mul(self.window_ms));
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn retries_stay_a_share_of_calls_under_a_storm() {
        // 1000 failing calls in one window, each wanting 4 retries (the naive fleet
        // would make 4000 retries).
        let budgets = RetryBudgets::new(0.2, 10, WINDOW);
        let mut granted = 0u32;
        for _ in 0..1000 {
            budgets.record_call("api", t0());
            for _ in 0..4 {
                if budgets.try_retry("api", t0()) {
                    granted += 1;
                }
            }
        }
        assert!(granted <= 200 + 10, "granted {granted}");
        assert!(
            granted >= 200,
            "the budget must not be stingier than its ratio: {granted}"
        );
    }

    #[test]
    fn the_reserve_allows_min_retries_per_window_without_calls() {
        let budgets = RetryBudgets::new(0.2, 3, WINDOW);
        let first = (0..10).filter(|_| budgets.try_retry("api", t0())).count();
        assert_eq!(first, 3);
        let later = t0() + secs(59);
        assert!(!budgets.try_retry("api", later));
        let next = t0() + secs(60);
        let second = (0..10).filter(|_| budgets.try_retry("api", next)).count();
        assert_eq!(second, 3);
    }

    #[test]
    fn services_have_separate_buckets() {
        let budgets = RetryBudgets::new(0.0, 1, WINDOW);
        assert!(budgets.try_retry("a", t0()));
        assert!(!budgets.try_retry("a", t0()));
        assert!(budgets.try_retry("b", t0()));
    }

    #[test]
    fn a_quiet_period_banks_nothing() {
        let budgets = RetryBudgets::new(1.0, 0, WINDOW);
        for _ in 0..100 {
            budgets.record_call("api", t0());
        }
        // A day later the 100 deposits have expired.
        let later = t0() + secs(86_400);
        assert!(!budgets.try_retry("api", later));
    }

    #[test]
    fn deposits_carry_into_the_next_window_only() {
        let budgets = RetryBudgets::new(0.5, 0, WINDOW);
        for _ in 0..10 {
            budgets.record_call("api", t0());
        }
        // Next window: the 5 tokens from the previous window are still there.
        let next = t0() + secs(61);
        assert_eq!(
            (0..10).filter(|_| budgets.try_retry("api", next)).count(),
            5
        );
        // Refill in window 2, then skip to window 3: only window 2's calls count.
        for _ in 0..4 {
            budgets.record_call("api", next);
        }
        let third = t0() + secs(121);
        assert_eq!(
            (0..10).filter(|_| budgets.try_retry("api", third)).count(),
            2
        );
    }

    #[test]
    fn a_clock_stepping_back_does_not_refill_the_reserve() {
        let budgets = RetryBudgets::new(0.0, 2, WINDOW);
        assert_eq!((0..5).filter(|_| budgets.try_retry("api", t0())).count(), 2);
        let back = t0() - secs(3_600);
        assert!(!budgets.try_retry("api", back));
        assert!(!budgets.try_retry("api", back + secs(59)));
        assert!(budgets.try_retry("api", back + secs(60)));
    }

    #[test]
    fn exact_ratio_arithmetic() {
        // Five calls at 0.2 buy exactly one retry, not 0.999...
        let budgets = RetryBudgets::new(0.2, 0, WINDOW);
        for _ in 0..5 {
            budgets.record_call("api", t0());
        }
        assert!(budgets.try_retry("api", t0()));
        assert!(!budgets.try_retry("api", t0()));
    }

    #[test]
    fn odd_ratios_are_tamed() {
        for ratio in [f64::NAN, -1.0, f64::NEG_INFINITY] {
            let budgets = RetryBudgets::new(ratio, 0, WINDOW);
            budgets.record_call("api", t0());
            assert!(!budgets.try_retry("api", t0()), "{ratio}");
        }
        let budgets = RetryBudgets::new(f64::INFINITY, 0, WINDOW);
        budgets.record_call("api", t0());
        assert_eq!(
            (0..2000).filter(|_| budgets.try_retry("api", t0())).count(),
            1000
        );
    }

    proptest! {
        /// Whatever the traffic, retries <= ratio * calls + min_retries * windows.
        #[test]
        fn retries_are_bounded_by_calls_and_reserve(
            ops in prop::collection::vec((any::<bool>(), 0i64..40), 1..400),
            ratio in 0.0f64..1.0,
            min_retries in 0u32..5,
        ) {
            let budgets = RetryBudgets::new(ratio, min_retries, WINDOW);
            let mut now = t0();
            let (mut calls, mut retries) = (0u64, 0u64);
            for (is_call, step) in ops {
                now += secs(step);
                if is_call {
                    budgets.record_call("api", now);
                    calls += 1;
                } else if budgets.try_retry("api", now) {
                    retries += 1;
                }
            }
            let windows = (now - t0()).num_seconds() as u64 / 60 + 1;
            let bound = (ratio * calls as f64).ceil() as u64 + u64::from(min_retries) * windows;
            prop_assert!(retries <= bound, "retries {} > bound {}", retries, bound);
        }
    }
}
