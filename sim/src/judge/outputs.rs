//! Outputs per slot, and the slots that produced none: lost (nobody was told) or
//! failed (an alert reached the operator).
//!
//! A request counts for a slot by the run it names: the `run` field of its body (the
//! run id `<job>-<due>` the world reads), when that due time lies in one of the job's
//! slot spans `[slot, next due)`. A run due while its work was not wanted (it waited
//! for its window) counts, all of it, for the slot whose span holds its last request
//! that did work: the slot it finished in. A request without a run id counts for the
//! slot whose span holds the time it arrived. A slot *succeeded* when every work step's side
//! effect was applied for it, is *degraded* when some were, and produced nothing
//! otherwise, whatever the runner logged.
//!
//! A slot without output that fell while the runner's host was away (asleep, or
//! crashed by the world until the restart it scheduled: the world's
//! [`HostAway`](crate::sleep::HostAway)) is *missed while away* unless the job's
//! catch-up policy owed a run for it on the host's return: no runner runs anything
//! while its host cannot. What the policy owes for an away span `[from, until)`, with
//! `catch_up_window` counted back from `until`: under `latest`, the last due time at
//! or before `until` if it lies in the span (a slot due at the very instant of return
//! is an ordinary slot); under `all`, every slot of the span within the window (the
//! newest [`MAX_CATCH_UP_RUNS`] of them); under `none`, nothing. An owed slot without
//! output is judged like any other, so a runner that skips the catch-up, or drops it
//! silently, is still seen; one that runs every slept slot in a burst produced output
//! for them (the burst shows in the services' per-minute counts, not here).
//!
//! Any other slot without output is *failed* when an alert about its job (or the whole
//! runner) reached the operator's inbox after the job last produced output *that the
//! runner heard of*, and no later than one heartbeat threshold after the slot's span
//! ended; otherwise it is *lost*. Output the runner heard of: a request that did work
//! and whose answer reached the process that sent it ([`heard`]: no boot of the runner
//! and no sleep of its host while the answer was on its way). An alert tells the
//! operator a job is failing until the runner can know better; a side effect applied
//! after its caller died (a crash during a slow call) is real output for its slot, but
//! no runner could report it as a recovery, so it does not end what the operator was
//! told (issue 10's crash loop: renders applied after every caller was killed).

use chrono::{DateTime, Utc};
use steadfast_core::alert::Alert;
use steadfast_core::config::{CatchUp, JobConfig};

use std::collections::{BTreeMap, BTreeSet};

use super::host::HostClock;
use super::slots::JobSlots;
use crate::sleep::AwaySpan;

/// `catch_up = "all"` owes at most this many slots per away span, the newest (the
/// documented bound of the policy).
pub const MAX_CATCH_UP_RUNS: usize = 32;

/// Lost slots listed at most (`job@due`).
pub const MAX_LOST_SLOTS: usize = 100_000;

/// The counts of one or more jobs' slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotCounts {
    /// Slots due.
    pub scheduled: u64,
    /// Every work step done.
    pub succeeded: u64,
    /// Some work steps done.
    pub degraded: u64,
    /// Nothing done; an alert told the operator.
    pub failed: u64,
    /// Nothing done; nobody was told.
    pub lost: u64,
    /// Nothing done; due while the host was away (down or asleep) and not owed by the
    /// job's catch-up policy on its return.
    pub away: u64,
    /// The lost slots, `job@due` (bounded by [`MAX_LOST_SLOTS`]).
    pub lost_slots: Vec<String>,
}

/// Work done for one job: (time, work step position) of every request that did work,
/// attributed to a slot index. Times are the host's (see [`super::host`]).
#[derive(Debug, Clone, Default)]
pub struct JobWork {
    /// Per slot, a bit per work step done.
    pub done: Vec<u64>,
    /// When the job did work (sorted): its output times.
    pub times: Vec<DateTime<Utc>>,
    /// The output times whose answer reached the runner (sorted, once `times` is).
    pub heard: Vec<DateTime<Utc>>,
    /// (world time, host time) of every output, for uptime on a stepped host.
    pub marks: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Per (slot, work step position), the host clock's pass it was first done in.
    pub first_pass: BTreeMap<(usize, usize), usize>,
    /// Slots whose work was done again in a later pass of the host clock (after a
    /// backward step): slots run twice.
    pub twice: BTreeSet<usize>,
}

impl JobWork {
    /// Room for `slots` slots.
    pub fn new(slots: usize) -> Self {
        Self {
            done: vec![0; slots],
            ..Self::default()
        }
    }

