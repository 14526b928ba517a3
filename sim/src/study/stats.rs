//! Mean and spread of one measure over seeds.
//!
//! A study runs every profile on several seeds; one seed's number is an anecdote. The
//! report shows the mean with the sample standard deviation and the min-max range, so a
//! reader can tell a real difference between profiles from seed noise.

/// Mean and spread of a sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// How many values.
    pub n: usize,
    /// Arithmetic mean (0 for an empty sample).
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator; 0 for fewer than two values).
    pub stddev: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values`; non-finite values are ignored so one broken run cannot
    /// poison a whole column.
    pub fn of(values: &[f64]) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = finite.len();
        if n == 0 {
            return Self {
                n: 0,
                mean: 0.0,
                stddev: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let mean = finite.iter().sum::<f64>() / n as f64;
        let stddev = if n < 2 {
            0.0
        } else {
            let ss: f64 = finite.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        };
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self {
            n,
            mean,
            stddev,
            min,
            max,
        }
    }

    /// Whether every value was the same (the spread carries no information).
    pub fn is_constant(&self) -> bool {
        self.min == self.max
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_sample() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.n, 8);
        assert!((s.mean - 5.0).abs() < 1e-12);
        // Sample (n - 1) standard deviation of this classic set: sqrt(32 / 7).
        assert!((s.stddev - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        assert!(!s.is_constant());
    }

    #[test]
    fn empty_single_and_non_finite() {
        assert_eq!(Summary::of(&[]).n, 0);
        let one = Summary::of(&[3.5]);
        assert_eq!(
            (one.mean, one.stddev, one.min, one.max),
            (3.5, 0.0, 3.5, 3.5)
        );
        assert!(one.is_constant());
        let s = Summary::of(&[1.0, f64::NAN, 3.0, f64::INFINITY]);
        assert_eq!(s.n, 2);
        assert!((s.mean - 2.0).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn mean_lies_within_range_and_spread_is_shift_invariant(
            values in proptest::collection::vec(-1e6f64..1e6, 1..40),
            shift in -1e3f64..1e3,
        ) {
            let s = Summary::of(&values);
            prop_assert!(s.min <= s.mean + 1e-6 && s.mean <= s.max + 1e-6);
            prop_assert!(s.stddev >= 0.0);
            let shifted: Vec<f64> = values.iter().map(|v| v + shift).collect();
            let t = Summary::of(&shifted);
            prop_assert!((t.stddev - s.stddev).abs() <= 1e-6 * (1.0 + s.stddev));
            prop_assert!((t.mean - s.mean - shift).abs() <= 1e-6 * (1.0 + s.mean.abs()));
        }
    }
}
