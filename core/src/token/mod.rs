//! Pattern 2: OAuth2 tokens refreshed before they expire, their chain kept in the store.
//!
//! One [`TokenManager`] per credential, shared by every job that uses it. Before a call,
//! a token expiring within the skew (default 5 min) is refreshed with the
//! `refresh_token` grant; a 401 triggers one reactive refresh. At most one refresh is in
//! flight per credential: callers that arrive meanwhile wait for its answer, good or bad,
//! so a failing endpoint is asked once per wave of callers.
//!
//! **A refresh, once sent, completes.** With rotation the endpoint spends the old refresh
//! token the moment it answers; an answer dropped on the floor loses the credential (the
//! next refresh presents a spent token, and the provider revokes the whole family). So a
//! refresh runs in a task of its own, detached from its callers: a run's deadline or a
//! cancelled caller stops the waiting, never the refresh. It has its own timeout
//! (`[credentials.X] refresh_timeout`, 30 s by default), and its answer is committed to
//! the store even when nobody waits any more. The runner waits for a refresh in flight
//! before it stops ([`TokenManager::settle`]).
//!
//! **Nothing is asked that could not be kept.** Before the grant is sent, the store must
//! take a write (the chain and an in-flight mark): on a full disk the refresh token is not
//! spent. The rotated refresh token is committed together with its access token in one
//! transaction before that access token is used. A mark still set at the next start means
//! an answer was lost (the process died between the grant and its commit, the only window
//! no client can close): the runner says so.
//!
//! `invalid_grant` is fatal. Token values never appear in logs, events, errors or
//! `Debug` output.
//!
//! # Layout
//! - [`grant`]: the grant on the wire and what its answers mean.
//! - [`legacy`]: token files of older runners, imported into the store once.

mod grant;
pub mod legacy;

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::config::CredentialConfig;
use crate::db::{Db, DbError, StoredToken};
use crate::env::Env;
use crate::event::{Event, EventKind};
use crate::taxonomy::{ErrorClass, FailureKind};
use grant::{Granted, MAX_LIFETIME};

/// Why a token could not be had. Cheap to clone: every caller waiting for one refresh
/// gets its error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The endpoint rejected the refresh token: a human must re-authorise.
    #[error(
        "refresh token for `{credential}` was rejected (invalid_grant) (hint: re-authorise and update the credential)"
    )]
    InvalidGrant {
        /// The credential's name.
        credential: String,
    },
    /// The endpoint failed (network, 5xx, 429, bad response, no answer in time).
    #[error("token endpoint for `{credential}` failed: {detail}")]
    Endpoint {
        /// The credential's name.
        credential: String,
        /// The taxonomy kind.
        kind: FailureKind,
        /// A lowercase fragment without secrets.
        detail: String,
    },
    /// The store did not take the write a refresh needs: before the grant (nothing was
    /// sent) or of a rotated refresh token (its access token was not used).
    #[error("failed to persist token for `{credential}`: {source}")]
    Persist {
        /// The credential's name.
        credential: String,
        /// The store's error.
        #[source]
        source: Arc<DbError>,
    },
    /// The stored chain could not be read. Nothing was refreshed, so a rotated refresh
    /// token in the store is not overwritten.
    #[error("failed to load token state for `{credential}`: {source}")]
    Load {
        /// The credential's name.
        credential: String,
        /// The store's error.
        #[source]
        source: Arc<DbError>,
    },
}

impl TokenError {
    /// The taxonomy kind of this failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::InvalidGrant { .. } => FailureKind::InvalidGrant,
            Self::Endpoint { kind, .. } => *kind,
            Self::Persist { source, .. } | Self::Load { source, .. } => source.kind(),
        }
    }
}

/// An access token held in memory.
struct Held {
    /// The bearer value.
    access: SecretString,
    /// When the endpoint said it expires.
    expires_at: DateTime<Utc>,
    /// When the proactive check replaces it (`expires_at` minus the skew).
    refresh_at: DateTime<Utc>,
    /// The same instant on the monotonic clock, for a token this process obtained: it
    /// is replaced when either clock says so, so a wall clock stepped back (NTP, a bad
    /// RTC) does not make an expired token look fresh; a sleep is seen by the wall one.
    refresh_mono: Option<tokio::time::Instant>,
}

