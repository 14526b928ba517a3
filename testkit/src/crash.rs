//! Crash points: stop the world at the k-th durable operation, to test every crash.
//!
//! Why: "a crash at any point leaves the old or the new state" is only believable when
//! a test has crashed at every point. [`CrashPoints`] counts the durable operations of
//! every fake that shares it (the [`crate::MemFs`] counts `fs.write`, `fs.sync`,
//! `fs.rename`, `fs.sync_dir` and `fs.remove`; other fakes, such as a database
//! store's commits, call [`CrashPoints::point`] with their own label). Armed, it stops
//! the k-th one: the operation does not happen ([`CrashAt::Before`]) or happens
//! ([`CrashAt::After`]), and its future never resolves, as if the process died there.
//! From then on every counted operation hangs the same way: a dead process does
//! nothing more. The owner (a test, or the simulator's driver) sees the hit through
//! [`CrashPoints::hit`] or [`CrashPoints::crashed`], drops the runner, calls the disk's
//! `crash()` and [`CrashPoints::disarm`]s before the next boot.
//!
//! The loop over every point: run the sequence once unarmed and read
//! [`CrashPoints::seen`] before and after to get its `N` operations, then for each `k`
//! in `1..=N` run it again on a fresh disk armed with `Before(k)` (and `After(k)`).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// Where to crash, counting durable operations from the moment of arming (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// The k-th operation does not happen.
    Before(u64),
    /// The k-th operation happens, then the process dies before it returns.
    After(u64),
}

/// A crash point that was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashHit {
    /// The operation's number since the counter was created (see [`CrashPoints::seen`]).
    pub op: u64,
    /// The operation's label, such as `fs.rename`.
    pub label: &'static str,
    /// Whether the operation had happened.
    pub after: bool,
}

#[derive(Debug, Default)]
struct State {
    seen: u64,
    /// The absolute operation number to stop at, and whether after it.
    armed: Option<(u64, bool)>,
    hit: Option<CrashHit>,
}

/// Counts durable operations and crashes at an armed one. Shared behind an `Arc`.
#[derive(Debug)]
pub struct CrashPoints {
    state: Mutex<State>,
    hits: watch::Sender<Option<CrashHit>>,
}

impl Default for CrashPoints {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            hits: watch::Sender::new(None),
        }
    }
}

impl CrashPoints {
    /// A fresh, unarmed counter.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Durable operations counted so far (including a stopped one).
    pub fn seen(&self) -> u64 {
        self.lock().seen
    }

    /// Crashes at `at`, counted from now. Replaces an earlier arming; `Before(0)` and
    /// `After(0)` never fire.
    pub fn arm(&self, at: CrashAt) {
        let mut s = self.lock();
        let (k, after) = match at {
            CrashAt::Before(k) => (k, false),
            CrashAt::After(k) => (k, true),
        };
        s.armed = (k > 0).then(|| (s.seen.saturating_add(k), after));
    }

    /// Forgets the arming and the hit (call after the owner crashed the disk); the
    /// count goes on.
    pub fn disarm(&self) {
        let mut s = self.lock();
        s.armed = None;
        s.hit = None;
        self.hits.send_replace(None);
    }

    /// The crash point reached since the last [`Self::disarm`], if any.
    pub fn hit(&self) -> Option<CrashHit> {
        self.lock().hit
    }

