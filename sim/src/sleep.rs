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
//!
//! The world also keeps [`HostAway`]: the spans of world time in which its runner host
//! could run nothing through no fault of the runner (asleep, or crashed by the world
//! until a restart it scheduled). The judge reads it to tell a slot the host was away
//! for from a slot the runner lost ([`crate::judge::outputs`]). It keeps the clock
//! steps it applied too (when, by how much): the judge maps each request's world time
//! to the host's wall clock through them and judges a stepped host on its own
//! timeline ([`crate::judge::host`]). Reading them asks nothing of the runner: the world
//! moved the clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::world::World;

/// At most this many away spans are kept (a crash every 10 minutes for two months);
/// later ones are counted in [`HostAway::dropped`] and the judge reports the record
/// incomplete.
pub const MAX_AWAY_SPANS: usize = 10_000;

/// One span of world time the runner host was away: `[from, until)`.
pub type AwaySpan = (DateTime<Utc>, DateTime<Utc>);

/// One step of the runner host's wall clock: from world time `.0` on, the host's wall
/// clock reads `.1` more than before (negative: back).
pub type ClockStep = (DateTime<Utc>, chrono::Duration);

#[derive(Debug, Default)]
struct AwayInner {
    spans: Vec<AwaySpan>,
    /// When the runner process started (every boot, sorted).
    boots: Vec<DateTime<Utc>>,
    /// Since when the host has been down, while it is.
    open: Option<DateTime<Utc>>,
    /// The host wall clock's steps, in the order applied.
    steps: Vec<ClockStep>,
    dropped: u64,
}

/// `spans` sorted, overlapping or touching ones merged into one.
pub fn merge_spans(mut spans: Vec<AwaySpan>) -> Vec<AwaySpan> {
    spans.sort();
    let mut out: Vec<AwaySpan> = Vec::with_capacity(spans.len());
    for (from, until) in spans {
        match out.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(until),
            _ => out.push((from, until)),
        }
    }
    out
}

/// When the runner host was away by the world's doing: asleep, or crashed by a fault
/// that restarts it (a power cut, a `kill -9` and restart). Not the runner's own deaths
/// (a silent death, an OOM kill, an exit): how long those last depends on its
/// supervision and alerts, which is what the judge measures. Cheap to clone; clones
/// share the record.
#[derive(Debug, Clone, Default)]
pub struct HostAway {
    inner: Arc<Mutex<AwayInner>>,
}

impl HostAway {
    fn lock(&self) -> std::sync::MutexGuard<'_, AwayInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host went down at `at` (world time); a span already open stays as it is.
    pub fn down(&self, at: DateTime<Utc>) {
        let mut inner = self.lock();
        if inner.open.is_none() {
            inner.open = Some(at);
        }
    }

    /// The host is back at `at` (world time): closes the open span, if any.
    pub fn up(&self, at: DateTime<Utc>) {
        let mut inner = self.lock();
        if let Some(from) = inner.open.take() {
            push(&mut inner, (from, at.max(from)));
        }
    }

    /// The host was away over `[from, until)` (a sleep).
    pub fn add(&self, from: DateTime<Utc>, until: DateTime<Utc>) {
        push(&mut self.lock(), (from, until.max(from)));
    }

    /// Every span, sorted, overlapping ones merged; a span still open ends at `end`.
    pub fn spans(&self, end: DateTime<Utc>) -> Vec<AwaySpan> {
        let inner = self.lock();
        let mut all = inner.spans.clone();
        if let Some(from) = inner.open {
            all.push((from, end.max(from)));
        }
        merge_spans(all)
    }

    /// The runner process started at `at` (world time). A process that started again
    /// lost every answer on its way to its predecessor.
    pub fn booted(&self, at: DateTime<Utc>) {
        let mut inner = self.lock();
        if inner.boots.len() < MAX_AWAY_SPANS {
            inner.boots.push(at);
        } else {
            inner.dropped += 1;
        }
    }

    /// When the runner process started, in order.
    pub fn boots(&self) -> Vec<DateTime<Utc>> {
        self.lock().boots.clone()
    }

    /// The host's wall clock stepped by `by` at `at` (world time).
    pub fn stepped(&self, at: DateTime<Utc>, by: chrono::Duration) {
        let mut inner = self.lock();
        if inner.steps.len() < MAX_AWAY_SPANS {
            inner.steps.push((at, by));
        } else {
            inner.dropped += 1;
        }
    }

    /// The host wall clock's steps, sorted by world time (stable: steps at one instant
    /// keep the order they were applied in).
    pub fn steps(&self) -> Vec<ClockStep> {
        let mut steps = self.lock().steps.clone();
        steps.sort_by_key(|(at, _)| *at);
        steps
    }

    /// Spans, boots and steps not kept (the record was full).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

fn push(inner: &mut AwayInner, span: AwaySpan) {
    if span.0 == span.1 {
        return;
    }
    if inner.spans.len() < MAX_AWAY_SPANS {
        inner.spans.push(span);
    } else {
        inner.dropped += 1;
    }
}

/// What happens to the runner host's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockFault {
    /// The host sleeps this long.
    Sleep(Duration),
    /// The host's wall clock steps by this much (negative: back).
    Step(chrono::Duration),
}

impl ClockFault {
    /// Applies the fault to `world` at `at` (world time): a sleep is recorded as an
    /// away span of the host, a step in the host's clock record.
    pub fn apply(self, world: &World, at: DateTime<Utc>) {
        match self {
            Self::Sleep(d) => {
                world.time().jump(d);
                let until = at + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
                world.host_away().add(at, until);
            }
            Self::Step(by) => {
                world.clock().step_wall(by);
                world.host_away().stepped(at, by);
            }
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
        ClockFault::Sleep(Duration::from_secs(7200)).apply(&world, epoch);
        assert_eq!(
            steadfast_testkit::TimeSource::now(world.time()),
            epoch + chrono::Duration::hours(2)
        );
        assert_eq!(world.clock().now(), epoch + chrono::Duration::hours(2));
        ClockFault::Step(chrono::Duration::hours(-1)).apply(&world, epoch);
        assert_eq!(
            steadfast_testkit::TimeSource::now(world.time()),
            epoch + chrono::Duration::hours(2)
        );
        assert_eq!(world.clock().now(), epoch + chrono::Duration::hours(1));
        // The sleep is the host's away span; the step is not, but it is recorded.
        let end = epoch + chrono::Duration::hours(10);
        assert_eq!(
            world.host_away().spans(end),
            [(epoch, epoch + chrono::Duration::hours(2))]
        );
        assert_eq!(
            world.host_away().steps(),
            [(epoch, chrono::Duration::hours(-1))]
        );
    }

    #[test]
    fn away_spans_merge_and_an_open_one_ends_with_the_world() {
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap();
        let min = |m: i64| t0 + chrono::Duration::minutes(m);
        let away = HostAway::default();
        away.down(min(10));
        // A second crash while down does not move the span's start.
        away.down(min(11));
        away.up(min(12));
        // Coming up when not down records nothing.
        away.up(min(20));
        away.add(min(12), min(15));
        away.add(min(30), min(40));
        away.down(min(50));
        assert_eq!(
            away.spans(min(60)),
            [(min(10), min(15)), (min(30), min(40)), (min(50), min(60))]
        );
    }
}
