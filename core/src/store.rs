//! Durable state files: atomic replace and checked reads.
//!
//! Every state file (heartbeats, checkpoints, breakers, tokens) is written the same way:
//! temp file, fsync, rename over the old one, fsync the directory. A crash at any point
//! leaves either the old or the new file, never a torn one. Reads verify the JSON and
//! report a corrupt file instead of trusting it.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::env::FileSystem;

/// Why a state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk refused the write or read.
    #[error("failed to {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file exists but does not parse: torn, truncated or edited by hand.
    #[error(
        "state file {path} is corrupt: {detail} (hint: it was moved aside; the state starts fresh)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The value could not be turned into JSON (a bug, not a disk problem): nothing
    /// was written.
    #[error("failed to serialise the state for {path}: {detail}")]
    Serialize {
        /// The file that was not written.
        path: PathBuf,
        /// What serde said.
        detail: String,
    },
}

impl StoreError {
    /// The underlying I/O error, if any (to classify disk full).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Corrupt { .. } | Self::Serialize { .. } => None,
        }
    }
}

/// Writes `value` as pretty JSON to `path` atomically and durably.
pub async fn write_json<F: FileSystem, T: Serialize>(
    fs: &F,
    path: &Path,
    value: &T,
) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Serialize {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(fs, path, &bytes).await
}

/// Replaces `path` with `bytes`: temp file, fsync, rename, fsync dir.
pub async fn write_atomic<F: FileSystem>(
    fs: &F,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tmp = temp_path(path);
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io {
            op,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        fs.create_dir_all(dir)
            .await
            .map_err(io("create directory", dir))?;
    }
    if let Err(e) = fs.write(&tmp, bytes).await {
        // Do not leave a partial temp file behind on ENOSPC.
        let _ = fs.remove(&tmp).await;
        return Err(io("write", &tmp)(e));
    }
    fs.sync(&tmp).await.map_err(io("sync", &tmp))?;
    fs.rename(&tmp, path).await.map_err(io("rename", path))?;
    if let Some(dir) = path.parent() {
        fs.sync_dir(dir).await.map_err(io("sync directory", dir))?;
    }
    Ok(())
}

/// Reads JSON from `path`. `Ok(None)` when the file does not exist. A file that does not
/// parse is moved aside to `<name>.corrupt` and reported as [`StoreError::Corrupt`].
pub async fn read_json<F: FileSystem, T: DeserializeOwned>(
    fs: &F,
    path: &Path,
) -> Result<Option<T>, StoreError> {
    let bytes = match fs.read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let aside = path.with_extension("corrupt");
            let _ = fs.rename(path, &aside).await;
            Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a name safe as a file name (job, service and credential names).
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
