//! Real processes for command steps: each in a process group of its own, held before its
//! program runs until the core has journaled the group, killed with its runner.
//!
//! A step is started as
//! `setpriv --pdeathsig KILL -- /bin/sh -c 'read -r _ || exit 125; exec "$@" </dev/null' steadfast-step PROGRAM ARGS...`:
//!
//! - `process_group(0)`: the step and everything it starts share a group whose id is
//!   the step's pid, so a timeout, a shutdown or the next runner stops the whole tree.
//! - The `read` is a gate on the step's stdin: the program runs only once the runner
//!   writes a line, which it does after the group id is committed to the store. A runner
//!   killed before that closes the pipe, `read` sees end of file and the step exits 125
//!   without running anything.
//! - `setpriv --pdeathsig KILL` (Linux, util-linux): the step leader is killed when the
//!   runner dies, even by `kill -9`. The kernel ties that signal to the *thread* that
//!   forked, so every step is forked from one of a few threads that live as long as
//!   the process ([`fork_thread`]); tokio's blocking-pool threads exit when idle and would take
//!   their steps with them. Where `setpriv` is missing, the journaled group and the
//!   stop at the next start still hold.
//!
//! Why a shell and `setpriv` rather than `pre_exec`: the workspace forbids `unsafe`, and
//! `pre_exec` is unsafe. The gate cannot live in `pre_exec` anyway: `spawn` waits for
//! the `exec`, so a child held before it would hold the runner too.
//!
//! [`stop_left`] stops a group a previous runner left: only processes that carry the
//! step's marker in their environment (`/proc/PID/environ` on Linux) are counted as ours,
//! so a group id reused by someone else is left alone.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdin};

use steadfast_core::env::{CommandOutput, CommandSpec, LeftGroup, Reaped, Spawner, StartedCommand};

/// The gate: wait for the runner's line, then run the program with no stdin.
const GATE: &str = "read -r _ || exit 125; exec \"$@\" </dev/null";
/// How often a stop looks whether the group is gone.
const POLL: Duration = Duration::from_millis(50);
/// How long a stop waits for the group to vanish after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// Real processes, each in its own process group (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSpawner;

/// A step process held at its gate.
#[derive(Debug)]
pub struct ProcessStarted {
    child: Child,
    gate: Option<ChildStdin>,
    pgid: u32,
    timeout: Duration,
    limit: u64,
    /// The group is ours to kill when this is dropped (not after the leader was reaped:
    /// its id may belong to someone else by then).
    armed: bool,
}

impl Drop for ProcessStarted {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pgid, "KILL");
        }
    }
}

impl StartedCommand for ProcessStarted {
    fn pgid(&self) -> u32 {
        self.pgid
    }

    async fn finish(mut self) -> io::Result<CommandOutput> {
        if let Some(mut gate) = self.gate.take() {
            // A step that died at its gate has closed the pipe; its exit status says so.
            let _ = gate.write_all(b"go\n").await;
            drop(gate);
        }
        let limit = self.limit;
        let mut stdout = self.child.stdout.take();
        let mut stderr = self.child.stderr.take();
        let read_out = async move {
            let mut buf = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(limit).read_to_end(&mut buf).await;
                // Drain the rest so the child never blocks on a full pipe.
                let _ = tokio::io::copy(s, &mut tokio::io::sink()).await;
            }
            buf
        };
        let read_err = async move {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(limit).read_to_end(&mut buf).await;
                let _ = tokio::io::copy(s, &mut tokio::io::sink()).await;
            }
            buf
        };
        let timeout = self.timeout;
        let waited = tokio::time::timeout(timeout, async {
            tokio::join!(self.child.wait(), read_out, read_err)
        })
        .await;
        match waited {
            Ok((status, stdout, stderr)) => {
                // The leader is reaped: its id is no longer ours to signal.
                self.armed = false;
                Ok(CommandOutput {
                    code: status?.code(),
                    stdout,
                    stderr,
                    timed_out: false,
                })
            }
            Err(_) => {
                // Killed while the leader is not reaped yet, so the id is still ours.
                kill_group(self.pgid, "KILL");
                let _ = self.child.kill().await;
                self.armed = false;
                Ok(CommandOutput {
                    code: None,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    timed_out: true,
                })
            }
        }
    }
}

impl Spawner for ProcessSpawner {
    type Started = ProcessStarted;

