//! The independent judge: what the world's services saw, measured against what the
//! scenario asked for.
//!
//! It reads only the world's [`Ledger`](crate::services::Ledger) (every request the
//! services received), the operator's inbox, the world's record of when the runner's
//! host was away ([`HostAway`](crate::sleep::HostAway): asleep, or crashed by the world
//! until a restart it scheduled), and the scenario's intended configuration (config
//! types only). It never reads the runner's events and never calls the
//! runner's code: due times come from its own reference ([`slots`]: arithmetic for
//! `every`, croner for cron), windows from its own ([`window`]: chrono-tz), so a runner
//! bug (a window off by an hour, a dropped slot, an ignored `Retry-After`) is not
//! repeated by its judge. Give the runner a different configuration than the judge
//! and the judge still measures against the intended one.
//!
//! # Layout (one file per measure)
//! - [`slots`]: due slots per job; [`window`]: is a window open.
//! - [`work`]: which request belongs to which job and step, and what counts as done.
//! - [`outputs`]: outputs per slot; lost (silent) and failed (alerted) slots, and
//!   slots missed while the host was away (down or asleep) that the job's catch-up
//!   policy did not owe: no runner can run while its host cannot, so those are neither
//!   lost nor failed; the one catch-up run `catch_up = "latest"` owes (and every slot
//!   `all` owes) is judged like any slot, so a runner that skips it silently is seen.
//! - [`duplicates`], [`window_violations`], [`tokens`], [`rate_limits`], [`uptime`].
//! - [`prerequisites`]: a step's work done for a run whose prerequisites were not.
//! - [`host`]: a runner host whose wall clock the world stepped is judged on the host's
//!   timeline (the user's schedule and windows are in the machine's clock): slots the
//!   host clock reached, once each; work done again for a slot in a later pass of the
//!   clock (after a backward step) is a slot run twice, counted with the duplicates;
//!   host times a forward step jumped over are away spans. Without steps nothing
//!   changes.

pub mod duplicates;
pub mod host;
pub mod outputs;
pub mod prerequisites;
pub mod rate_limits;
pub mod slots;
pub mod tokens;
pub mod uptime;
pub mod window;
pub mod window_violations;
pub mod work;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use steadfast_core::alert::Alert;
use steadfast_core::config::Config;
use steadfast_core::job::RunId;

use crate::services::ledger::LedgerEntry;
use crate::sleep::{AwaySpan, ClockStep};
use outputs::{JobWork, SlotCounts};
use slots::JobSlots;

/// A work step done: when (world time), its position among the job's work steps,
/// whether its answer reached the runner process that asked, and whether the ledger
/// marked it a repeat of an earlier write.
type Done = (DateTime<Utc>, usize, bool, bool);

/// What the judge reads.
#[derive(Debug, Clone, Copy)]
pub struct Case<'a> {
    /// The scenario's intended configuration (jobs, schedules, windows, thresholds),
    /// whatever the runner was given.
    pub config: &'a Config,
    /// The zone of the world's wall clock (cron patterns and windows are read in it).
    pub zone: Tz,
    /// When the world started.
    pub start: DateTime<Utc>,
    /// When it ended.
    pub end: DateTime<Utc>,
    /// Every request the services received, in order of arrival.
    pub ledger: &'a [LedgerEntry],
    /// Requests the ledger could not record (it was full).
    pub ledger_dropped: u64,
    /// The alerts that reached the operator's inbox.
    pub alerts: &'a [Alert],
    /// When the runner's host was away by the world's doing (asleep, or crashed until a
    /// restart the world scheduled): sorted, disjoint `[from, until)` spans.
    pub away: &'a [AwaySpan],
    /// When the runner process started (every boot, in order).
    pub boots: &'a [DateTime<Utc>],
    /// The steps of the runner host's wall clock the world applied (sorted by world
    /// time); empty: the host's clock is the world's.
    pub steps: &'a [ClockStep],
    /// Away spans, boots and steps the world could not record (its record was full).
    pub away_dropped: u64,
}

/// One job as the judge saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobView {
    /// Its slots and closed-window due times.
    pub slots: JobSlots,
    /// When it did work at the services (sorted).
    pub outputs: Vec<DateTime<Utc>>,
}

/// The judge's findings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judgement {
    /// Slots and their outcomes.
    pub slots: SlotCounts,
    /// Share of minutes every job was within its heartbeat threshold of its output.
    pub uptime_ratio: f64,
    /// Side effects applied again, slots run twice included.
    pub duplicate_side_effects: u64,
    /// Slots whose work was done again in a later pass of a host clock stepped back
    /// (already counted in `duplicate_side_effects`).
    pub slots_run_twice: u64,
    /// Windowed actions done while their window was closed.
    pub window_violations: u64,
    /// Calls with an expired access token.
    pub expired_token_calls: u64,
    /// Every 429 answered.
    pub too_many_requests: u64,
    /// Calls inside a `Retry-After` advertised by the same service to anyone.
    pub calls_inside_retry_after: u64,
    /// Requests the services received (health probes aside).
    pub calls: u64,
    /// Work a step did for a run before the services saw its prerequisites (its
    /// `needs`) done for that run: a publish whose upload never arrived.
    pub unmet_prerequisites: u64,
    /// Per job, by name (slots and outputs in host time: the world's, unless the
    /// host's clock was stepped).
    pub jobs: BTreeMap<String, JobView>,
    /// Why the figures cannot be trusted, if they cannot: a full ledger, a schedule
    /// the reference cannot read, a job whose work the world cannot see.
    pub problems: Vec<String>,
}

