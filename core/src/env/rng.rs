//! The seeded random source every random choice of the core comes from.

use std::sync::Mutex;

use rand::{Rng as _, SeedableRng, TryRngCore};
use rand_chacha::ChaCha8Rng;

/// A random source the core can draw from through a shared reference.
pub trait Rng {
    /// A uniformly random `u64`.
    fn next_u64(&self) -> u64;

    /// A uniformly random float in `[0, 1)`.
    fn unit(&self) -> f64 {
        // 53 random bits give every representable step of [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniformly random value in `[low, high]` (inclusive); `low` when `high <= low`.
    fn between(&self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = high - low;
        if span == u64::MAX {
            return self.next_u64();
        }
        low + self.next_u64() % (span + 1)
    }
}

/// ChaCha8 behind a mutex: cheap, portable and reproducible from a 64-bit seed.
#[derive(Debug)]
pub struct SeededRng {
    inner: Mutex<ChaCha8Rng>,
}

impl SeededRng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Self {
            inner: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// A generator seeded from the operating system (production only).
    pub fn from_os() -> Self {
        let seed = rand::rngs::OsRng.try_next_u64().unwrap_or(0x5eed);
        Self::from_seed(seed)
    }

    /// Draws a seed for a child generator, so subsystems get independent streams.
    pub fn fork(&self) -> Self {
        Self::from_seed(self.next_u64())
    }
}

impl Rng for SeededRng {
    fn next_u64(&self) -> u64 {
        let mut rng = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        rng.random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = SeededRng::from_seed(7);
        let b = SeededRng::from_seed(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let c = SeededRng::from_seed(8);
        assert_ne!(xs[0], c.next_u64());
    }

    #[test]
    fn between_stays_in_bounds() {
        let rng = SeededRng::from_seed(1);
        for _ in 0..1000 {
            let v = rng.between(10, 20);
            assert!((10..=20).contains(&v));
        }
        assert_eq!(rng.between(5, 5), 5);
        assert_eq!(rng.between(9, 3), 9);
        let u = rng.unit();
        assert!((0.0..1.0).contains(&u));
    }
}
