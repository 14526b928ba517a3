//! One daemon per state directory: two would race on the same heartbeat, checkpoint
//! and token files (and rotate each other's refresh tokens into oblivion).
//!
//! An OS advisory lock on `state_dir/runner.lock`, held for the life of the process.
//! The kernel drops it when the process dies, even by `kill -9`, so a crash never
//! leaves a stale lock for a human to delete.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name under the state directory.
pub const LOCK_FILE: &str = "runner.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another runner is using {dir}{pid} (hint: stop it first, or give this config its own state_dir)"
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// ` (pid N)` when the holder wrote it.
        pid: String,
    },
    /// The file could not be created or locked.
    #[error(
        "failed to lock {path}: {source} (hint: the state directory must be creatable and writable by this user; set [runner] state_dir)"
    )]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock of `state_dir` (created if missing) without waiting.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text
                    .trim()
                    .parse::<u32>()
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default();
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether some process holds the lock of `state_dir` now (for `runner status`).
    pub fn is_held(state_dir: &Path) -> bool {
        let Ok(file) = File::open(state_dir.join(LOCK_FILE)) else {
            return false;
        };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_until_the_first_drops() {
        let dir = std::env::temp_dir().join(format!("steadfast-lock-{}", std::process::id()));
        let first = StateLock::acquire(&dir).unwrap();
        assert!(StateLock::is_held(&dir));
        let err = StateLock::acquire(&dir).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!StateLock::is_held(&dir));
        let again = StateLock::acquire(&dir);
        assert!(again.is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