    async fn start(&self, spec: &CommandSpec) -> io::Result<ProcessStarted> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        };
        // The shell would report a missing program as exit 127, indistinguishable from
        // the program's own; found here it stays a configuration error.
        let path_var = spec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| std::ffi::OsString::from(v))
            .or_else(|| std::env::var_os("PATH"));
        resolve(program, spec.cwd.as_deref(), path_var.as_deref())?;
        let mut cmd = match pdeathsig() {
            Some(setpriv) => {
                let mut c = tokio::process::Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--", "/bin/sh"]);
                c
            }
            None => tokio::process::Command::new("/bin/sh"),
        };
        cmd.args(["-c", GATE, "steadfast-step", program])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = fork_thread(cmd).await?;
        let pgid = child
            .id()
            .ok_or_else(|| io::Error::other("the step exited before it was started"))?;
        let gate = child.stdin.take();
        Ok(ProcessStarted {
            child,
            gate,
            pgid,
            timeout: spec.timeout,
            limit: spec.capture_limit_bytes as u64,
            armed: true,
        })
    }

    async fn stop_group(&self, group: &LeftGroup, grace: Duration) -> io::Result<Reaped> {
        stop_left(group, grace).await
    }
}

/// Stops what is left of `group`: SIGTERM, then SIGKILL after `grace`.
pub async fn stop_left(group: &LeftGroup, grace: Duration) -> io::Result<Reaped> {
    if group.pgid <= 1 {
        return Ok(Reaped::NotOurs);
    }
    match members(group)? {
        Members::None => return Ok(Reaped::Gone),
        Members::NotOurs => return Ok(Reaped::NotOurs),
        Members::Ours => {}
    }
    kill_group(group.pgid, "TERM");
    if wait_gone(group, grace).await? {
        return Ok(Reaped::Terminated);
    }
    kill_group(group.pgid, "KILL");
    if wait_gone(group, AFTER_KILL).await? {
        return Ok(Reaped::Killed);
    }
    Err(io::Error::other(format!(
        "process group {} is still running after SIGKILL",
        group.pgid
    )))
}

async fn wait_gone(group: &LeftGroup, limit: Duration) -> io::Result<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !matches!(members(group)?, Members::Ours) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

enum Members {
    /// No live process in the group.
    None,
    /// Live processes, none of them ours.
    NotOurs,
    /// At least one live process carries the marker.
    Ours,
}

/// Who is alive in the group, read from `/proc` (zombies and exiting processes do not count: they run
/// nothing and their parent reaps them).
#[cfg(target_os = "linux")]
fn members(group: &LeftGroup) -> io::Result<Members> {
    let mut found = Members::None;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
        if pgrp != Some(group.pgid) || state == "Z" || state == "X" {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.is_empty() {
            // A process that is exiting has released its memory, environment included,
            // before it turns zombie: it is leaving, not a stranger. (One whose
            // environment cannot be read is not known to be ours either: left alone.)
            continue;
        }
        let ours = environ
            .split(|b| *b == 0)
            .any(|entry| entry == group.marker.as_bytes());
        if ours {
            return Ok(Members::Ours);
        }
        found = Members::NotOurs;
    }
    Ok(found)
}

/// Without `/proc` the marker cannot be read: a live group is taken to be ours.
#[cfg(not(target_os = "linux"))]
fn members(group: &LeftGroup) -> io::Result<Members> {
    let alive = std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{}", group.pgid)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?
        .success();
    Ok(if alive { Members::Ours } else { Members::None })
}

/// `setpriv`, if this is Linux and it is installed (looked up once).
fn pdeathsig() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            if !cfg!(target_os = "linux") {
                return None;
            }
            let found = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file());
            if found.is_none() {
                tracing::warn!(
                    target: "steadfast",
                    "setpriv not found: command steps are not killed with the runner; the next start stops what a killed runner left (hint: install util-linux)"
                );
            }
            found
        })
        .as_deref()
}

/// Finds `program` as `exec` would: a path with a slash as is (from `cwd`), a bare name
/// on `PATH`. Not found is `NotFound`, found but not executable `PermissionDenied`.
fn resolve(program: &str, cwd: Option<&Path>, path: Option<&std::ffi::OsStr>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file().then_some(m.permissions().mode() & 0o111 != 0))
            .ok()
            .flatten()
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        let p = Path::new(program);
        vec![match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }]
    } else {
        path.map(|p| std::env::split_paths(p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let mut denied = false;
    for candidate in &candidates {
        match executable(candidate) {
            Some(true) => return Ok(()),
            Some(false) => denied = true,
            None => {}
        }
    }
    if denied {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("program `{program}` is not executable"),
        ));
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("program `{program}` not found"),
    ))
}

type Fork = Box<dyn FnOnce() + Send>;

/// Threads that fork steps: a few, so many steps due on one instant start side by
/// side (a spawn waits for the child's `exec`), and never more (each lives forever).
const FORK_THREADS: usize = 4;

