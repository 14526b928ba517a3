//! `runner status`: what the state directory says, read without a running daemon.
//!
//! Read-only: a corrupt file is reported here, never moved aside (that is the
//! daemon's job when it next starts). Token files are read for their expiry only; the
//! token values are never deserialised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lock::StateLock;
use super::status_file::{self, StatusFile};
use steadfast_core::breaker::BreakerState;
use steadfast_core::config::Config;
use steadfast_core::db::MissReason;
use steadfast_core::state_machine::TaskState;
use steadfast_core::store::file_stem;

use crate::env::tokio::{DB_FILE, FileDb};

/// What the state files hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateFiles {
    /// Job -> last success.
    pub last_success: BTreeMap<String, DateTime<Utc>>,
    /// Service -> (state, open until).
    pub breakers: BTreeMap<String, BreakerInfo>,
    /// Credential file stem -> access-token expiry.
    pub token_expiry: BTreeMap<String, DateTime<Utc>>,
    /// Service -> its gate in the store (no call before; why).
    pub gates: BTreeMap<String, GateInfo>,
    /// Job -> its open run (interrupted, failed or deferred) in the journal.
    pub open_runs: BTreeMap<String, OpenRun>,
    /// What the daemon last wrote of its jobs (state, failure streaks).
    pub jobs: Option<StatusFile>,
    /// Missed slots, resumed runs and journaled process groups, from the store.
    pub journal: JournalCounts,
    /// Files that could not be read or parsed (path: why).
    pub problems: Vec<String>,
}

/// What the journal counts, for `status` and `/metrics`: over the journal's retention
/// (90 days), not since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JournalCounts {
    /// Job -> reason -> slots recorded missed.
    pub missed: BTreeMap<String, BTreeMap<String, u64>>,
    /// Job -> runs started more than once (interrupted by a crash, a stop or a failed
    /// attempt, then resumed), finished or not.
    pub resumed: BTreeMap<String, u64>,
    /// Job -> runs started and not finished.
    pub open: BTreeMap<String, u64>,
    /// Command steps' process groups journaled as running.
    pub processes: Vec<JournaledProcess>,
}

/// A command step's process group in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournaledProcess {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step: String,
    /// Its process group id.
    pub pgid: u32,
}

impl JournalCounts {
    /// Reads the counts from the store of `state_dir` (read-only, beside a daemon).
    pub fn read(state_dir: &Path) -> rusqlite::Result<Self> {
        let conn = FileDb::open_read_only(state_dir)?;
        let mut out = Self::default();
        let mut missed = conn.prepare(
            "SELECT job, reason, SUM(slot_count) FROM slots WHERE state = 'missed' GROUP BY job, reason",
        )?;
        for row in missed.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (job, reason, n) = row?;
            out.missed
                .entry(job)
                .or_default()
                .insert(reason.unwrap_or_else(|| "unknown".into()), n.max(0) as u64);
        }
        let mut runs = conn.prepare(
            "SELECT job, SUM(CASE WHEN attempt > 1 THEN 1 ELSE 0 END), SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END)
             FROM slots WHERE state <> 'missed' GROUP BY job",
        )?;
        for row in runs.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (job, resumed, open) = row?;
            if resumed > 0 {
                out.resumed.insert(job.clone(), resumed as u64);
            }
            if open > 0 {
                out.open.insert(job, open as u64);
            }
        }
        let mut procs = conn.prepare(
            "SELECT job, due, step, pgid FROM processes ORDER BY job, due, step LIMIT 1000",
        )?;
        for row in procs.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })? {
            let (job, due, step, pgid) = row?;
            let Some(due) = DateTime::from_timestamp_millis(due) else {
                continue;
            };
            out.processes.push(JournaledProcess {
                run_id: steadfast_core::job::RunId::new(&job, due).to_string(),
                step,
                pgid: pgid.clamp(0, i64::from(u32::MAX)) as u32,
            });
        }
        Ok(out)
    }

    /// Slots of `job` missed for reasons that are losses (not its own window).
    pub fn lost(&self, job: &str) -> u64 {
        self.missed
            .get(job)
            .map(|m| {
                m.iter()
                    .filter(|(reason, _)| reason.as_str() != MissReason::Window.as_str())
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// A run the journal has as started and not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenRun {
    /// The run id.
    pub run_id: String,
    /// The steps it finished.
    pub steps_done: Vec<String>,
}

/// One service's gate as stored: no call before `not_before`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateInfo {
    /// No call to the service before this.
    pub not_before: DateTime<Utc>,
    /// What set it: `retry_after`, `quota_reset` or `breaker_open`.
    pub reason: String,
}

/// One breaker as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerInfo {
    /// Its state.
    pub state: BreakerState,
    /// Open (or half-open) until.
    pub until: Option<DateTime<Utc>>,
}