/// The answer of a refresh, shared by everyone waiting for it (`None` until it comes).
type Answer = Option<Result<SecretString, TokenError>>;

/// The refresh in flight.
struct Flight {
    /// Where its answer appears.
    answer: watch::Receiver<Answer>,
    /// Its task, aborted only when the manager itself goes (the process is stopping).
    task: tokio::task::AbortHandle,
}

/// Everything the manager knows, behind one short-lived lock (never held across an
/// `await`).
struct Cache {
    /// The store has been read (lazily, on first use).
    loaded: bool,
    /// The current access token, if any.
    access: Option<Held>,
    /// The refresh token to present next (rotations replace it).
    refresh: SecretString,
    /// The endpoint said `invalid_grant`: never ask it again in this process.
    revoked: bool,
    /// The refresh in flight, if any.
    flight: Option<Flight>,
}

/// What the manager and its refresh tasks share.
struct Shared<E: Env> {
    env: E,
    config: CredentialConfig,
    db: Arc<Db<E>>,
    /// SHA-256 of the configured refresh token: a stored chain started from another one
    /// is stale (the operator re-authorised) and the configuration wins.
    configured: String,
    /// Pattern 2 on: refresh within the skew of expiry, before any call fails.
    proactive: bool,
    cache: Mutex<Cache>,
}

/// The token manager of one credential.
pub struct TokenManager<E: Env> {
    shared: Arc<Shared<E>>,
}

impl<E: Env> std::fmt::Debug for TokenManager<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: the configuration and the cache hold secrets.
        f.debug_struct("TokenManager")
            .field("name", &self.shared.config.name)
            .field("token_url", &self.shared.config.token_url.to_string())
            .field("proactive", &self.shared.proactive)
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

impl<E: Env> Drop for TokenManager<E> {
    fn drop(&mut self) {
        // Only when the runner itself goes; a stopping runner settles first, so this
        // cuts off a refresh only when the process is dying anyway (a crash in tests).
        if let Some(flight) = self.shared.lock().flight.take() {
            flight.task.abort();
        }
    }
}

impl<E: Env> TokenManager<E> {
    /// A manager keeping its chain in `db`. With `proactive` off it only refreshes when
    /// there is no token or after a 401 (the naive habit).
    pub fn new(env: E, config: CredentialConfig, db: Arc<Db<E>>, proactive: bool) -> Self {
        let cache = Cache {
            loaded: false,
            access: None,
            refresh: config.refresh_token.clone(),
            revoked: false,
            flight: None,
        };
        Self {
            shared: Arc::new(Shared {
                configured: fingerprint(&config.refresh_token),
                env,
                config,
                db,
                proactive,
                cache: Mutex::new(cache),
            }),
        }
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// A token valid for at least the skew (refreshing first if needed).
    pub async fn access_token(&self) -> Result<SecretString, TokenError> {
        let answer = {
            let mut cache = self.shared.lock();
            self.shared.ensure_loaded(&mut cache)?;
            if cache.revoked {
                return Err(self.shared.invalid_grant());
            }
            let reason = match &cache.access {
                Some(held) if !self.shared.stale(held) => return Ok(held.access.clone()),
                Some(_) => "proactive",
                None => "initial",
            };
            Shared::join_or_start(&self.shared, &mut cache, reason)
        };
        wait(answer, &self.shared.config.name).await
    }

    /// After a 401 with `rejected`: refresh once, unless another caller already did or
    /// is doing it.
    pub async fn refresh_after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> Result<SecretString, TokenError> {
        let answer = {
            let mut cache = self.shared.lock();
            self.shared.ensure_loaded(&mut cache)?;
            if cache.revoked {
                return Err(self.shared.invalid_grant());
            }
            let reason = match &cache.access {
                Some(held) if !same_secret(rejected, &held.access) => {
                    if !self.shared.stale(held) {
                        // Someone refreshed since that token was handed out.
                        return Ok(held.access.clone());
                    }
                    "proactive"
                }
                _ => "reactive",
            };
            Shared::join_or_start(&self.shared, &mut cache, reason)
        };
        wait(answer, &self.shared.config.name).await
    }

    /// When the current access token expires, if one is held.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.shared.lock().access.as_ref().map(|h| h.expires_at)
    }

