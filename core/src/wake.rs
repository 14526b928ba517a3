//! Wakes and clock steps: the wall clock's progress compared with monotonic time's.
//!
//! A Mac that sleeps stops its monotonic clock (as Linux's `CLOCK_MONOTONIC` does in
//! suspend) while the wall clock goes on; NTP steps the wall clock alone, either way; a
//! stopped process (`SIGSTOP`, a paused VM) sees both clocks advance while it ran
//! nothing. A [`Drift`] keeps one reading of both clocks and measures, at the next
//! reading, how far the wall clock moved beyond what the reader expected, and how much
//! of that monotonic time did not see. [`watch`] reads every [`TICK`] and logs one
//! `wake` event per jump; the job loops and the heartbeat monitor keep their own
//! readings, so none depends on which task the runtime wakes first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch as signal;
use tokio::time::Instant;

use crate::env::Env;
use crate::event::{Event, EventKind};

/// How often [`watch`] reads the clocks.
pub const TICK: Duration = Duration::from_secs(60);
/// A jump of the wall clock beyond what was expected larger than this (either way) is
/// a wake or a clock step; smaller ones are scheduling noise or NTP slewing.
pub const THRESHOLD: Duration = Duration::from_secs(60);

/// How the runner keeps its schedule in time: the one choice the profile makes about
/// sleeps and clock steps, made once when the runner is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// Slots are wall-clock instants: waits are sliced and re-read the wall clock, a
    /// task that finds itself late (a wake, a stop, a forward step) sends the slots it
    /// slept through to the catch-up policy, wakes are logged, run deadlines are
    /// monotonic budgets. The default.
    #[default]
    Wall,
    /// The naive habit: the time to the next slot is read from the wall clock once and
    /// waited on the monotonic clock, then the slot runs whatever the wall clock says;
    /// the next slot follows the last one run, due when that wall reading or the
    /// monotonic count from the last slot's start says so, whichever is sooner. A sleep
    /// makes it run the slots it slept through back to back (a burst); a backward step
    /// makes it run the hour the wall clock re-lives again; nothing logs the wake.
    Monotonic,
}

impl ClockMode {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wall => "wall",
            Self::Monotonic => "monotonic",
        }
    }
}

/// One reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Drift {
    mono: Instant,
    wall: DateTime<Utc>,
}

/// What changed between two readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    /// Wall-clock progress (negative: the clock was stepped back).
    pub wall: chrono::Duration,
    /// Monotonic progress.
    pub mono: Duration,
    /// What the reader expected to pass (the time it meant to wait).
    pub expected: Duration,
}

impl Jump {
    /// How far the wall clock moved beyond what an awake, undisturbed reader would
    /// have seen: a sleep's, stop's or step's length (negative for a backward step).
    pub fn beyond(&self) -> chrono::Duration {
        self.wall - to_chrono(self.expected)
    }

    /// The part of the wall clock's progress monotonic time did not see: a sleep or a
    /// clock step (zero for a stopped process, whose monotonic clock ran on).
    pub fn unseen(&self) -> chrono::Duration {
        self.wall - to_chrono(self.mono)
    }

    /// Whether this is a wake or a clock step rather than noise.
    pub fn is_wake(&self) -> bool {
        self.beyond().abs() > to_chrono(THRESHOLD)
    }

    /// The wake event for this jump.
    pub fn event(&self) -> Event {
        let beyond = self.beyond();
        let what = if beyond < chrono::Duration::zero() {
            "the wall clock was stepped back"
        } else if self.unseen() > to_chrono(THRESHOLD) {
            "the machine slept or the wall clock was stepped forward"
        } else {
            "the process was stopped (monotonic time ran on)"
        };
        Event::new(EventKind::Wake).jump(beyond).detail(format!(
            "{what}: wall clock moved {}s in {}s of monotonic time",
            self.wall.num_seconds(),
            self.mono.as_secs()
        ))
    }
}

impl Drift {
    /// A reading taken now (`wall` is the wall clock's now).
    pub fn start(wall: DateTime<Utc>) -> Self {
        Self {
            mono: Instant::now(),
            wall,
        }
    }

    /// Compares now with the last reading, expecting `expected` to have passed, and
    /// makes now the last reading.
    pub fn observe(&mut self, wall: DateTime<Utc>, expected: Duration) -> Jump {
        let mono = Instant::now();
        let jump = Jump {
            wall: wall - self.wall,
            mono: mono - self.mono,
            expected,
        };
        *self = Self { mono, wall };
        jump
    }
}

/// Reads the clocks every [`TICK`] until `halt`, logging one `wake` event per jump.
pub async fn watch<E: Env>(env: E, mut halt: signal::Receiver<bool>) {
    let mut drift = Drift::start(env.now());
    loop {
        tokio::select! {
            biased;
            changed = halt.changed() => {
                if changed.is_err() || *halt.borrow() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep(TICK) => {}
        }
        let jump = drift.observe(env.now(), TICK);
        if jump.is_wake() {
            env.emit(jump.event());
        }
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_a_stop_and_a_backward_step_are_told_apart() {
        let mut d = Drift::start(t0());
        // Asleep: monotonic time did not move, the wall clock moved two hours.
        let slept = d.observe(t0() + chrono::Duration::hours(2), Duration::ZERO);
        assert!(slept.is_wake());
        assert_eq!(slept.unseen(), chrono::Duration::hours(2));
        // Awake and on time: noise, not a wake.
        tokio::time::sleep(TICK).await;
        let wall = t0() + chrono::Duration::hours(2) + chrono::Duration::seconds(60);
        assert!(!d.observe(wall, TICK).is_wake());
        // Stopped: both clocks moved ten minutes during a one-minute wait.
        tokio::time::sleep(Duration::from_secs(600)).await;
        let stopped = d.observe(wall + chrono::Duration::seconds(600), TICK);
        assert!(stopped.is_wake());
        assert_eq!(stopped.unseen(), chrono::Duration::zero());
        assert_eq!(stopped.beyond(), chrono::Duration::seconds(540));
        // Stepped back an hour.
        let back = d.observe(wall - chrono::Duration::minutes(50), Duration::ZERO);
        assert!(back.is_wake());
        assert!(back.beyond() < chrono::Duration::zero());
    }
}