/// Judges a finished world. A job's last slot is due before `end` minus its deadline,
/// so every slot judged had time to finish.
pub fn judge(case: &Case<'_>) -> Judgement {
    let config = case.config;
    let map = work::WorkMap::new(config);
    let mut j = Judgement::default();
    if case.ledger_dropped > 0 {
        j.problems.push(format!(
            "the ledger was full: {} requests not recorded (at most {})",
            case.ledger_dropped,
            crate::services::ledger::MAX_ENTRIES
        ));
    }
    if case.away_dropped > 0 {
        j.problems.push(format!(
            "the host's away record was full: {} spans, boots or steps not recorded (at most {})",
            case.away_dropped,
            crate::sleep::MAX_AWAY_SPANS
        ));
    }
    // The host's timeline: the world's, unless its clock was stepped.
    let clock = host::HostClock::new(case.steps);
    let (host_start, host_end) = clock.extent(case.start, case.end);
    let away = clock.away(case.away, case.start, case.end);
    // Each job's slots, and the work its requests did for them.
    let mut views: Vec<(JobSlots, JobWork)> = Vec::with_capacity(config.jobs.len());
    for job in &config.jobs {
        let deadline = chrono::Duration::from_std(job.deadline).unwrap_or_default();
        let slots = match slots::job_slots(
            job,
            &config.windows,
            case.zone,
            host_start,
            host_end - deadline,
        ) {
            Ok(s) => s,
            Err(problem) => {
                j.problems.push(problem);
                JobSlots::default()
            }
        };
        let work = JobWork::new(slots.slots.len());
        views.push((slots, work));
    }
    for (job, steps) in config.jobs.iter().zip(&map.work) {
        if steps.is_empty() {
            j.problems.push(format!(
                "job `{}` has no http step: the world cannot see its work",
                job.name
            ));
        } else if steps.len() > 64 {
            j.problems
                .push(format!("job `{}` has more than 64 writing steps", job.name));
        }
    }
    let mut deferred: BTreeMap<(usize, RunId), Vec<Done>> = BTreeMap::new();
    for e in case.ledger.iter().filter(|e| !e.is_health_check()) {
        j.calls += 1;
        let Some(p) = map.endpoint_of(config, e) else {
            continue;
        };
        let Some(position) = map.work[p.job].iter().position(|s| *s == p.step) else {
            continue;
        };
        if !work::done(e, p.writes) {
            continue;
        }
        let heard = outputs::heard(e.at, e.answered_at, case.boots, case.away);
        let job = &config.jobs[p.job];
        let (slots, work) = &mut views[p.job];
        let done = (e.at, position, heard, e.duplicate);
        match e.run.as_ref().filter(|r| r.job() == job.name) {
            Some(run) => match slots.slot_holding(run.due()) {
                Some(slot) => work.record(Some(slot), &clock, done),
                None => deferred.entry((p.job, run.clone())).or_default().push(done),
            },
            None => work.record(slots.slot_holding(clock.host(e.at)), &clock, done),
        }
    }
    // Runs due outside every slot count for the slot they finished in.
    for ((job, _), done) in deferred {
        let (slots, work) = &mut views[job];
        let slot = done
            .iter()
            .map(|(at, _, _, _)| *at)
            .max()
            .and_then(|last| slots.slot_holding(clock.host(last)));
        for d in done {
            work.record(slot, &clock, d);
        }
    }
    let mut alive = Vec::with_capacity(config.jobs.len());
    let mut host_alive = Vec::with_capacity(config.jobs.len());
    for ((job, steps), (slots, mut work)) in config.jobs.iter().zip(&map.work).zip(views) {
        work.times.sort();
        work.heard.sort();
        let steps = steps.len();
        if steps > 0 {
            outputs::classify(
                job,
                &slots,
                &work,
                steps,
                outputs::Witness {
                    alerts: case.alerts,
                    away: &away,
                    start: host_start,
                },
                &mut j.slots,
            );
        }
        j.slots_run_twice += work.twice.len() as u64;
        let threshold =
            chrono::Duration::from_std(job.heartbeat_threshold).unwrap_or(chrono::Duration::MAX);
        if clock.is_identity() {
            let mut marks = work.times.clone();
            marks.extend(slots.closed.iter().copied());
            marks.sort();
            alive.push((marks, threshold));
        } else {
            // A closed due time is a mark when the host clock reads it; its world time
            // is taken as its host time (close enough for a minute's share).
            let mut marks = work.marks.clone();
            marks.extend(slots.closed.iter().map(|c| (*c, *c)));
            marks.sort();
            host_alive.push((marks, threshold));
        }
        j.jobs.insert(
            job.name.clone(),
            JobView {
                slots,
                outputs: work.times,
            },
        );
    }
    j.uptime_ratio = if clock.is_identity() {
        uptime::ratio(&alive, case.start, case.end)
    } else {
        host::uptime(&clock, &host_alive, case.start, case.end)
    };
    j.duplicate_side_effects = duplicates::count(case.ledger) + j.slots_run_twice;
    j.window_violations =
        window_violations::count(config, case.zone, &map, case.ledger, |t| clock.host(t));
    j.unmet_prerequisites = prerequisites::unmet(config, &map, case.ledger);
    j.expired_token_calls = tokens::expired_calls(case.ledger);
    j.too_many_requests = rate_limits::too_many_requests(case.ledger);
    j.calls_inside_retry_after = rate_limits::calls_inside_retry_after(case.ledger);
    j
}

#[cfg(test)]
mod tests;