/// Only the expiry of a token file: the other fields (the secrets) are skipped unread.
#[derive(Deserialize)]
struct TokenExpiry {
    expires_at: DateTime<Utc>,
}

fn read<T: serde::de::DeserializeOwned>(path: &Path, problems: &mut Vec<String>) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            // serde's message may quote the content; say only where.
            problems.push(format!(
                "{}: corrupt at line {} column {} (the daemon moves it aside and starts fresh)",
                path.display(),
                e.line(),
                e.column()
            ));
            None
        }
    }
}

fn json_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    out.sort();
    out
}

impl StateFiles {
    /// Reads every state file under `state_dir`, and the store's journal.
    pub fn read(state_dir: &Path) -> Self {
        let mut s = Self::default();
        if state_dir.join(DB_FILE).exists()
            && let Err(e) = s.read_store(state_dir)
        {
            s.problems
                .push(format!("{}: {e}", state_dir.join(DB_FILE).display()));
        }
        for (stem, path) in json_files(&state_dir.join("tokens")) {
            if let Some(t) = read::<TokenExpiry>(&path, &mut s.problems) {
                // The store's chain is newer than an older runner's file.
                s.token_expiry.entry(stem).or_insert(t.expires_at);
            }
        }
        s.jobs = read::<StatusFile>(&status_file::path(state_dir), &mut s.problems);
        s
    }

    /// Last good runs and open runs, from the store (read-only, beside a daemon).
    fn read_store(&mut self, state_dir: &Path) -> rusqlite::Result<()> {
        let conn = FileDb::open_read_only(state_dir)?;
        // The daemon refuses a damaged file at start (exit 4); say so here too, rather
        // than show what the undamaged pages happen to hold.
        let verdict: String = conn.query_row("PRAGMA quick_check(5)", [], |r| r.get(0))?;
        if verdict != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!(
                    "corrupt ({verdict}); the daemon refuses to start on it (hint: restore it from a backup)"
                )),
            ));
        }
        let mut gates =
            conn.prepare("SELECT service, not_before, reason FROM gates ORDER BY service")?;
        let rows = gates.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (service, ms, reason) = row?;
            if let Some(not_before) = DateTime::from_timestamp_millis(ms) {
                self.gates.insert(service, GateInfo { not_before, reason });
            }
        }
        drop(gates);
        let mut breakers = conn.prepare(
            "SELECT service, state, until_at FROM breakers WHERE state <> 'closed' ORDER BY service",
        )?;
        let rows = breakers.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (service, state, ms) = row?;
            if let Some(state) = BreakerState::parse(&state) {
                let until = DateTime::from_timestamp_millis(ms);
                self.breakers.insert(service, BreakerInfo { state, until });
            }
        }
        drop(breakers);
        let mut jobs =
            conn.prepare("SELECT job, last_ok_at FROM jobs WHERE last_ok_at IS NOT NULL")?;
        for row in jobs.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (job, ms) = row?;
            if let Some(at) = DateTime::from_timestamp_millis(ms) {
                self.last_success.insert(job, at);
            }
        }
        let mut open = conn.prepare(
            "SELECT s.job, s.due, (SELECT GROUP_CONCAT(step, ',') FROM steps t WHERE t.job = s.job AND t.due = s.due)
             FROM slots s WHERE s.state = 'running' ORDER BY s.due",
        )?;
        for row in open.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })? {
            let (job, due, steps) = row?;
            let Some(due) = DateTime::from_timestamp_millis(due) else {
                continue;
            };
            let run_id = steadfast_core::job::RunId::new(&job, due).to_string();
            let steps_done = steps
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            self.open_runs
                .entry(job)
                .or_insert(OpenRun { run_id, steps_done });
        }
        self.journal = JournalCounts::read(state_dir)?;
        // Access-token expiries (never the tokens), by credential file stem.
        let mut tokens =
            conn.prepare("SELECT credential, expires_at FROM tokens WHERE expires_at IS NOT NULL")?;
        for row in tokens.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (credential, ms) = row?;
            if let Some(at) = DateTime::from_timestamp_millis(ms) {
                self.token_expiry.insert(file_stem(&credential), at);
            }
        }
        Ok(())
    }
}

