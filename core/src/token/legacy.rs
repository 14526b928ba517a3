//! Token files of runners before the store (`state_dir/tokens/<name>.json`), read once
//! so an installed runner keeps its rotated refresh tokens when it moves to the store.
//!
//! The daemon's migration reads each file and hands it to [`import`]; the store keeps
//! what it already has (it is newer than any file). A file that does not parse is
//! reported without a word of its content: it holds secrets.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::db::{Db, DbError, StoredToken};
use crate::env::Env;
use secrecy::SecretString;

/// Why a token file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not a token file (its content is not quoted: it holds secrets).
    #[error(
        "token file of `{credential}` does not parse (hint: leave it for a human; the configured refresh token is used)"
    )]
    Corrupt {
        /// The credential.
        credential: String,
    },
    /// The store refused the write.
    #[error("failed to import the token of `{credential}`: {source}")]
    Store {
        /// The credential.
        credential: String,
        /// The store's error.
        #[source]
        source: DbError,
    },
}

/// The file's shape, exactly as older runners wrote it. Not `Debug`: it holds secrets.
#[derive(Deserialize)]
struct TokenFile {
    access_token: String,
    expires_at: DateTime<Utc>,
    refresh_token: String,
    #[serde(default)]
    configured_sha256: Option<String>,
}

/// Parses an older runner's token file.
pub fn parse(credential: &str, bytes: &[u8]) -> Result<StoredToken, ImportError> {
    let corrupt = || ImportError::Corrupt {
        credential: credential.to_string(),
    };
    let file: TokenFile = serde_json::from_slice(bytes).map_err(|_| corrupt())?;
    if file.refresh_token.is_empty() {
        return Err(corrupt());
    }
    let access = (!file.access_token.is_empty()).then(|| SecretString::from(file.access_token));
    Ok(StoredToken {
        expires_at: access.as_ref().map(|_| file.expires_at),
        access_token: access,
        refresh_token: SecretString::from(file.refresh_token),
        configured_sha256: file.configured_sha256,
    })
}

/// Imports an older runner's token file of `credential` into the store, unless the
/// store already has a chain for it. Returns whether it was imported.
pub async fn import<E: Env>(
    db: &Db<E>,
    credential: &str,
    bytes: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, ImportError> {
    let token = parse(credential, bytes)?;
    db.import_token(credential, &token, now)
        .await
        .map_err(|source| ImportError::Store {
            credential: credential.to_string(),
            source,
        })
}
