//! Pattern 5: checkpoints. A run is a sequence of named steps; after each completed step
//! its outputs are persisted atomically, and the next run after a failure or crash
//! resumes after the last completed step. Each step has an idempotency key, sent to the
//! service, so a step whose side effect happened just before a crash is not repeated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::env::{Env, FileSystem};
use crate::job::RunId;
use crate::store::{self, StoreError};

/// One completed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedStep {
    /// The step's name.
    pub name: String,
    /// The key sent with the step's side effect.
    pub idempotency_key: String,
    /// Values later steps may use.
    pub outputs: BTreeMap<String, String>,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
}

/// The progress of one run of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The job.
    pub job: String,
    /// The run (kept when resumed).
    pub run_id: RunId,
    /// When the run first started.
    pub started_at: DateTime<Utc>,
    /// Steps done, in order.
    pub completed: Vec<CompletedStep>,
}

impl Checkpoint {
    /// A fresh run with nothing done.
    pub fn new(run_id: &RunId, started_at: DateTime<Utc>) -> Self {
        Self {
            job: run_id.job().to_string(),
            run_id: run_id.clone(),
            started_at,
            completed: Vec::new(),
        }
    }

    /// The completed step named `step`, if it is done.
    pub fn done(&self, step: &str) -> Option<&CompletedStep> {
        self.completed.iter().find(|c| c.name == step)
    }
}

/// The stable idempotency key of one step of one run.
pub fn idempotency_key(run: &RunId, step: &str) -> String {
    let mut h = Sha256::new();
    for part in [run.job(), &run.to_string(), step] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(32);
    for b in &h.finalize()[..16] {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}

/// Checkpoint files of all jobs, under `state_dir/checkpoints/`.
#[derive(Debug, Clone)]
pub struct Checkpoints<E: Env> {
    env: E,
    dir: PathBuf,
}

impl<E: Env> Checkpoints<E> {
    /// Checkpoints under `state_dir`.
    pub fn new(env: E, state_dir: &Path) -> Self {
        Self {
            env,
            dir: state_dir.join("checkpoints"),
        }
    }

    fn path(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{}.json", store::file_stem(job)))
    }

    /// The unfinished run of `job`, if any.
    pub async fn load(&self, job: &str) -> Result<Option<Checkpoint>, StoreError> {
        let cp: Option<Checkpoint> = store::read_json(self.env.fs(), &self.path(job)).await?;
        Ok(cp.filter(|c| c.job == job))
    }

    /// Persists progress durably.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        store::write_json(self.env.fs(), &self.path(&checkpoint.job), checkpoint).await
    }

    /// Forgets the run of `job` (it finished).
    pub async fn clear(&self, job: &str) -> Result<(), StoreError> {
        let path = self.path(job);
        self.env
            .fs()
            .remove(&path)
            .await
            .map_err(|source| StoreError::Io {
                op: "remove",
                path: path.clone(),
                source,
            })?;
        match self.env.fs().sync_dir(&self.dir).await {
            // No checkpoint was ever written: there is nothing to make durable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|source| StoreError::Io {
                op: "sync directory",
                path: self.dir.clone(),
                source,
            }),
        }
    }
}
