//! The state files of runners before the store, imported once at start.
//!
//! Older releases kept their state as JSON files in the state directory:
//! `tokens/<credential>.json` (access and rotated refresh tokens),
//! `heartbeat-state.json` (each job's last success, the field report's shape),
//! `checkpoints/<job>.json` (an interrupted run's finished steps) and `breakers.json`
//! (each service's breaker). At the first start of
//! this runner each one is imported into the store and renamed `<file>.migrated`, so an
//! installed runner keeps its tokens (a spent configured refresh token would otherwise
//! be presented, and a provider that detects reuse revokes the whole chain), its
//! heartbeats, its interrupted runs (resumed with the same idempotency keys) and its
//! open breakers (a service that was down is not hammered again after the upgrade).
//!
//! The store always wins: what it already has is newer than any file. A file that does
//! not parse is left where it is and reported without a word of its content (token
//! files hold secrets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Deserialize;

use steadfast_core::breaker::{BreakerState, LEGACY_STATE_FILE};
use steadfast_core::config::Config;
use steadfast_core::db::{BreakerRow, Db, DbError, StepRecord};
use steadfast_core::env::Env;
use steadfast_core::event::{Event, EventKind};
use steadfast_core::job::RunId;
use steadfast_core::store::file_stem;
use steadfast_core::token::legacy;

/// The suffix a migrated file gets.
pub const MIGRATED: &str = "migrated";
/// The older heartbeat file.
pub const HEARTBEAT_FILE: &str = "heartbeat-state.json";
/// At most this many files of one kind are imported per start (the rest at the next).
const MAX_FILES: usize = 10_000;

/// What the migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Credentials whose token file was imported (or found older than the store's).
    pub tokens: Vec<String>,
    /// Jobs whose last success came from the heartbeat file.
    pub heartbeats: Vec<String>,
    /// Interrupted runs imported from checkpoint files (resumed at this start).
    pub runs: Vec<String>,
    /// Services whose breaker came from the older breakers file.
    pub breakers: Vec<String>,
    /// Files left in place: why (never their content).
    pub problems: Vec<String>,
}

/// The older heartbeat file: unix seconds by job.
#[derive(Deserialize)]
struct HeartbeatFile {
    #[serde(rename = "lastChecks", default)]
    last_checks: BTreeMap<String, i64>,
}

/// The older breakers file: each service's breaker.
#[derive(Deserialize)]
struct BreakersFile {
    services: BTreeMap<String, SavedBreaker>,
}

/// One breaker of the older file.
#[derive(Deserialize)]
struct SavedBreaker {
    state: BreakerState,
    until: DateTime<Utc>,
    trips: u32,
    #[serde(default)]
    opened_at: Option<DateTime<Utc>>,
}

/// One finished step of an older checkpoint file.
#[derive(Deserialize)]
struct CompletedStep {
    name: String,
    idempotency_key: String,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    completed_at: DateTime<Utc>,
}

/// An older checkpoint file: an interrupted run and its finished steps.
#[derive(Deserialize)]
struct CheckpointFile {
    run_id: RunId,
    started_at: DateTime<Utc>,
    #[serde(default)]
    completed: Vec<CompletedStep>,
}

/// Imports every older state file under the config's state directory into `db` and
/// renames each imported file `<file>.migrated`.
pub async fn migrate<E: Env>(env: &E, config: &Config, db: &Db<E>) -> Migrated {
    let dir = &config.runner.state_dir;
    let mut out = Migrated::default();
    tokens(env, config, db, dir, &mut out).await;
    heartbeats(env, config, db, dir, &mut out).await;
    checkpoints(env, config, db, dir, &mut out).await;
    breakers(config, db, dir, &mut out).await;
    for p in &out.problems {
        env.emit(Event::new(EventKind::HeartbeatFinding).detail(p.clone()));
    }
    let what = [
        (out.tokens.len(), "token file(s)"),
        (out.heartbeats.len(), "heartbeat(s)"),
        (out.runs.len(), "interrupted run(s)"),
        (out.breakers.len(), "breaker(s)"),
    ];
    if what.iter().any(|(n, _)| *n > 0) {
        let said: Vec<String> = what
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, w)| format!("{n} {w}"))
            .collect();
        tracing::info!(
            target: "steadfast",
            event = "state_migrated",
            "imported {} of an older runner into the store; the files are renamed *.{MIGRATED}",
            said.join(", ")
        );
    }
    out
}

async fn tokens<E: Env>(env: &E, config: &Config, db: &Db<E>, dir: &Path, out: &mut Migrated) {
    // Files are named by the credential's file stem.
    let by_stem: BTreeMap<String, &str> = config
        .credentials
        .keys()
        .map(|name| (file_stem(name), name.as_str()))
        .collect();
    for path in json_files(&dir.join("tokens")) {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some(credential) = by_stem.get(stem) else {
            // Kept for a credential that may come back to the config.
            continue;
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                out.problems
                    .push(format!("{}: cannot read: {e}", path.display()));
                continue;
            }
        };
        match legacy::import(db, credential, &bytes, env.now()).await {
            Ok(_) => {
                rename_migrated(&path, out);
                out.tokens.push(credential.to_string());
            }
            Err(e) => out.problems.push(format!("{}: {e}", path.display())),
        }
    }
}

