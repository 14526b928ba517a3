//! Dependent side effects without their prerequisite: work a step did at the services
//! for a run whose prerequisite steps (its `needs`; by default every step before it)
//! the services never saw done for that run before it.
//!
//! A publish that went out after its upload was skipped is a post linking to nothing;
//! the runner may call the run "degraded", the world has a broken post. The judge
//! tells which run a request belongs to by the run id in its body (see
//! [`super::outputs`]), so only prerequisites whose requests name their run can be
//! checked: an http step whose body quotes `{{run.id}}`. A request without a run id
//! is not judged (it cannot be tied to a run), and neither is a prerequisite the world
//! cannot see (a local step, or one whose requests carry no run id).

use std::collections::BTreeSet;

use steadfast_core::config::{Config, StepKind};
use steadfast_core::job::RunId;

use super::work::{self, WorkMap};
use crate::services::ledger::LedgerEntry;

/// Whether the world can tell which run a request of this step belongs to.
fn names_its_run(step: &steadfast_core::config::StepConfig) -> bool {
    match &step.kind {
        StepKind::Http(http) => http
            .body
            .as_ref()
            .is_some_and(|b| b.as_str().contains("{{run.id}}")),
        _ => false,
    }
}

/// Per job and step, the indices of the prerequisites the world can check.
fn prerequisites(config: &Config) -> Vec<Vec<Vec<usize>>> {
    config
        .jobs
        .iter()
        .map(|job| {
            let index = |name: &str| job.steps.iter().position(|s| s.name == name);
            job.steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let needed: Vec<usize> = match &step.needs {
                        Some(names) => names.iter().filter_map(|n| index(n)).collect(),
                        None => (0..i).collect(),
                    };
                    needed
                        .into_iter()
                        .filter(|&p| p < i && names_its_run(&job.steps[p]))
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Requests that did a step's work for a run before the services saw every checkable
/// prerequisite of that step done for the same run.
pub fn unmet(config: &Config, map: &WorkMap, ledger: &[LedgerEntry]) -> u64 {
    let needs = prerequisites(config);
    // (job, run, step) done at the services so far, in order of arrival.
    let mut done: BTreeSet<(usize, &RunId, usize)> = BTreeSet::new();
    let mut unmet = 0;
    for e in ledger.iter().filter(|e| !e.is_health_check()) {
        let Some(p) = map.endpoint_of(config, e) else {
            continue;
        };
        let Some(run) = e
            .run
            .as_ref()
            .filter(|r| config.jobs.get(p.job).is_some_and(|j| j.name == r.job()))
        else {
            continue;
        };
        if !work::done(e, p.writes) {
            continue;
        }
        let missing = needs[p.job][p.step]
            .iter()
            .any(|pre| !done.contains(&(p.job, run, *pre)));
        unmet += u64::from(missing);
        done.insert((p.job, run, p.step));
    }
    unmet
}