/// One job's row.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// The job.
    pub job: String,
    /// State machine state, while a daemon runs (`None` otherwise).
    pub state: Option<TaskState>,
    /// Failed runs in a row, as the daemon last wrote them (`None` before it ever did).
    pub consecutive_failures: Option<u32>,
    /// `ok`, `overdue` or `never` (no success recorded yet).
    pub heartbeat: &'static str,
    /// Last success.
    pub last_success: Option<DateTime<Utc>>,
    /// Next due time (if the daemon runs; an interrupted run resumes at start).
    pub next_run: Option<DateTime<Utc>>,
    /// An unfinished run: its id and the steps it completed.
    pub interrupted_run: Option<String>,
    /// Steps the unfinished run completed.
    pub steps_done: Vec<String>,
    /// Slots recorded missed, by reason (`downtime`, `overlap`, `window`, `stopped`).
    pub missed: BTreeMap<String, u64>,
    /// Runs started more than once (interrupted, then resumed).
    pub resumed_runs: u64,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When it was computed.
    pub at: DateTime<Utc>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Whether a daemon holds the state directory's lock.
    pub daemon_running: bool,
    /// One row per job.
    pub jobs: Vec<JobRow>,
    /// Service -> breaker.
    pub breakers: BTreeMap<String, BreakerInfo>,
    /// Service -> its gate, for the services whose gate is closed now.
    pub gates: BTreeMap<String, GateInfo>,
    /// Credential -> access-token expiry (never the token).
    pub tokens: BTreeMap<String, Option<DateTime<Utc>>>,
    /// Command steps' process groups journaled as running by a runner that is not
    /// running now (it was killed): the next start stops them before any step runs.
    pub left_processes: Vec<JournaledProcess>,
    /// Unreadable or corrupt state files, slots lost, processes left by a killed runner.
    pub problems: Vec<String>,
}

/// The journal's findings a human should see: slots lost (not skipped by the job's own
/// window), and process groups a killed runner left.
fn journal_problems(config: &Config, journal: &JournalCounts, daemon_running: bool) -> Vec<String> {
    let mut out = Vec::new();
    for job in &config.jobs {
        let lost = journal.lost(&job.name);
        if lost == 0 {
            continue;
        }
        let reasons: Vec<String> = journal.missed[&job.name]
            .iter()
            .filter(|(reason, _)| reason.as_str() != MissReason::Window.as_str())
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect();
        out.push(format!(
            "job `{}`: {lost} slot(s) missed in the journal ({}) (hint: `catch_up` and `catch_up_window` decide which slots a restart runs)",
            job.name,
            reasons.join(", ")
        ));
    }
    if !daemon_running {
        for p in &journal.processes {
            out.push(format!(
                "process group {} (run {}, step `{}`) was running when the runner stopped without a clean shutdown; the next start stops it before the step runs again",
                p.pgid, p.run_id, p.step
            ));
        }
    }
    out
}

