//! Pattern 2: OAuth2 tokens refreshed before they expire.
//!
//! One [`TokenManager`] per credential, shared by every job that uses it. Before a call,
//! a token expiring within the skew (default 5 min) is refreshed with the
//! `refresh_token` grant; at most one refresh is in flight per credential and concurrent
//! callers wait for it. A rotated refresh token is persisted durably before the new
//! access token is used. `invalid_grant` is fatal. A 401 triggers one reactive refresh.
//! Token values never appear in logs or errors.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::config::CredentialConfig;
use crate::env::Env;
use crate::store::StoreError;
use crate::taxonomy::FailureKind;

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The endpoint rejected the refresh token: a human must re-authorise.
    #[error(
        "refresh token for `{credential}` was rejected (invalid_grant) (hint: re-authorise and update the credential)"
    )]
    InvalidGrant {
        /// The credential's name.
        credential: String,
    },
    /// The endpoint failed (network, 5xx, 429, bad response).
    #[error("token endpoint for `{credential}` failed: {detail}")]
    Endpoint {
        /// The credential's name.
        credential: String,
        /// The taxonomy kind.
        kind: FailureKind,
        /// A lowercase fragment without secrets.
        detail: String,
    },
    /// The rotated token could not be persisted (it was not used).
    #[error("failed to persist token for `{credential}`: {source}")]
    Persist {
        /// The credential's name.
        credential: String,
        /// The store error.
        #[source]
        source: StoreError,
    },
}

impl TokenError {
    /// The taxonomy kind of this failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::InvalidGrant { .. } => FailureKind::InvalidGrant,
            Self::Endpoint { kind, .. } => *kind,
            Self::Persist { source, .. } => source
                .io_error()
                .map(FailureKind::from)
                .unwrap_or(FailureKind::Io),
        }
    }
}

/// The token manager of one credential.
#[derive(Debug)]
pub struct TokenManager<E: Env> {
    _env: E,
}

impl<E: Env> TokenManager<E> {
    /// A manager persisting under `state_dir/tokens/`. With `proactive` off it only
    /// refreshes when there is no token or after a 401 (the naive habit).
    pub fn new(
        env: E,
        config: CredentialConfig,
        state_dir: &Path,
        proactive: bool,
        call_timeout: Duration,
    ) -> Self {
        let _ = (config, state_dir, proactive, call_timeout);
        Self { _env: env }
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        unimplemented!("token")
    }

    /// A token valid for at least the skew (refreshing first if needed).
    pub async fn access_token(&self) -> Result<SecretString, TokenError> {
        unimplemented!("token")
    }

    /// After a 401 with `rejected`: refresh once, unless another caller already did.
    pub async fn refresh_after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> Result<SecretString, TokenError> {
        let _ = rejected;
        unimplemented!("token")
    }

    /// When the current access token expires, if one is held.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        unimplemented!("token")
    }
}