    /// Waits until no refresh is in flight (bounded by its own timeout), so a stopping
    /// runner keeps the answer of a refresh it sent.
    pub async fn settle(&self) {
        let answer = self.shared.lock().flight.as_ref().map(|f| f.answer.clone());
        if let Some(answer) = answer {
            let _ = wait(answer, &self.shared.config.name).await;
        }
    }
}

impl<E: Env> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The held token must be replaced before use (only with the proactive pattern on).
    fn stale(&self, held: &Held) -> bool {
        self.proactive
            && (held.refresh_at <= self.env.now()
                || held
                    .refresh_mono
                    .is_some_and(|at| tokio::time::Instant::now() >= at))
    }

    /// Reads the stored chain once. A chain started from another configured refresh
    /// token is ignored: the operator re-authorised.
    fn ensure_loaded(&self, cache: &mut Cache) -> Result<(), TokenError> {
        if cache.loaded {
            return Ok(());
        }
        let row = self
            .db
            .token(&self.config.name)
            .map_err(|source| TokenError::Load {
                credential: self.config.name.clone(),
                source: Arc::new(source),
            })?;
        let row = row.filter(|r| {
            r.token
                .configured_sha256
                .as_ref()
                .is_none_or(|f| *f == self.configured)
        });
        if let Some(row) = row {
            if !row.token.refresh_token.expose_secret().is_empty() {
                cache.refresh = row.token.refresh_token;
            }
            if let (Some(access), Some(expires_at)) = (row.token.access_token, row.token.expires_at)
            {
                cache.access = Some(Held {
                    access,
                    expires_at,
                    refresh_at: expires_at - chrono_duration(self.config.skew),
                    refresh_mono: None,
                });
            }
            if let Some(sent) = row.refresh_sent_at {
                self.env.emit(
                    Event::new(EventKind::TokenRefreshFailed)
                        .service(&self.config.name)
                        .class(ErrorClass::Degraded)
                        .detail(format!(
                            "the answer to a refresh sent at {} was never kept (the runner stopped or the endpoint did not answer); if the endpoint rotated the refresh token then, the next refresh is rejected (hint: re-authorise the credential if it is)",
                            sent.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        )),
                );
            }
        }
        cache.loaded = true;
        Ok(())
    }

    /// The answer of the refresh in flight, starting one (for `reason`) if there is none.
    fn join_or_start(
        this: &Arc<Self>,
        cache: &mut Cache,
        reason: &'static str,
    ) -> watch::Receiver<Answer> {
        if let Some(flight) = &cache.flight {
            return flight.answer.clone();
        }
        let (tx, answer) = watch::channel(None);
        let from = StoredToken {
            refresh_token: cache.refresh.clone(),
            access_token: cache.access.as_ref().map(|h| h.access.clone()),
            expires_at: cache.access.as_ref().map(|h| h.expires_at),
            configured_sha256: Some(this.configured.clone()),
        };
        let shared = this.clone();
        let task = tokio::spawn(async move { shared.fly(reason, from, tx).await });
        cache.flight = Some(Flight {
            answer: answer.clone(),
            task: task.abort_handle(),
        });
        answer
    }

    /// One refresh, in its own task: it runs to its end whoever still waits.
    async fn fly(
        self: Arc<Self>,
        reason: &'static str,
        from: StoredToken,
        tx: watch::Sender<Answer>,
    ) {
        let result = self.refresh(from).await;
        {
            let mut cache = self.lock();
            cache.flight = None;
            if matches!(result, Err(TokenError::InvalidGrant { .. })) {
                cache.revoked = true;
            }
            // Under the lock: a caller arriving now sees the cache and the answer agree.
            tx.send_replace(Some(result.clone()));
        }
        match &result {
            Ok(_) => self.env.emit(
                Event::new(EventKind::TokenRefreshed)
                    .service(&self.config.name)
                    .detail(reason),
            ),
            Err(err) => self.env.emit(
                Event::new(EventKind::TokenRefreshFailed)
                    .service(&self.config.name)
                    .class(err.kind().class())
                    .detail(format!("{reason}: {err}")),
            ),
        }
    }

    /// The store write, the grant, the commit of its answer.
    async fn refresh(&self, from: StoredToken) -> Result<SecretString, TokenError> {
        let name = &self.config.name;
        let requested_at = self.env.now();
        // Never ask for a token we could not keep: with rotation the endpoint spends the
        // old refresh token, so a refresh on a full disk would lose the credential for
        // good. The write also marks the refresh in flight until its answer is kept.
        self.db
            .begin_refresh(name, &from, requested_at)
            .await
            .map_err(|e| self.persist(e))?;
        let granted = match grant::exchange(
            self.env.connector(),
            &self.config,
            &from.refresh_token,
            self.config.refresh_timeout,
        )
        .await
        {
            Ok(granted) => granted,
            Err(failed) => {
                if failed.refused {
                    // An error status rotated nothing: clear the mark (best effort; a
                    // mark left set only makes the next start say more than it must).
                    let _ = self.db.refresh_answered(name).await;
                }
                return Err(failed.error);
            }
        };
        self.commit(granted, from.refresh_token, requested_at).await
    }

    /// Makes a granted token current. A rotated refresh token is committed first, with
    /// its access token; if that fails the new access token is not used.
    async fn commit(
        &self,
        granted: Granted,
        presented: SecretString,
        requested_at: DateTime<Utc>,
    ) -> Result<SecretString, TokenError> {
        let lifetime = granted.lifetime.min(MAX_LIFETIME);
        // Measured from the request, not the answer: the token was issued in between.
        let expires_at = requested_at + chrono_duration(lifetime);
        // A skew as long as the lifetime would refresh on every call; keep half of it.
        let skew = self.config.skew.min(lifetime / 2);
        let refresh_at = expires_at - chrono_duration(skew);
        let rotated = granted.refresh.filter(|new| !same_secret(new, &presented));
        let rotated_any = rotated.is_some();
        let next_refresh = rotated.unwrap_or(presented);
        let keep = StoredToken {
            refresh_token: next_refresh.clone(),
            access_token: Some(granted.access.clone()),
            expires_at: Some(expires_at),
            configured_sha256: Some(self.configured.clone()),
        };
        let written = self
            .db
            .save_token(&self.config.name, &keep, self.env.now())
            .await;
        drop(keep);
        let mut cache = self.lock();
        // The old refresh token is likely spent already: present the new one next,
        // kept or not.
        cache.refresh = next_refresh;
        if let Err(e) = written
            && rotated_any
        {
            // Not used: a crash now would orphan it along with its refresh token.
            return Err(self.persist(e));
        }
        // Without a rotation the store only caches the access token: losing that costs
        // one refresh after a restart, so the token is still used.
        let left = (refresh_at - self.env.now()).to_std().unwrap_or_default();
        cache.access = Some(Held {
            access: granted.access.clone(),
            expires_at,
            refresh_at,
            refresh_mono: Some(tokio::time::Instant::now() + left),
        });
        Ok(granted.access)
    }

    fn persist(&self, source: DbError) -> TokenError {
        TokenError::Persist {
            credential: self.config.name.clone(),
            source: Arc::new(source),
        }
    }

    fn invalid_grant(&self) -> TokenError {
        TokenError::InvalidGrant {
            credential: self.config.name.clone(),
        }
    }
}

/// Waits for a refresh's answer. Dropping this future stops the waiting only.
async fn wait(
    mut answer: watch::Receiver<Answer>,
    credential: &str,
) -> Result<SecretString, TokenError> {
    loop {
        if let Some(result) = answer.borrow_and_update().as_ref() {
            return result.clone();
        }
        if answer.changed().await.is_err() {
            // The task went without answering: the runtime is shutting down.
            return Err(TokenError::Endpoint {
                credential: credential.to_string(),
                kind: FailureKind::Io,
                detail: "the refresh was stopped before it answered".to_string(),
            });
        }
    }
}

/// Compares two secrets without an early exit on the first differing byte.
fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    let (a, b) = (a.expose_secret().as_bytes(), b.expose_secret().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hex SHA-256 of a secret: identifies the configured refresh token without revealing it.
fn fingerprint(secret: &SecretString) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.expose_secret().as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
