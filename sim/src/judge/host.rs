//! The host's timeline: a runner host whose wall clock was stepped is judged on its own
//! clock.
//!
//! The user writes schedules and windows in the machine's wall clock, and no runner can
//! do better than its clock. The world applied every step of the host's wall clock
//! ([`HostAway::steps`](crate::sleep::HostAway::steps)), so it knows the host clock's
//! offset at every world instant; reading that record asks nothing of the runner. The
//! judge maps each request's world time to host wall time through it, and:
//!
//! - a slot (host time) is due once if the host clock reached it at least once; after a
//!   backward step the host clock passes the same times again, in a new *pass*, and
//!   work done again for a slot that already had that work done in an earlier pass is
//!   a slot run twice (a duplicate), not a new slot;
//! - host times a forward step jumped over were never reached: they are away spans on
//!   the host's timeline, judged as a sleep's (the catch-up policy owes the latest, all
//!   or none; an owed slot without output is lost);
//! - windows are read at the host time of each request.
//!
//! A world without steps maps every instant to itself, in one pass: it is judged
//! exactly as before the mapping existed.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::sleep::{AwaySpan, ClockStep};

/// The host wall clock's offset from world time, piecewise constant.
#[derive(Debug, Clone, Default)]
pub struct HostClock {
    /// World instant of each step (sorted), the offset from it on, and the pass it
    /// opens (backward steps so far).
    changes: Vec<(DateTime<Utc>, chrono::Duration, usize)>,
}

impl HostClock {
    /// The clock of a host stepped by `steps` (sorted by world time).
    pub fn new(steps: &[ClockStep]) -> Self {
        let mut offset = chrono::Duration::zero();
        let mut pass = 0usize;
        let changes = steps
            .iter()
            .map(|(at, by)| {
                offset += *by;
                if *by < chrono::Duration::zero() {
                    pass += 1;
                }
                (*at, offset, pass)
            })
            .collect();
        Self { changes }
    }

    /// Whether the host clock was never stepped (every instant maps to itself).
    pub fn is_identity(&self) -> bool {
        self.changes.is_empty()
    }

    fn change_at(&self, t: DateTime<Utc>) -> Option<&(DateTime<Utc>, chrono::Duration, usize)> {
        let i = self.changes.partition_point(|(at, _, _)| *at <= t);
        i.checked_sub(1).map(|i| &self.changes[i])
    }

    /// The host's wall time at world time `t`.
    pub fn host(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.change_at(t).map_or(t, |(_, offset, _)| {
            t.checked_add_signed(*offset).unwrap_or(t)
        })
    }

    /// The pass of the host clock at world time `t`: how many backward steps came
    /// before (at or before `t`).
    pub fn pass(&self, t: DateTime<Utc>) -> usize {
        self.change_at(t).map_or(0, |(_, _, pass)| *pass)
    }

    /// The host times reached while the world ran `[start, end)`: one span per stretch
    /// between steps, in world order.
    fn reached(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<AwaySpan> {
        let mut cuts: Vec<DateTime<Utc>> = self
            .changes
            .iter()
            .map(|(at, _, _)| (*at).clamp(start, end))
            .collect();
        cuts.insert(0, start);
        cuts.push(end);
        cuts.windows(2)
            .filter(|w| w[0] < w[1])
            .map(|w| {
                let offset = self.host(w[0]) - w[0];
                (w[0] + offset, w[1] + offset)
            })
            .collect()
    }

    /// The span of host time the clock covered while the world ran `[start, end)`:
    /// the earliest and the latest host time it read.
    pub fn extent(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> AwaySpan {
        let reached = self.reached(start, end);
        let from = reached.iter().map(|r| r.0).min().unwrap_or(start);
        let until = reached.iter().map(|r| r.1).max().unwrap_or(end);
        (from, until)
    }

    /// Host times inside the clock's extent that it never read (a forward step jumped
    /// over them): sorted, disjoint.
    pub fn jumped_over(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<AwaySpan> {
        let mut reached = self.reached(start, end);
        reached.sort();
        let mut out = Vec::new();
        let mut covered: Option<DateTime<Utc>> = None;
        for (from, until) in reached {
            if let Some(c) = covered
                && from > c
            {
                out.push((c, from));
            }
            covered = Some(covered.map_or(until, |c| c.max(until)));
        }
        out
    }

    /// `away` (world time) on the host's timeline, with the host times a forward step
    /// jumped over: sorted, merged.
    pub fn away(
        &self,
        away: &[AwaySpan],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<AwaySpan> {
        if self.is_identity() {
            return away.to_vec();
        }
        let all: Vec<AwaySpan> = away
            .iter()
            .map(|(from, until)| {
                let (from, until) = (self.host(*from), self.host(*until));
                (from, until.max(from))
            })
            .chain(self.jumped_over(start, end))
            .filter(|(from, until)| from < until)
            .collect();
        crate::sleep::merge_spans(all)
    }
}

/// One job's alive marks on the host timeline: (world time, host time) of each.
pub type HostAlive = (Vec<(DateTime<Utc>, DateTime<Utc>)>, chrono::Duration);

/// The share of whole world minutes from `start` to `end` in which every job was up on
/// the host's timeline: the host time of the minute within the job's threshold of the
/// latest host time among the marks made so far (world time) not after it.
pub fn uptime(
    clock: &HostClock,
    jobs: &[HostAlive],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> f64 {
    let mut cursors = vec![0usize; jobs.len()];
    let mut seen: Vec<BTreeSet<DateTime<Utc>>> = vec![BTreeSet::new(); jobs.len()];
    let step = chrono::Duration::minutes(1);
    let (mut up, mut total) = (0u64, 0u64);
    let mut t = start;
    let host_start = clock.host(start);
    while t < end {
        let h = clock.host(t);
        let mut all_up = true;
        for (i, (marks, threshold)) in jobs.iter().enumerate() {
            while cursors[i] < marks.len() && marks[cursors[i]].0 <= t {
                seen[i].insert(marks[cursors[i]].1);
                cursors[i] += 1;
            }
            let last = seen[i]
                .range(..=h)
                .next_back()
                .copied()
                .unwrap_or(host_start);
            if h - last > *threshold {
                all_up = false;
            }
        }
        total += 1;
        up += u64::from(all_up);
        t += step;
    }
    if total == 0 {
        1.0
    } else {
        up as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn steps_move_the_host_clock_and_a_backward_one_opens_a_pass() {
        let clock = HostClock::new(&[
            (t(8, 0), chrono::Duration::hours(-1)),
            (t(10, 0), chrono::Duration::hours(2)),
        ]);
        assert_eq!(clock.host(t(7, 59)), t(7, 59));
        assert_eq!(clock.host(t(8, 0)), t(7, 0));
        assert_eq!(clock.host(t(10, 0)), t(11, 0));
        assert_eq!((clock.pass(t(7, 59)), clock.pass(t(8, 0))), (0, 1));
        assert_eq!(clock.pass(t(11, 0)), 1);
        // Reached: 06-08, 07-09 (again), 11-13: 09-11 was jumped over.
        assert_eq!(clock.extent(t(6, 0), t(12, 0)), (t(6, 0), t(13, 0)));
        assert_eq!(clock.jumped_over(t(6, 0), t(12, 0)), [(t(9, 0), t(11, 0))]);
        let none = HostClock::new(&[]);
        assert!(none.is_identity());
        assert!(none.jumped_over(t(6, 0), t(12, 0)).is_empty());
        assert_eq!(none.host(t(9, 0)), t(9, 0));
    }
}