impl Status {
    /// The status of `config`'s jobs at `now` from the files under its state directory.
    pub fn compute(config: &Config, files: StateFiles, now: DateTime<Utc>) -> Self {
        let state_dir = config.runner.state_dir.clone();
        let daemon_running = StateLock::is_held(&state_dir);
        let jobs = config
            .jobs
            .iter()
            .map(|job| {
                let last = files.last_success.get(&job.name).copied();
                let heartbeat = match last {
                    None => "never",
                    Some(t) if (now - t).to_std().unwrap_or_default() > job.heartbeat_threshold => {
                        "overdue"
                    }
                    Some(_) => "ok",
                };
                let saved = files.jobs.as_ref().and_then(|f| f.jobs.get(&job.name));
                let live = saved.filter(|_| daemon_running);
                // The daemon's own next run (start jitter included) while it runs.
                let next_run = live
                    .and_then(|s| s.next_run)
                    .or_else(|| Some(job.schedule.next_after(now)));
                let open = files.open_runs.get(&job.name);
                JobRow {
                    job: job.name.clone(),
                    state: live.map(|s| s.state),
                    consecutive_failures: saved.map(|s| s.consecutive_failures),
                    heartbeat,
                    last_success: last,
                    next_run,
                    interrupted_run: open.map(|o| o.run_id.clone()),
                    steps_done: open.map(|o| o.steps_done.clone()).unwrap_or_default(),
                    missed: files
                        .journal
                        .missed
                        .get(&job.name)
                        .cloned()
                        .unwrap_or_default(),
                    resumed_runs: files.journal.resumed.get(&job.name).copied().unwrap_or(0),
                }
            })
            .collect();
        let mut problems = files.problems;
        problems.extend(journal_problems(config, &files.journal, daemon_running));
        let mut breakers: BTreeMap<String, BreakerInfo> = config
            .services
            .keys()
            .map(|s| {
                (
                    s.clone(),
                    BreakerInfo {
                        state: BreakerState::Closed,
                        until: None,
                    },
                )
            })
            .collect();
        for (name, info) in files.breakers {
            if breakers.contains_key(&name) {
                breakers.insert(name, info);
            }
        }
        let tokens = config
            .credentials
            .keys()
            .map(|c| (c.clone(), files.token_expiry.get(&file_stem(c)).copied()))
            .collect();
        let gates = files
            .gates
            .into_iter()
            .filter(|(s, g)| config.services.contains_key(s) && g.not_before > now)
            .collect();
        Self {
            at: now,
            daemon_running,
            state_dir,
            jobs,
            breakers,
            gates,
            tokens,
            left_processes: if daemon_running {
                Vec::new()
            } else {
                files.journal.processes.clone()
            },
            problems,
        }
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let t = |d: &Option<DateTime<Utc>>| {
            d.map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_else(|| "-".into())
        };
        let mut out = String::new();
        out.push_str(&format!(
            "state dir: {} (daemon {})\n\n",
            self.state_dir.display(),
            if self.daemon_running {
                "running"
            } else {
                "not running"
            }
        ));
        let mut rows = vec![[
            "JOB".to_string(),
            "STATE".into(),
            "HEARTBEAT".into(),
            "FAILURES".into(),
            "MISSED".into(),
            "RESUMED".into(),
            "LAST SUCCESS".into(),
            "NEXT RUN".into(),
            "INTERRUPTED RUN".into(),
        ]];
        for j in &self.jobs {
            let interrupted = match &j.interrupted_run {
                Some(id) => format!("{id} ({} step(s) done)", j.steps_done.len()),
                None => "-".into(),
            };
            let next = if j.interrupted_run.is_some() {
                "at start (resume)".to_string()
            } else {
                t(&j.next_run)
            };
            rows.push([
                j.job.clone(),
                j.state.map_or("-", TaskState::as_str).into(),
                j.heartbeat.into(),
                j.consecutive_failures
                    .map_or_else(|| "-".to_string(), |n| n.to_string()),
                j.missed.values().sum::<u64>().to_string(),
                j.resumed_runs.to_string(),
                t(&j.last_success),
                next,
                interrupted,
            ]);
        }
        push_table(&mut out, &rows);
        if !self.breakers.is_empty() {
            out.push('\n');
            let mut rows = vec![["SERVICE".to_string(), "BREAKER".into(), "UNTIL".into()]];
            for (name, b) in &self.breakers {
                let until = if b.state == BreakerState::Closed {
                    "-".into()
                } else {
                    t(&b.until)
                };
                rows.push([name.clone(), b.state.as_str().into(), until]);
            }
            push_table(&mut out, &rows);
        }
        if !self.gates.is_empty() {
            out.push('\n');
            let mut rows = vec![[
                "SERVICE".to_string(),
                "NO CALL BEFORE".into(),
                "BECAUSE".into(),
            ]];
            for (name, g) in &self.gates {
                rows.push([name.clone(), t(&Some(g.not_before)), g.reason.clone()]);
            }
            push_table(&mut out, &rows);
        }
        if !self.tokens.is_empty() {
            out.push('\n');
            let mut rows = vec![["CREDENTIAL".to_string(), "TOKEN EXPIRES".into()]];
            for (name, exp) in &self.tokens {
                let text = match exp {
                    Some(e) if *e <= self.at => format!("{} (expired)", t(&Some(*e))),
                    Some(e) => t(&Some(*e)),
                    None => "no token yet".into(),
                };
                rows.push([name.clone(), text]);
            }
            push_table(&mut out, &rows);
        }
        for p in &self.problems {
            out.push_str(&format!("\nwarning: {p}"));
        }
        if !self.problems.is_empty() {
            out.push('\n');
        }
        out
    }
}

