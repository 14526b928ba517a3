//! Slots that passed while a job could not run them, and which of them to run now.
//!
//! After downtime (a crash, `kill -9`, an upgrade, a sleeping machine) the slots of a
//! job that fell in `(last journaled slot, now]` are listed from its schedule and split
//! by the job's [`CatchUp`] policy into runs to start now and ranges to record missed.
//! Nothing is left out: every listed slot is either run or in a missed range. The same
//! split serves slots that passed while a long run was in progress (`overlap`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::CatchUp;
use crate::schedule::Schedule;

/// At most this many slots are listed one by one (a year of a 30-second job); past
/// it the rest of the gap is one missed range ending at the last listed slot.
pub const MAX_LISTED: usize = 1_000_000;
/// `catch_up = "all"` runs at most this many slots, the newest ones.
pub const MAX_RUNS: usize = 32;

/// A contiguous range of slots recorded missed for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedRange {
    /// The first slot.
    pub first: DateTime<Utc>,
    /// The last slot.
    pub last: DateTime<Utc>,
    /// How many slots.
    pub count: u64,
}

/// What to do with a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Slots to run now, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// Ranges to record missed.
    pub missed: Vec<MissedRange>,
    /// The last slot the plan accounts for (`None`: the gap was empty).
    pub through: Option<DateTime<Utc>>,
}

/// The slots of `schedule` in `(after, until]`, at most [`MAX_LISTED`].
pub fn slots_between(
    schedule: &Schedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = schedule.next_after(after);
    while t <= until && out.len() < MAX_LISTED {
        out.push(t);
        t = schedule.next_after(t);
    }
    out
}

/// Splits the slots of `(after, now]` by `policy`: the ones to run (inside `window`
/// of `now`) and the rest as missed ranges.
pub fn plan(
    schedule: &Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUp,
    window: Duration,
) -> Plan {
    let slots = slots_between(schedule, after, now);
    let oldest_eligible = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let eligible: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i] >= oldest_eligible)
        .collect();
    let chosen: &[usize] = match policy {
        CatchUp::None => &[],
        CatchUp::Latest => eligible.last().map_or(&[][..], std::slice::from_ref),
        CatchUp::All => &eligible[eligible.len().saturating_sub(MAX_RUNS)..],
    };
    let mut plan = Plan {
        run: chosen.iter().map(|&i| slots[i]).collect(),
        missed: Vec::new(),
        through: slots.last().copied(),
    };
    let mut current: Option<MissedRange> = None;
    for (i, &slot) in slots.iter().enumerate() {
        if chosen.contains(&i) {
            plan.missed.extend(current.take());
            continue;
        }
        current = Some(match current {
            Some(r) => MissedRange {
                last: slot,
                count: r.count + 1,
                ..r
            },
            None => MissedRange {
                first: slot,
                last: slot,
                count: 1,
            },
        });
    }
    plan.missed.extend(current);
    plan
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::config::ScheduleConfig;

    const HOUR: Duration = Duration::from_secs(3600);

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
    }

    fn every(minutes: u64) -> Schedule {
        Schedule::new(
            &ScheduleConfig::Every(Duration::from_secs(minutes * 60)),
            chrono_tz::UTC,
        )
        .unwrap()
    }

    #[test]
    fn latest_runs_the_newest_slot_and_records_the_rest_as_one_range() {
        // Down from 06:00 to 07:10 on a 15-minute job: 06:15 .. 07:00 passed.
        let p = plan(&every(15), t(6, 0), t(7, 10), CatchUp::Latest, 6 * HOUR);
        assert_eq!(p.run, [t(7, 0)]);
        assert_eq!(
            p.missed,
            [MissedRange {
                first: t(6, 15),
                last: t(6, 45),
                count: 3
            }]
        );
        assert_eq!(p.through, Some(t(7, 0)));
    }

    #[test]
    fn all_runs_every_slot_inside_the_window_and_none_runs_nothing() {
        let fifty_minutes = Duration::from_secs(50 * 60);
        let p = plan(&every(15), t(6, 0), t(7, 10), CatchUp::All, fifty_minutes);
        // 06:15 is older than 50 minutes before 07:10.
        assert_eq!(p.run, [t(6, 30), t(6, 45), t(7, 0)]);
        assert_eq!(p.missed.len(), 1);
        assert_eq!(p.missed[0].count, 1);
        let none = plan(&every(15), t(6, 0), t(7, 10), CatchUp::None, HOUR);
        assert!(none.run.is_empty());
        assert_eq!(none.missed[0].count, 4);
    }

    #[test]
    fn a_restart_exactly_on_a_slot_accounts_for_it() {
        let p = plan(&every(15), t(6, 0), t(6, 15), CatchUp::Latest, HOUR);
        assert_eq!(p.run, [t(6, 15)]);
        assert!(p.missed.is_empty());
    }

    #[test]
    fn a_slot_older_than_the_window_is_missed_even_under_latest() {
        let p = plan(
            &every(60),
            t(1, 0),
            t(9, 30),
            CatchUp::Latest,
            Duration::from_secs(60),
        );
        assert!(p.run.is_empty());
        assert_eq!(p.missed[0].count, 8);
    }

    #[test]
    fn an_empty_gap_plans_nothing() {
        let p = plan(&every(15), t(6, 0), t(6, 10), CatchUp::All, HOUR);
        assert_eq!(p, Plan::default());
    }

    proptest! {
        /// Every slot of the gap is run or in exactly one missed range, never both.
        #[test]
        fn every_slot_is_accounted_for_exactly_once(
            minutes in 1u64..120,
            down in 0i64..5000,
            window_min in 0u64..600,
            policy in prop_oneof![Just(CatchUp::Latest), Just(CatchUp::All), Just(CatchUp::None)],
        ) {
            let after = t(0, 0);
            let now = after + chrono::Duration::minutes(down);
            let schedule = every(minutes);
            let slots = slots_between(&schedule, after, now);
            let p = plan(&schedule, after, now, policy, Duration::from_secs(window_min * 60));
            let in_ranges: u64 = p.missed.iter().map(|r| r.count).sum();
            prop_assert_eq!(in_ranges + p.run.len() as u64, slots.len() as u64);
            for r in &p.run {
                prop_assert!(slots.contains(r));
                prop_assert!(!p.missed.iter().any(|m| m.first <= *r && *r <= m.last));
            }
            prop_assert!(p.run.len() <= MAX_RUNS);
            if policy == CatchUp::Latest { prop_assert!(p.run.len() <= 1); }
        }
    }
}
