//! Step dependencies: which earlier steps a step waits for, and what a missing one does.
//!
//! With [`Needs::Declared`] a step runs only when every step it `needs` (by default,
//! every step before it) was done in this run or a run it resumes; a prerequisite that
//! was skipped skips its dependents too, with the reason, and the run ends
//! [`crate::job::RunOutcome::Failed`]: its output was not produced, so it is neither a
//! success nor a degraded success. A skipped step that nothing needs still only
//! degrades the run. [`Needs::Outputs`] is the naive habit: a step is skipped only when
//! a placeholder names an output that a skipped step did not produce, and the run is
//! degraded.
//!
//! A step deferred to a later run (its window or its service's gate opens after the
//! run's deadline) defers its dependents with it; with [`Needs::Declared`] the steps
//! that do not need it still run, and the run ends deferred: the resumed run does the
//! rest and repeats nothing.

use std::collections::BTreeMap;

use crate::config::StepConfig;

/// How dependencies between steps are decided, chosen once from the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// `needs` (default: every step before) must be done.
    Declared,
    /// Only placeholders make a dependency (the naive habit).
    Outputs,
}

/// A step that cannot run because a prerequisite was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The prerequisite that was not done.
    pub prerequisite: String,
    /// Why it was not done.
    pub why: String,
}

impl Needs {
    /// The first prerequisite of `step` (the `index`-th of `steps`) in `not_done`
    /// (skipped steps and why), if any.
    pub fn blocked(
        self,
        steps: &[StepConfig],
        index: usize,
        not_done: &BTreeMap<String, String>,
    ) -> Option<Blocked> {
        let step = steps.get(index)?;
        let found = |name: &str| {
            not_done.get(name).map(|why| Blocked {
                prerequisite: name.to_string(),
                why: why.clone(),
            })
        };
        match self {
            Self::Declared => match &step.needs {
                Some(names) => names.iter().find_map(|n| found(n)),
                None => steps[..index].iter().find_map(|s| found(&s.name)),
            },
            Self::Outputs => step
                .templates()
                .into_iter()
                .flat_map(|t| t.refs())
                .find_map(|(owner, _)| found(owner)),
        }
    }

    /// Whether a step skipped for a prerequisite fails the run (rather than degrading it).
    pub fn blocked_fails_run(self) -> bool {
        self == Self::Declared
    }

    /// Whether the steps that do not need a deferred step still run in this run (the
    /// deferred one and its dependents wait for the resumed run); otherwise the first
    /// deferral ends the run.
    pub fn deferral_continues(self) -> bool {
        self == Self::Declared
    }
}
