//! Backoff delays under each jitter mode.
//!
//! The formulas are those of AWS's "Exponential Backoff And Jitter": the exponential step
//! of retry `n` is `min(cap, base * 2^(n-1))`, and the jitter mode decides how much of it
//! is drawn at random. Jitter is what keeps clients that failed together (three cron jobs
//! hitting the same rate limit) from retrying together. Delays have millisecond
//! resolution: finer steps buy nothing against a remote rate limiter.

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
    ///
    /// `retry = 0` is treated as 1. No input overflows: the exponential step saturates
    /// at `cap`. No mode returns more than `cap`.
    pub fn delay(&self, retry: u32, prev: Duration, rng: &impl Rng) -> Duration {
        let base = millis(self.base);
        let cap = millis(self.cap);
        let exp = self.exponential_ms(retry);
        let ms = match self.jitter {
            Jitter::None => exp,
            Jitter::Equal => {
                // `exp - half` rather than `half` so an odd `exp` is still reachable.
                let half = exp / 2;
                half + rng.between(0, exp - half)
            }
            Jitter::Full => rng.between(0, exp),
            Jitter::Decorrelated => {
                let prev = if prev.is_zero() { base } else { millis(prev) };
                let high = base.max(prev.saturating_mul(3));
                cap.min(rng.between(base, high))
            }
        };
        Duration::from_millis(ms)
    }

    /// `min(cap, base * 2^(retry-1))` in milliseconds, saturating.
    fn exponential_ms(&self, retry: u32) -> u64 {
        let base = millis(self.base);
        let cap = millis(self.cap);
        let shift = retry.saturating_sub(1);
        let step = if base == 0 {
            0
        } else if shift >= 64 {
            u64::MAX
        } else {
            base.saturating_mul(1u64 << shift)
        };
        step.min(cap)
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::env::SeededRng;

    const S: Duration = Duration::from_secs(1);

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            jitter,
            base: S,
            cap: Duration::from_secs(60),
        }
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let rng = SeededRng::from_seed(1);
        let b = backoff(Jitter::None);
        let secs: Vec<u64> = (1..=9)
            .map(|n| b.delay(n, Duration::ZERO, &rng).as_secs())
            .collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // retry 0 is read as the first retry.
        assert_eq!(b.delay(0, Duration::ZERO, &rng), S);
    }

    #[test]
    fn huge_retry_numbers_saturate_at_the_cap() {
        let rng = SeededRng::from_seed(1);
        let b = Backoff {
            jitter: Jitter::None,
            base: Duration::from_secs(u64::MAX / 2),
            cap: Duration::MAX,
        };
        for n in [1, 2, 63, 64, 65, u32::MAX] {
            let d = b.delay(n, Duration::ZERO, &rng);
            assert!(d >= Duration::from_millis(1), "retry {n}");
        }
        assert_eq!(
            backoff(Jitter::None).delay(u32::MAX, Duration::ZERO, &rng),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn decorrelated_starts_from_base_and_grows_from_prev() {
        let rng = SeededRng::from_seed(3);
        let b = backoff(Jitter::Decorrelated);
        for _ in 0..200 {
            let first = b.delay(1, Duration::ZERO, &rng);
            assert!((S..=3 * S).contains(&first), "{first:?}");
            let next = b.delay(2, Duration::from_secs(10), &rng);
            assert!((S..=Duration::from_secs(30)).contains(&next), "{next:?}");
            let capped = b.delay(9, Duration::from_secs(50), &rng);
            assert!(capped <= Duration::from_secs(60), "{capped:?}");
        }
    }

    #[test]
    fn full_jitter_mean_is_half_the_step() {
        let rng = SeededRng::from_seed(11);
        let b = backoff(Jitter::Full);
        let n = 20_000u32;
        let total: u64 = (0..n)
            .map(|_| b.delay(4, Duration::ZERO, &rng).as_millis() as u64)
            .sum();
        let mean = total as f64 / f64::from(n);
        // exp = 8 s: the mean of uniform[0, 8000] ms is 4000 ms.
        assert!((mean - 4000.0).abs() < 80.0, "mean {mean}");
    }

    #[test]
    fn equal_jitter_keeps_half_and_spreads_the_rest() {
        let rng = SeededRng::from_seed(5);
        let b = backoff(Jitter::Equal);
        let delays: BTreeSet<Duration> =
            (0..200).map(|_| b.delay(3, Duration::ZERO, &rng)).collect();
        assert!(delays.iter().all(|d| (2 * S..=4 * S).contains(d)));
        assert!(delays.len() > 100, "only {} distinct", delays.len());
    }

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Equal),
            Just(Jitter::Full),
            Just(Jitter::Decorrelated),
        ]
    }

    proptest! {
        #[test]
        fn every_mode_stays_within_its_range(
            jitter in jitter(),
            seed in any::<u64>(),
            retry in 0u32..200,
            base_ms in 0u64..100_000,
            cap_ms in 0u64..10_000_000,
            prev_ms in 0u64..u64::MAX / 4,
        ) {
            let rng = SeededRng::from_seed(seed);
            let b = Backoff {
                jitter,
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(cap_ms),
            };
            let exp = b.exponential_ms(retry);
            let d = b.delay(retry, Duration::from_millis(prev_ms), &rng).as_millis() as u64;
            prop_assert!(d <= cap_ms);
            prop_assert!(exp <= cap_ms);
            match jitter {
                Jitter::None => prop_assert_eq!(d, exp),
                Jitter::Equal => prop_assert!(exp / 2 <= d && d <= exp),
                Jitter::Full => prop_assert!(d <= exp),
                Jitter::Decorrelated => prop_assert!(d >= base_ms.min(cap_ms)),
            }
        }
    }
}