    /// Records work step `position` done at world time `at` for slot `slot` (none: it
    /// counts for no slot, but is still output); `heard`: its answer reached the
    /// runner; `repeat`: the ledger marked it a repeated write (counted there).
    pub fn record(
        &mut self,
        slot: Option<usize>,
        clock: &HostClock,
        (at, position, heard, repeat): (DateTime<Utc>, usize, bool, bool),
    ) {
        let host = clock.host(at);
        self.times.push(host);
        self.marks.push((at, host));
        if heard {
            self.heard.push(host);
        }
        if let Some(i) = slot.filter(|_| !repeat) {
            let pass = clock.pass(at);
            let first = self.first_pass.entry((i, position)).or_insert(pass);
            if *first != pass {
                self.twice.insert(i);
            }
        }
        if let (Some(i), Some(bit)) = (
            slot,
            1u64.checked_shl(u32::try_from(position).unwrap_or(64)),
        ) {
            self.done[i] |= bit;
        }
    }
}

/// Whether the answer to a request that arrived at `at` and left the service at
/// `answered` reached the runner process that sent it: no boot of the runner in
/// `(at, answered]` (its caller had died) and no away span beginning in
/// `[at, answered)` (a crash killed it, or a sleep reset its connection).
pub fn heard(
    at: DateTime<Utc>,
    answered: DateTime<Utc>,
    boots: &[DateTime<Utc>],
    away: &[AwaySpan],
) -> bool {
    let booted = boots[boots.partition_point(|b| *b <= at)..]
        .first()
        .is_some_and(|b| *b <= answered);
    let left = away[away.partition_point(|(from, _)| *from < at)..]
        .first()
        .is_some_and(|(from, _)| *from < answered);
    !booted && !left
}

/// The away span holding `t`, if any (`away` sorted and disjoint).
fn span_holding(away: &[AwaySpan], t: DateTime<Utc>) -> Option<AwaySpan> {
    let i = away.partition_point(|(from, _)| *from <= t);
    (i > 0 && t < away[i - 1].1).then(|| away[i - 1])
}

/// Whether `job`'s catch-up policy owes a run on the host's return for slot `i`, due
/// inside the away span ending `until`.
fn owed(job: &JobConfig, slots: &JobSlots, i: usize, until: DateTime<Utc>) -> bool {
    let slot = slots.slots[i];
    let window = chrono::Duration::from_std(job.catch_up_window).unwrap_or(chrono::Duration::MAX);
    if until - slot > window {
        return false;
    }
    match job.catch_up {
        CatchUp::None => false,
        // The last due time (wanted or not) at or before the return.
        CatchUp::Latest => slots.span_ends[i] > until,
        CatchUp::All => {
            let newer = slots.slots[i + 1..].partition_point(|s| *s <= until);
            newer < MAX_CATCH_UP_RUNS
        }
    }
}

/// What the world saw beside the ledger, for telling failed, lost and away slots apart.
#[derive(Debug, Clone, Copy)]
pub struct Witness<'a> {
    /// The alerts that reached the operator's inbox.
    pub alerts: &'a [Alert],
    /// The host's away spans (sorted, disjoint).
    pub away: &'a [AwaySpan],
    /// When the world started (a job with no output yet counts from here).
    pub start: DateTime<Utc>,
}

/// Classifies every slot of `job`.
pub fn classify(
    job: &JobConfig,
    slots: &JobSlots,
    work: &JobWork,
    work_steps: usize,
    seen: Witness<'_>,
    counts: &mut SlotCounts,
) {
    let Witness {
        alerts,
        away,
        start,
    } = seen;
    let all = if work_steps >= 64 {
        u64::MAX
    } else {
        (1u64 << work_steps) - 1
    };
    let threshold =
        chrono::Duration::from_std(job.heartbeat_threshold).unwrap_or(chrono::Duration::MAX);
    for (i, slot) in slots.slots.iter().enumerate() {
        counts.scheduled += 1;
        let done = work.done[i];
        if done == all {
            counts.succeeded += 1;
        } else if done != 0 {
            counts.degraded += 1;
        } else if span_holding(away, *slot).is_some_and(|(_, until)| !owed(job, slots, i, until)) {
            counts.away += 1;
        } else {
            let since = work.heard[..work.heard.partition_point(|t| t < slot)]
                .last()
                .copied()
                .unwrap_or(start);
            let until = slots.span_ends[i]
                .checked_add_signed(threshold)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            let told = alerts.iter().any(|a| {
                a.job.as_deref().is_none_or(|j| j == job.name) && a.at >= since && a.at <= until
            });
            if told {
                counts.failed += 1;
            } else {
                counts.lost += 1;
                if counts.lost_slots.len() < MAX_LOST_SLOTS {
                    counts
                        .lost_slots
                        .push(format!("{}@{}", job.name, slot.to_rfc3339()));
                }
            }
        }
    }
}
