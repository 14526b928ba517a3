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
    pub run_id: String,
    /// When the run first started.
    pub started_at: DateTime<Utc>,
    /// Steps done, in order.
    pub completed: Vec<CompletedStep>,
}

impl Checkpoint {
    /// A fresh run with nothing done.
    pub fn new(job: &str, run_id: &str, started_at: DateTime<Utc>) -> Self {
        Self {
            job: job.to_string(),
            run_id: run_id.to_string(),
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
pub fn idempotency_key(job: &str, run_id: &str, step: &str) -> String {
    let mut h = Sha256::new();
    for part in [job, run_id, step] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::testkit::TestEnv;

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = idempotency_key("blog", "r1", "publish");
        assert_eq!(a, idempotency_key("blog", "r1", "publish"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, idempotency_key("blog", "r2", "publish"));
        assert_ne!(a, idempotency_key("blog", "r1", "draft"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(
            idempotency_key("ab", "c", "s"),
            idempotency_key("a", "bc", "s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn saved_progress_survives_a_crash_and_clear_forgets_it() {
        let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
        let cps = Checkpoints::new(env.clone(), Path::new("/state"));
        let mut cp = Checkpoint::new("blog", "r1", env.now());
        cp.completed.push(CompletedStep {
            name: "draft".into(),
            idempotency_key: idempotency_key("blog", "r1", "draft"),
            outputs: BTreeMap::from([("id".into(), "42".into())]),
            completed_at: env.now(),
        });
        cps.save(&cp).await.unwrap();
        env.parts().fs.crash();
        let back = cps.load("blog").await.unwrap().unwrap();
        assert_eq!(back, cp);
        assert_eq!(back.done("draft").unwrap().outputs["id"], "42");
        cps.clear("blog").await.unwrap();
        env.parts().fs.crash();
        assert_eq!(cps.load("blog").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unsynced_write_is_lost_but_the_atomic_one_is_not() {
        let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
        let fs = env.fs();
        fs.write(Path::new("/state/checkpoints/x.json"), b"{}")
            .await
            .unwrap();
        env.parts().fs.crash();
        assert!(
            fs.read(Path::new("/state/checkpoints/x.json"))
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_corrupt_checkpoint_is_reported_and_moved_aside() {
        let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
        let cps = Checkpoints::new(env.clone(), Path::new("/state"));
        let path = Path::new("/state/checkpoints/blog.json");
        env.fs()
            .write(path, b"{\"job\": \"blog\", \"run_")
            .await
            .unwrap();
        let err = cps.load("blog").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(cps.load("blog").await.unwrap(), None);
        assert!(
            env.parts()
                .fs
                .contents(Path::new("/state/checkpoints/blog.corrupt"))
                .is_some()
        );
    }
}
