//! The fake wall clock: a time source plus an adjustable wall offset.
//!
//! Why a source and an offset: monotonic time (tokio's, paused in tests, simulated in
//! turmoil) and wall time are separate seams in the core. A machine that sleeps or an
//! NTP step moves the wall clock without moving monotonic time; the offset is where
//! such a jump goes, while the source keeps following the runtime exactly. Tests use
//! [`TokioTime`]; the simulator plugs in its own source (tokio `Instant`s do not
//! survive a turmoil host bounce, so it reads turmoil's logical time instead).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use steadfast_core::env::WallClock;

/// Where a [`FakeClock`] reads the undisturbed time of the world.
pub trait TimeSource: fmt::Debug + Send + Sync + 'static {
    /// Now, without any wall offset.
    fn now(&self) -> DateTime<Utc>;
}

/// Time that follows tokio's (possibly paused) clock from a fixed wall start.
#[derive(Debug, Clone)]
pub struct TokioTime {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioTime {
    /// Reads `start_wall` now (call inside a tokio runtime).
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        Self {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl TimeSource for TokioTime {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.start_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// The one fake wall clock: a [`TimeSource`] plus a wall offset.
///
/// Cheap to clone; clones share the source and the offset, so a test (or the
/// simulator's driver) that steps the clock moves it for the runner too.
#[derive(Clone)]
pub struct FakeClock {
    source: Arc<dyn TimeSource>,
    /// Nanoseconds added to the source's time; 0 unless a test moves the wall clock.
    offset_nanos: Arc<AtomicI64>,
}

impl fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeClock")
            .field("source", &self.source)
            .field("offset", &self.wall_offset())
            .finish()
    }
}

impl FakeClock {
    /// A clock over `source`, with no offset.
    pub fn new(source: impl TimeSource) -> Self {
        Self {
            source: Arc::new(source),
            offset_nanos: Arc::default(),
        }
    }

    /// A clock following tokio time from `start_wall` (call inside a tokio runtime).
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        Self::new(TokioTime::starting_at(start_wall))
    }

    /// The current wall offset.
    pub fn wall_offset(&self) -> chrono::Duration {
        chrono::Duration::nanoseconds(self.offset_nanos.load(Ordering::SeqCst))
    }

    /// Sets the wall offset (saturating at about ±292 years); monotonic time is untouched.
    pub fn set_wall_offset(&self, offset: chrono::Duration) {
        let nanos = offset
            .num_nanoseconds()
            .unwrap_or(if offset < chrono::Duration::zero() {
                i64::MIN
            } else {
                i64::MAX
            });
        self.offset_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Moves the wall clock by `delta` (negative: backwards), on top of earlier steps.
    pub fn step_wall(&self, delta: chrono::Duration) {
        self.set_wall_offset(self.wall_offset() + delta);
    }
}

impl WallClock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        let now = self.source.now();
        match self.offset_nanos.load(Ordering::SeqCst) {
            0 => now,
            nanos => now + chrono::Duration::nanoseconds(nanos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time() {
        let clock = FakeClock::starting_at(t0());
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), t0() + chrono::Duration::seconds(90));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_step_moves_the_wall_clock_only() {
        let clock = FakeClock::starting_at(t0());
        let mono = tokio::time::Instant::now();
        clock.step_wall(chrono::Duration::hours(1));
        clock.clone().step_wall(chrono::Duration::minutes(-10));
        assert_eq!(clock.now(), t0() + chrono::Duration::minutes(50));
        assert_eq!(
            tokio::time::Instant::now(),
            mono,
            "monotonic time did not move"
        );
        clock.set_wall_offset(chrono::Duration::zero());
        assert_eq!(clock.now(), t0());
    }
}
