//! The fake process spawner: a script of program name to result.
//!
//! Why scripted: command steps must be testable without processes, and the simulator
//! must time them on its clock. A scripted program exits with a given code and output
//! after a given (paused or simulated) duration; past the spec's timeout it is killed,
//! as the production spawner kills the process group.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use steadfast_core::env::{CommandOutput, CommandSpec, LeftGroup, Reaped, Spawner, StartedCommand};

/// At most this many recent runs are kept for [`ScriptedSpawner::runs`].
pub const MAX_KEPT_RUNS: usize = 1024;

/// What running a scripted program does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedCommand {
    /// What it produces (cut to the spec's capture limit; `code` is `None` and
    /// `timed_out` set when it runs past the timeout).
    pub output: CommandOutput,
    /// How long it runs.
    pub duration: Duration,
}

impl ScriptedCommand {
    /// A program that exits at once with `code` and prints `stdout`.
    pub fn exits(code: i32, stdout: &str) -> Self {
        Self::from(CommandOutput {
            code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
            timed_out: false,
        })
    }

    /// The same program, taking `duration` to run.
    pub fn taking(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }
}

impl From<CommandOutput> for ScriptedCommand {
    fn from(output: CommandOutput) -> Self {
        Self {
            output,
            duration: Duration::ZERO,
        }
    }
}

/// Group ids handed out start here (well clear of init and the runner's own).
const FIRST_PGID: u32 = 10_000;

#[derive(Debug, Default)]
struct Script {
    programs: BTreeMap<String, ScriptedCommand>,
    counts: BTreeMap<String, u64>,
    recent: VecDeque<CommandSpec>,
    started: u32,
    stopped: Vec<LeftGroup>,
}

/// Processes from a script: program name (`argv[0]`) to result; unknown programs fail
/// with `NotFound`. Cheap to clone; clones share the script and the record.
#[derive(Debug, Clone, Default)]
pub struct ScriptedSpawner {
    script: Arc<Mutex<Script>>,
}

impl ScriptedSpawner {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What running `program` does from now on.
    pub fn script(&self, program: &str, command: impl Into<ScriptedCommand>) {
        self.lock()
            .programs
            .insert(program.to_string(), command.into());
    }

    /// The most recent runs, oldest first (at most [`MAX_KEPT_RUNS`]).
    pub fn runs(&self) -> Vec<CommandSpec> {
        self.lock().recent.iter().cloned().collect()
    }

    /// How often each program was run (scripted or not).
    pub fn run_counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }
}

/// A scripted program held before it runs; it runs (on the runtime's clock) in
/// [`StartedCommand::finish`].
#[derive(Debug)]
pub struct ScriptedStarted {
    spec: CommandSpec,
    command: ScriptedCommand,
    pgid: u32,
}

impl StartedCommand for ScriptedStarted {
    fn pgid(&self) -> u32 {
        self.pgid
    }

    async fn finish(self) -> io::Result<CommandOutput> {
        let Self { spec, command, .. } = self;
        let ScriptedCommand { output, duration } = command;
        let killed = duration > spec.timeout;
        tokio::time::sleep(duration.min(spec.timeout)).await;
        let cut = |mut bytes: Vec<u8>| {
            bytes.truncate(spec.capture_limit_bytes);
            bytes
        };
        Ok(CommandOutput {
            code: if killed { None } else { output.code },
            stdout: cut(output.stdout),
            stderr: cut(output.stderr),
            timed_out: killed || output.timed_out,
        })
    }
}

impl ScriptedSpawner {
    /// The left groups the runner asked to stop, oldest first (bounded by
    /// [`MAX_KEPT_RUNS`]).
    pub fn stopped_groups(&self) -> Vec<LeftGroup> {
        self.lock().stopped.clone()
    }
}

impl Spawner for ScriptedSpawner {
    type Started = ScriptedStarted;

    async fn start(&self, spec: &CommandSpec) -> io::Result<ScriptedStarted> {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let (command, pgid) = {
            let mut script = self.lock();
            *script.counts.entry(program.clone()).or_default() += 1;
            if script.recent.len() == MAX_KEPT_RUNS {
                script.recent.pop_front();
            }
            script.recent.push_back(spec.clone());
            script.started = script.started.wrapping_add(1);
            let pgid = FIRST_PGID + script.started % (u32::MAX - FIRST_PGID);
            (script.programs.get(&program).cloned(), pgid)
        };
        let Some(command) = command else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("program `{program}` not found (hint: script it first)"),
            ));
        };
        Ok(ScriptedStarted {
            spec: spec.clone(),
            command,
            pgid,
        })
    }

    /// Scripted programs die with the runner that ran them (a simulated host's crash
    /// takes its processes along), so every left group is found gone; the request is
    /// recorded for [`ScriptedSpawner::stopped_groups`].
    async fn stop_group(&self, group: &LeftGroup, _grace: Duration) -> io::Result<Reaped> {
        let mut script = self.lock();
        if script.stopped.len() == MAX_KEPT_RUNS {
            script.stopped.remove(0);
        }
        script.stopped.push(group.clone());
        Ok(Reaped::Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str) -> CommandSpec {
        CommandSpec {
            argv: vec![program.to_string()],
            cwd: None,
            env: Vec::new(),
            timeout: Duration::from_secs(60),
            capture_limit_bytes: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_programs_run_for_their_time_and_are_killed_at_the_timeout() {
        let spawner = ScriptedSpawner::default();
        spawner.script("quick", ScriptedCommand::exits(0, "done"));
        spawner.script(
            "slow",
            ScriptedCommand::exits(0, "").taking(Duration::from_secs(90)),
        );
        let quick = spawner.run(&spec("quick")).await.unwrap();
        assert_eq!((quick.code, quick.stdout), (Some(0), b"do".to_vec()));
        let start = tokio::time::Instant::now();
        let slow = spawner.run(&spec("slow")).await.unwrap();
        assert_eq!((slow.code, slow.timed_out), (None, true));
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        let missing = spawner.run(&spec("nope")).await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(spawner.runs().len(), 3);
        assert_eq!(spawner.run_counts()["nope"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_record_of_runs_is_bounded() {
        let spawner = ScriptedSpawner::default();
        spawner.script("p", ScriptedCommand::exits(0, ""));
        for _ in 0..MAX_KEPT_RUNS + 5 {
            spawner.run(&spec("p")).await.unwrap();
        }
        assert_eq!(spawner.runs().len(), MAX_KEPT_RUNS);
        assert_eq!(spawner.run_counts()["p"], (MAX_KEPT_RUNS + 5) as u64);
    }
}
