//! Pattern 4's error boundaries: how far one failure reaches.
//!
//! With boundaries (production) each job runs in its own, and so does each step within
//! a run: a step whose service is down is skipped and its run goes on degraded, and a
//! fatal error stops its job only. Without them (the field report's first version, one
//! `try` around everything) any step failure fails its run and a fatal error anywhere
//! stops the whole runner. The choice is made once, when the runner is built.

/// How far one failure reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    /// A boundary per job and per step (pattern 4 on).
    PerJob,
    /// One boundary around everything (pattern 4 off).
    Whole,
}

impl Boundary {
    /// Whether a run goes on, degraded, after one of its steps was skipped.
    pub fn skipped_step_degrades(self) -> bool {
        self == Self::PerJob
    }

    /// Whether a fatal error in one job stops every job.
    pub fn fatal_stops_runner(self) -> bool {
        self == Self::Whole
    }
}