async fn heartbeats<E: Env>(env: &E, config: &Config, db: &Db<E>, dir: &Path, out: &mut Migrated) {
    let path = dir.join(HEARTBEAT_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let Ok(file) = serde_json::from_slice::<HeartbeatFile>(&bytes) else {
        out.problems.push(format!(
            "{}: an older heartbeat file that does not parse; left in place (jobs count as never succeeded until they do)",
            path.display()
        ));
        return;
    };
    let now = env.now();
    for job in &config.jobs {
        let Some(at) = file
            .last_checks
            .get(&job.name)
            .and_then(|s| DateTime::from_timestamp(*s, 0))
        else {
            continue;
        };
        let name = job.name.clone();
        let imported = async {
            db.register_job(&name, now).await?;
            db.write("import an older heartbeat", move |tx| {
                tx.execute(
                    "UPDATE jobs SET last_ok_at = ?2 WHERE job = ?1 AND (last_ok_at IS NULL OR last_ok_at < ?2)",
                    params![name, at.timestamp_millis()],
                )
            })
            .await
        };
        match imported.await {
            Ok(_) => out.heartbeats.push(job.name.clone()),
            Err(e) => {
                out.problems.push(format!("{}: {e}", path.display()));
                return;
            }
        }
    }
    rename_migrated(&path, out);
}

/// The older breakers file, for the services still configured, when the store has no
/// breakers yet (the store's rows are newer than any file).
async fn breakers<E: Env>(config: &Config, db: &Db<E>, dir: &Path, out: &mut Migrated) {
    let path = dir.join(LEGACY_STATE_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let Ok(file) = serde_json::from_slice::<BreakersFile>(&bytes) else {
        out.problems.push(format!(
            "{}: an older breakers file that does not parse; left in place (the breakers start closed)",
            path.display()
        ));
        return;
    };
    let stored = match db.breakers(1) {
        Ok(rows) => !rows.is_empty(),
        Err(e) => {
            out.problems.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    if !stored {
        let rows: Vec<BreakerRow> = file
            .services
            .into_iter()
            .filter(|(service, _)| config.services.contains_key(service))
            .map(|(service, b)| BreakerRow {
                service,
                state: b.state,
                until: b.until,
                trips: b.trips,
                opened_at: b.opened_at,
            })
            .collect();
        let names = rows.iter().map(|r| r.service.clone()).collect::<Vec<_>>();
        if let Err(e) = db.save_breakers(rows).await {
            out.problems.push(format!("{}: {e}", path.display()));
            return;
        }
        out.breakers = names;
    }
    rename_migrated(&path, out);
}

async fn checkpoints<E: Env>(env: &E, config: &Config, db: &Db<E>, dir: &Path, out: &mut Migrated) {
    for path in json_files(&dir.join("checkpoints")) {
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CheckpointFile>(&b).ok());
        let Some(file) = parsed else {
            out.problems.push(format!(
                "{}: an older checkpoint file that does not parse; left in place (its run is not resumed)",
                path.display()
            ));
            continue;
        };
        let run = file.run_id;
        if !config.jobs.iter().any(|j| j.name == run.job()) {
            continue;
        }
        match import_run(env, db, &run, file.started_at, &file.completed).await {
            Ok(imported) => {
                rename_migrated(&path, out);
                if imported {
                    out.runs.push(run.to_string());
                }
            }
            Err(e) => out.problems.push(format!("{}: {e}", path.display())),
        }
    }
}

/// Records `run` as started with its finished steps, unless the journal already has
/// the slot. Returns whether it was imported.
async fn import_run<E: Env>(
    env: &E,
    db: &Db<E>,
    run: &RunId,
    started_at: DateTime<Utc>,
    completed: &[CompletedStep],
) -> Result<bool, DbError> {
    if db.slot(run)?.is_some() {
        return Ok(false);
    }
    db.register_job(run.job(), env.now()).await?;
    if let Err(e) = db.start_run(run, started_at).await {
        return match e {
            steadfast_core::db::journal::StartError::Db(e) => Err(e),
            steadfast_core::db::journal::StartError::Settled { .. } => Ok(false),
        };
    }
    for step in completed {
        let record = StepRecord {
            name: step.name.clone(),
            idempotency_key: step.idempotency_key.clone(),
            outputs: step.outputs.clone(),
            done_at: step.completed_at,
        };
        db.step_done(run, &record).await?;
    }
    Ok(true)
}

/// `<path>.migrated`, or `<path>.migrated.N` when an earlier migration's file is there
/// (never overwritten).
fn rename_migrated(path: &Path, out: &mut Migrated) {
    let base = format!("{}.{MIGRATED}", path.display());
    let target = (0..100)
        .map(|n| {
            if n == 0 {
                PathBuf::from(&base)
            } else {
                PathBuf::from(format!("{base}.{n}"))
            }
        })
        .find(|p| !p.exists());
    let Some(target) = target else {
        out.problems.push(format!(
            "{}: imported, but too many {MIGRATED} copies to rename it",
            path.display()
        ));
        return;
    };
    if let Err(e) = std::fs::rename(path, &target) {
        out.problems.push(format!(
            "{}: imported, but cannot rename it: {e}",
            path.display()
        ));
    }
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .take(MAX_FILES)
        .collect();
    out.sort();
    out
}
