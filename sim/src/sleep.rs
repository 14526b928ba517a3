//! Sleep and clock-step faults of the runner's host: a Mac that sleeps, NTP that steps.
//!
//! One model, chosen because turmoil cannot freeze a host: the fault lands at a tick
//! boundary and takes no simulated time.
//!
//! - `sleep` (duration `d`): the world's wall clock jumps `d` ahead of turmoil's
//!   logical time, for the services as for the runner; turmoil's time, which drives
//!   every tokio timer of the runner host, does not move. Seen from the runner it is
//!   exactly a sleep: no task ran, monotonic timers saw no time pass, the wall clock
//!   (and every token's expiry, every slot) moved `d`. The world's services saw `d`
//!   pass with no call from the runner, which is what the runner's host asleep means.
//! - `clock_step` (by `±d`): only the runner host's wall clock moves (the world's does
//!   not), as NTP stepping a clock that had drifted, or a bad RTC after a power cut.
//!
//! A call in flight across a sleep loses its answer: the server side resets a
//! connection whose answer would go out after a sleep began ([`crate::net`]); the
//! request itself was handled, so a retry must carry the same idempotency key. A clock
//! step resets nothing (NTP does not touch sockets).

use std::time::Duration;

use crate::world::World;

/// What happens to the runner host's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockFault {
    /// The host sleeps this long.
    Sleep(Duration),
    /// The host's wall clock steps by this much (negative: back).
    Step(chrono::Duration),
}

impl ClockFault {
    /// Applies the fault to `world` now.
    pub fn apply(self, world: &World) {
        match self {
            Self::Sleep(d) => world.time().jump(d),
            Self::Step(by) => world.clock().step_wall(by),
        }
    }

    /// A line for the world's timeline.
    pub fn describe(self) -> String {
        match self {
            Self::Sleep(d) => format!("runner host asleep for {}s", d.as_secs()),
            Self::Step(by) => format!("runner wall clock stepped by {}s", by.num_seconds()),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use steadfast_core::env::WallClock;

    use super::*;

    #[test]
    fn a_sleep_moves_the_world_and_a_step_only_the_runner() {
        let epoch = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap();
        let world = World::new(1, epoch);
        ClockFault::Sleep(Duration::from_secs(7200)).apply(&world);
        assert_eq!(
            steadfast_testkit::TimeSource::now(world.time()),
            epoch + chrono::Duration::hours(2)
        );
        assert_eq!(world.clock().now(), epoch + chrono::Duration::hours(2));
        ClockFault::Step(chrono::Duration::hours(-1)).apply(&world);
        assert_eq!(
            steadfast_testkit::TimeSource::now(world.time()),
            epoch + chrono::Duration::hours(2)
        );
        assert_eq!(world.clock().now(), epoch + chrono::Duration::hours(1));
    }
}