fn push_table<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::OsSecrets;
    use chrono::TimeZone;
    use steadfast_core::config::parse_config;

    #[test]
    fn status_reads_every_state_file_and_never_a_token() {
        let dir = std::env::temp_dir().join(format!("steadfast-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let text = format!(
            "[runner]\nstate_dir = \"{}\"\n[services.api]\n[credentials.google]\ntoken_url = \"https://x/token\"\nclient_id = \"c\"\nrefresh_token = \"r-123456\"\n[[jobs]]\nname = \"a\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n[[jobs]]\nname = \"b\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n",
            dir.display()
        );
        let config = parse_config(&text, &dir.join("runner.toml"), &OsSecrets).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 30).unwrap();
        // The journal: a's last good run 30 s ago, b's an hour ago.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let env = crate::env::tokio::TokioEnv::new();
            let db = steadfast_core::db::Db::open(env, &dir).await.unwrap();
            for (job, ago) in [("a", 30), ("b", 3600)] {
                let at = now - chrono::Duration::seconds(ago);
                db.register_job(job, at).await.unwrap();
                let run = steadfast_core::job::RunId::new(job, at);
                db.start_run(&run, at).await.unwrap();
                db.finish_run(&run, steadfast_core::event::Outcome::Succeeded, None, at)
                    .await
                    .unwrap();
            }
            let open = steadfast_core::db::BreakerRow {
                service: "api".to_string(),
                state: BreakerState::Open,
                until: Utc.with_ymd_and_hms(2026, 3, 2, 10, 5, 0).unwrap(),
                trips: 1,
                opened_at: Some(now),
            };
            db.save_breakers(vec![open]).await.unwrap();
        });
        std::fs::write(
            dir.join("tokens/google.json"),
            "{\"access_token\":\"SECRET-ACCESS\",\"expires_at\":\"2026-03-02T11:00:00Z\",\"refresh_token\":\"SECRET-REFRESH\"}",
        )
        .unwrap();
        std::fs::write(dir.join("tokens/other.json"), "{not json").unwrap();
        std::fs::write(
            dir.join(status_file::FILE),
            "{\"written_at\":\"2026-03-02T10:00:00Z\",\"jobs\":{\"a\":{\"state\":\"running\",\"last_outcome\":\"failed\",\"next_run\":null,\"consecutive_failures\":3}}}",
        )
        .unwrap();
        let status = Status::compute(&config, StateFiles::read(&dir), now);
        assert_eq!(status.jobs[0].heartbeat, "ok");
        assert_eq!(status.jobs[1].heartbeat, "overdue");
        assert_eq!(
            status.jobs[0].next_run,
            Some(Utc.with_ymd_and_hms(2026, 3, 2, 10, 1, 0).unwrap())
        );
        // No daemon holds the lock: the written state is stale, the streak is not.
        assert_eq!(status.jobs[0].state, None);
        assert_eq!(status.jobs[0].consecutive_failures, Some(3));
        assert_eq!(status.jobs[1].consecutive_failures, None);
        assert_eq!(status.breakers["api"].state, BreakerState::Open);
        assert!(status.tokens["google"].is_some());
        assert_eq!(status.problems.len(), 1, "{:?}", status.problems);
        let table = status.table();
        let json = serde_json::to_string(&status).unwrap();
        for out in [&table, &json] {
            assert!(!out.contains("SECRET"), "{out}");
        }
        assert!(
            table.contains("overdue") && table.contains("open"),
            "{table}"
        );
        // Read-only: the corrupt file is still where it was.
        assert!(dir.join("tokens/other.json").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn status_shows_the_gates_the_store_holds() {
        let dir = std::env::temp_dir().join(format!("steadfast-gates-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            "[runner]\nstate_dir = \"{}\"\n[services.api]\n[services.other]\n[[jobs]]\nname = \"a\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nurl = \"http://127.0.0.1:9/x\"\nservice = \"api\"\n",
            dir.display()
        );
        let config = parse_config(&text, &dir.join("runner.toml"), &OsSecrets).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The daemon's gate for `api`: a Retry-After of an hour, in the store.
        let until = rt.block_on(async {
            let env = crate::env::tokio::TokioEnv::new();
            let db = steadfast_core::db::Db::open(env.clone(), &dir)
                .await
                .unwrap();
            let gates = steadfast_core::retry::Gates::new(env.clone(), std::sync::Arc::new(db));
            let until = steadfast_core::env::Env::now(&env) + chrono::Duration::hours(1);
            gates
                .hold("api", until, "retry_after")
                .await
                .unwrap()
                .not_before
        });
        let now = until - chrono::Duration::minutes(30);
        let status = Status::compute(&config, StateFiles::read(&dir), now);
        assert_eq!(status.gates.len(), 1, "{:?}", status.gates);
        assert_eq!(status.gates["api"].reason, "retry_after");
        let table = status.table();
        assert!(
            table.contains("NO CALL BEFORE") && table.contains("retry_after"),
            "{table}"
        );
        // Once it has passed, it is not shown.
        let later = Status::compute(&config, StateFiles::read(&dir), until);
        assert!(later.gates.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod journal_tests {
    use super::*;
    use crate::secrets::OsSecrets;
    use chrono::TimeZone;
    use steadfast_core::config::parse_config;
    use steadfast_core::db::MissReason;
    use steadfast_core::event::Outcome;
    use steadfast_core::job::RunId;

    /// Issue 10: missed slots vanished with no count. `status` (and `/metrics`, which
    /// reads the same counts) shows them per job and reason, the runs resumed after an
    /// interruption, and the process groups a killed runner left.
    #[test]
    fn status_counts_missed_slots_resumed_runs_and_left_processes_from_the_journal() {
        let dir =
            std::env::temp_dir().join(format!("steadfast-journal-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            "[runner]\nstate_dir = \"{}\"\n[[jobs]]\nname = \"a\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n[[jobs]]\nname = \"b\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n",
            dir.display()
        );
        let config = parse_config(&text, &dir.join("runner.toml"), &OsSecrets).unwrap();
        let t = |m: u32| Utc.with_ymd_and_hms(2026, 3, 2, 10, m, 0).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let env = crate::env::tokio::TokioEnv::new();
            let db = steadfast_core::db::Db::open(env, &dir).await.unwrap();
            db.register_job("a", t(0)).await.unwrap();
            db.register_job("b", t(0)).await.unwrap();
            // a: 5 slots lost to downtime, 1 to overlap, 2 skipped by its window.
            db.record_missed("a", t(1), t(5), 5, MissReason::Downtime, t(6))
                .await
                .unwrap();
            db.record_missed("a", t(7), t(7), 1, MissReason::Overlap, t(7))
                .await
                .unwrap();
            db.record_missed("a", t(8), t(9), 2, MissReason::Window, t(9))
                .await
                .unwrap();
            // a's 10:06 run was interrupted and resumed, then finished.
            let run = RunId::new("a", t(6));
            db.start_run(&run, t(6)).await.unwrap();
            db.start_run(&run, t(6)).await.unwrap();
            db.finish_run(&run, Outcome::Succeeded, None, t(6))
                .await
                .unwrap();
            // b's 10:10 run was running a command when its runner was killed.
            let run = RunId::new("b", t(10));
            db.start_run(&run, t(10)).await.unwrap();
            db.process_started(&run, "s", 4242, t(10)).await.unwrap();
        });
        let status = Status::compute(&config, StateFiles::read(&dir), t(11));
        assert_eq!(
            status.jobs[0].missed,
            BTreeMap::from([
                ("downtime".to_string(), 5),
                ("overlap".to_string(), 1),
                ("window".to_string(), 2)
            ])
        );
        assert_eq!(status.jobs[0].resumed_runs, 1);
        assert!(status.jobs[1].missed.is_empty());
        assert_eq!(
            status.jobs[1].interrupted_run.as_deref(),
            Some("b-20260302T101000Z")
        );
        assert_eq!(status.left_processes.len(), 1);
        assert_eq!(status.left_processes[0].pgid, 4242);
        // Lost slots (not the window's) and the left group are problems, by name.
        assert_eq!(status.problems.len(), 2, "{:?}", status.problems);
        assert!(
            status.problems[0].contains("job `a`: 6 slot(s) missed")
                && status.problems[0].contains("downtime: 5, overlap: 1"),
            "{:?}",
            status.problems
        );
        assert!(
            status.problems[1].contains("process group 4242"),
            "{:?}",
            status.problems
        );
        let table = status.table();
        assert!(
            table.contains("MISSED") && table.contains("RESUMED"),
            "{table}"
        );
        // /metrics reads the same journal.
        let metrics = crate::daemon::metrics::Metrics::new();
        metrics.attach_journal(&dir);
        use steadfast_core::env::EventSink as _;
        metrics.emit(
            steadfast_core::event::Event::new(steadfast_core::event::EventKind::ProcessReaped)
                .job("b")
                .detail("process group 4242 left by a previous runner: terminated"),
        );
        let text = metrics.render(t(11));
        for line in [
            "steadfast_journal_readable 1",
            "steadfast_slots_missed{job=\"a\",reason=\"downtime\"} 5",
            "steadfast_slots_missed{job=\"a\",reason=\"overlap\"} 1",
            "steadfast_runs_resumed{job=\"a\"} 1",
            "steadfast_runs_open{job=\"b\"} 1",
            "steadfast_processes_journaled 1",
            "steadfast_processes_reaped_total{outcome=\"terminated\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