    /// Resolves once a crash point is reached (at once if one was).
    pub async fn crashed(&self) -> CrashHit {
        let mut rx = self.hits.subscribe();
        loop {
            if let Some(hit) = *rx.borrow_and_update() {
                return hit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`, so this is never reached.
                return std::future::pending().await;
            }
        }
    }

    /// Kills the process now, between durable operations (a crash at an instant rather
    /// than at an operation): from here on every counted operation hangs, as after an
    /// armed hit. Returns the hit (the one already reached, if the process was dead).
    pub fn kill(&self, label: &'static str) -> CrashHit {
        let mut s = self.lock();
        if let Some(hit) = s.hit {
            return hit;
        }
        let op = s.seen;
        self.record(&mut s, op, label, true);
        CrashHit {
            op,
            label,
            after: true,
        }
    }

    /// Runs one durable operation `op`, labelled `label` (like `fs.rename` or
    /// `store.commit`), unless the process dies before or right after it: then this
    /// future never resolves. Other fakes call this around each of their durable steps.
    pub async fn point<T>(&self, label: &'static str, op: impl FnOnce() -> T) -> T {
        let Some(n) = self.before(label) else {
            return std::future::pending().await;
        };
        let out = op();
        if self.after(label, n) {
            return std::future::pending().await;
        }
        out
    }

    /// Counts one operation; its number, or `None` when the process dies before it.
    fn before(&self, label: &'static str) -> Option<u64> {
        let mut s = self.lock();
        if s.hit.is_some() {
            // Dead already: nothing more happens (and the count stands still).
            return None;
        }
        s.seen += 1;
        let n = s.seen;
        if s.armed == Some((n, false)) {
            self.record(&mut s, n, label, false);
            return None;
        }
        Some(n)
    }

    /// Whether the process dies right after operation `n` (counted by [`Self::before`],
    /// so operations of other tasks in between do not shift it).
    fn after(&self, label: &'static str, n: u64) -> bool {
        let mut s = self.lock();
        if s.hit.is_some() {
            return true;
        }
        if s.armed == Some((n, true)) {
            self.record(&mut s, n, label, true);
            return true;
        }
        false
    }

    fn record(&self, s: &mut State, op: u64, label: &'static str, after: bool) {
        let hit = CrashHit { op, label, after };
        s.hit = Some(hit);
        s.armed = None;
        self.hits.send_replace(Some(hit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn run_three(points: &CrashPoints, log: &Mutex<Vec<&'static str>>) {
        for label in ["a", "b", "c"] {
            points
                .point(label, || {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(label)
                })
                .await;
        }
    }

    async fn outcome(at: Option<CrashAt>) -> (Vec<&'static str>, Option<CrashHit>) {
        let points = CrashPoints::new();
        if let Some(at) = at {
            points.arm(at);
        }
        let log = Mutex::new(Vec::new());
        let finished = tokio::time::timeout(Duration::from_secs(1), run_three(&points, &log)).await;
        assert_eq!(
            finished.is_ok(),
            points.hit().is_none(),
            "hangs exactly when hit"
        );
        let log = log.into_inner().unwrap_or_else(|p| p.into_inner());
        (log, points.hit())
    }

    #[tokio::test(start_paused = true)]
    async fn unarmed_points_only_count() {
        let points = CrashPoints::new();
        let log = Mutex::new(Vec::new());
        run_three(&points, &log).await;
        assert_eq!(points.seen(), 3);
        assert_eq!(outcome(None).await.0, ["a", "b", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn before_skips_the_operation_and_after_keeps_it() {
        let (log, hit) = outcome(Some(CrashAt::Before(2))).await;
        assert_eq!(log, ["a"]);
        assert_eq!(
            hit,
            Some(CrashHit {
                op: 2,
                label: "b",
                after: false
            })
        );
        let (log, hit) = outcome(Some(CrashAt::After(2))).await;
        assert_eq!(log, ["a", "b"]);
        assert_eq!(hit.map(|h| (h.label, h.after)), Some(("b", true)));
        let (log, hit) = outcome(Some(CrashAt::Before(4))).await;
        assert_eq!((log.len(), hit), (3, None), "past the end: no crash");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kill_between_operations_hangs_the_next_one() {
        let points = CrashPoints::new();
        points.point("a", || ()).await;
        points.arm(CrashAt::Before(5));
        let hit = points.kill("instant");
        assert_eq!((hit.op, hit.label, hit.after), (1, "instant", true));
        assert_eq!(
            points.hit(),
            Some(hit),
            "the arming is replaced by the kill"
        );
        let next = tokio::time::timeout(Duration::from_secs(1), points.point("b", || ()));
        assert!(next.await.is_err(), "dead: nothing more happens");
        assert_eq!(points.kill("again"), hit, "a dead process dies once");
        points.disarm();
        points.point("c", || ()).await;
        assert_eq!(points.seen(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_hit_everything_hangs_until_disarmed() {
        let points = CrashPoints::new();
        let log = Mutex::new(Vec::new());
        run_three(&points, &log).await;
        points.arm(CrashAt::Before(1));
        let waiter = {
            let points = points.clone();
            tokio::spawn(async move { points.crashed().await })
        };
        let first = tokio::time::timeout(Duration::from_secs(1), points.point("x", || 1));
        assert!(first.await.is_err());
        assert_eq!(
            waiter.await.ok().map(|h| h.op),
            Some(4),
            "numbered since creation"
        );
        let second = tokio::time::timeout(Duration::from_secs(1), points.point("y", || 2));
        assert!(second.await.is_err(), "a dead process does nothing more");
        assert_eq!(points.seen(), 4);
        points.disarm();
        assert_eq!(points.point("z", || 3).await, 3);
        assert_eq!((points.seen(), points.hit()), (5, None));
    }
}
