//! Shared by the chaos test binaries: loading scenarios and reading the world's store.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use sim::driver::SimRun;
use sim::scenario::Scenario;
use steadfast_core::job::RunId;
use steadfast_core::scheduler::catch_up::slots_between;

/// `scenarios/<name>.toml`.
pub(crate) fn load(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|d| panic!("{name} does not parse:\n{d}"))
}

/// One slot as the journal in the world's store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// `running`, `done` or `missed`.
    pub(crate) state: String,
    /// A finished run's outcome.
    pub(crate) outcome: Option<String>,
    /// A missed slot's reason.
    pub(crate) reason: Option<String>,
}

/// A journal row: due, last due, slot count, state, outcome, reason.
type SlotRow = (i64, i64, i64, String, Option<String>, Option<String>);

/// Every slot of `job` due after its registration and at most `until`, as the journal
/// accounts for it (`None`: not in the journal at all).
pub(crate) fn journal(
    s: &Scenario,
    run: &SimRun,
    job: &str,
    until: DateTime<Utc>,
) -> BTreeMap<DateTime<Utc>, Option<Slot>> {
    let config = s.config.jobs.iter().find(|j| j.name == job).expect("job");
    let db = run.world.db();
    let registered: i64 = db
        .with(|c| {
            c.query_row(
                "SELECT registered_at FROM jobs WHERE job = ?1",
                [job],
                |r| r.get(0),
            )
        })
        .expect("the job is registered");
    let registered = DateTime::from_timestamp_millis(registered).expect("time");
    let rows: Vec<SlotRow> = db
        .with(|c| {
            let mut st = c.prepare(
                "SELECT due, last_due, slot_count, state, outcome, reason FROM slots WHERE job = ?1",
            )?;
            let rows = st.query_map([job], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            rows.collect()
        })
        .expect("journal rows");
    slots_between(&config.schedule, registered, until)
        .into_iter()
        .map(|due| {
            let t = due.timestamp_millis();
            let row = rows.iter().find(|(first, last, count, ..)| {
                *first == t || (*count > 1 && *first <= t && t <= *last)
            });
            let slot = row.map(|(.., state, outcome, reason)| Slot {
                state: state.clone(),
                outcome: outcome.clone(),
                reason: reason.clone(),
            });
            (due, slot)
        })
        .collect()
}

/// What is wrong with a journal: slots missing, left running, missed without a reason,
/// or journaled as succeeded with no post at the API (the world's record).
pub(crate) fn journal_problems(
    s: &Scenario,
    run: &SimRun,
    job: &str,
    until: DateTime<Utc>,
    api: &str,
) -> Vec<String> {
    let posts: Vec<String> = run.apis[api]
        .side_effects()
        .into_iter()
        .map(|e| e.body)
        .collect();
    let mut problems = Vec::new();
    for (due, slot) in journal(s, run, job, until) {
        let id = RunId::new(job, due).to_string();
        match slot {
            None => problems.push(format!("{id}: not in the journal")),
            Some(Slot { state, outcome, .. }) if state == "done" => {
                let ok = matches!(outcome.as_deref(), Some("succeeded" | "degraded"));
                if ok && !posts.iter().any(|b| b.contains(&id)) {
                    problems.push(format!("{id}: journaled {outcome:?} but never posted"));
                }
            }
            Some(Slot { state, reason, .. }) if state == "missed" && reason.is_some() => {}
            Some(other) => problems.push(format!("{id}: {other:?}")),
        }
    }
    problems
}
