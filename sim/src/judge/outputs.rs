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
//! A slot without output is *failed* when an alert about its job (or the whole runner)
//! reached the operator's inbox after the job last produced output and no later than
//! one heartbeat threshold after the slot's span ended; otherwise it is *lost*.

use chrono::{DateTime, Utc};
use steadfast_core::alert::Alert;
use steadfast_core::config::JobConfig;

use super::slots::JobSlots;

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
    /// The lost slots, `job@due` (bounded by [`MAX_LOST_SLOTS`]).
    pub lost_slots: Vec<String>,
}

/// Work done for one job: (time, work step position) of every request that did work,
/// attributed to a slot index.
#[derive(Debug, Clone, Default)]
pub struct JobWork {
    /// Per slot, a bit per work step done.
    pub done: Vec<u64>,
    /// When the job did work (sorted): its output times.
    pub times: Vec<DateTime<Utc>>,
}

impl JobWork {
    /// Room for `slots` slots.
    pub fn new(slots: usize) -> Self {
        Self {
            done: vec![0; slots],
            times: Vec::new(),
        }
    }

    /// Records work step `position` done at `at` for slot `slot` (none: it counts for
    /// no slot, but is still output).
    pub fn record(&mut self, slot: Option<usize>, at: DateTime<Utc>, position: usize) {
        self.times.push(at);
        if let (Some(i), Some(bit)) = (
            slot,
            1u64.checked_shl(u32::try_from(position).unwrap_or(64)),
        ) {
            self.done[i] |= bit;
        }
    }
}

/// Classifies every slot of `job`.
pub fn classify(
    job: &JobConfig,
    slots: &JobSlots,
    work: &JobWork,
    work_steps: usize,
    alerts: &[Alert],
    start: DateTime<Utc>,
    counts: &mut SlotCounts,
) {
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
        } else {
            let since = work.times[..work.times.partition_point(|t| t < slot)]
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