/// Spawns `cmd` from one of the threads that fork every step (see the module docs: the
/// parent-death signal follows the forking thread). The threads live as long as the
/// process; the channels to them are unbounded, but each caller waits for its own
/// spawn, so they hold at most one entry per step being started.
async fn fork_thread(mut cmd: tokio::process::Command) -> io::Result<Child> {
    type Senders = Vec<std::sync::Mutex<std::sync::mpsc::Sender<Fork>>>;
    static FORKS: OnceLock<Senders> = OnceLock::new();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let senders = FORKS.get_or_init(|| {
        (0..FORK_THREADS)
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::channel::<Fork>();
                let spawned = std::thread::Builder::new()
                    .name(format!("steadfast-fork-{i}"))
                    .spawn(move || {
                        while let Ok(fork) = rx.recv() {
                            fork();
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(target: "steadfast", "failed to start a fork thread: {e}");
                }
                std::sync::Mutex::new(tx)
            })
            .collect()
    });
    let handle = tokio::runtime::Handle::current();
    let (done, answer) = tokio::sync::oneshot::channel();
    let fork: Fork = Box::new(move || {
        // tokio's `spawn` registers the child with the runtime's reaper.
        let _entered = handle.enter();
        let _ = done.send(cmd.spawn());
    });
    let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % senders.len();
    senders[i]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(fork)
        .map_err(|_| io::Error::other("the fork thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the fork thread dropped a spawn"))?
}

/// Signals a whole process group. Written with `kill(1)` rather than libc so the crate
/// keeps `forbid(unsafe_code)`; the group id equals the leader's pid
/// (`process_group(0)`).
fn kill_group(pgid: u32, signal: &str) {
    if pgid <= 1 {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> CommandSpec {
        CommandSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: vec![("STEADFAST_RUN_ID".into(), "t-1".into())],
            timeout: Duration::from_secs(30),
            capture_limit_bytes: 1024,
        }
    }

    #[tokio::test]
    async fn a_program_runs_only_after_finish_and_its_output_is_kept() {
        let dir = std::env::temp_dir().join(format!("steadfast-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mark = dir.join("ran");
        let _ = std::fs::remove_file(&mark);
        let s = spec(&["sh", "-c", &format!("touch {}; echo hi", mark.display())]);
        let started = ProcessSpawner.start(&s).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!mark.exists(), "the program ran before it was released");
        let out = started.finish().await.unwrap();
        assert_eq!((out.code, out.stdout), (Some(0), b"hi\n".to_vec()));
        assert!(mark.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_dropped_start_never_runs_its_program() {
        let dir = std::env::temp_dir().join(format!("steadfast-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mark = dir.join("ran");
        let _ = std::fs::remove_file(&mark);
        let s = spec(&["sh", "-c", &format!("touch {}", mark.display())]);
        drop(ProcessSpawner.start(&s).await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!mark.exists(), "a step released by nobody ran");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_program_is_not_found_before_anything_starts() {
        let e = ProcessSpawner
            .start(&spec(&["steadfast-no-such-program"]))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let plain = std::env::temp_dir().join(format!("steadfast-plain-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        let e = ProcessSpawner
            .start(&spec(&[plain.to_str().unwrap()]))
            .await;
        let _ = std::fs::remove_file(&plain);
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }

    #[tokio::test]
    async fn a_left_group_is_stopped_with_its_children_and_a_stranger_is_left_alone() {
        // A step that started a child, then lost its runner (the handle is forgotten,
        // as a killed runner forgets it).
        let s = spec(&["sh", "-c", "sleep 600 & sleep 600"]);
        let started = ProcessSpawner.start(&s).await.unwrap();
        let pgid = started.pgid();
        let mut started = started;
        if let Some(mut gate) = started.gate.take() {
            gate.write_all(b"go\n").await.unwrap();
        }
        started.armed = false;
        std::mem::forget(started);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stranger = LeftGroup {
            pgid,
            marker: "STEADFAST_RUN_ID=someone-else".into(),
        };
        assert_eq!(
            stop_left(&stranger, Duration::from_secs(1)).await.unwrap(),
            Reaped::NotOurs
        );
        let ours = LeftGroup {
            pgid,
            marker: "STEADFAST_RUN_ID=t-1".into(),
        };
        assert_eq!(
            stop_left(&ours, Duration::from_secs(5)).await.unwrap(),
            Reaped::Terminated
        );
        assert!(matches!(members(&ours).unwrap(), Members::None));
        assert_eq!(
            stop_left(&ours, Duration::from_secs(1)).await.unwrap(),
            Reaped::Gone
        );
    }
}
