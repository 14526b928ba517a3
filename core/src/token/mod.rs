//! Pattern 2: OAuth2 tokens refreshed before they expire.
//!
//! One [`TokenManager`] per credential, shared by every job that uses it. Before a call,
//! a token expiring within the skew (default 5 min) is refreshed with the
//! `refresh_token` grant; at most one refresh is in flight per credential and concurrent
//! callers wait for it. A rotated refresh token is persisted durably before the new
//! access token is used. `invalid_grant` is fatal. A 401 triggers one reactive refresh.
//! Token values never appear in logs or errors.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::CredentialConfig;
use crate::env::{Env, FileSystem};
use crate::event::{Event, EventKind};
use crate::http;
use crate::store::{self, StoreError};
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
    /// The token state file could not be read (not missing, not corrupt: unreadable).
    /// Nothing was refreshed, so a rotated refresh token on disk is not overwritten.
    #[error("failed to load token state for `{credential}`: {source}")]
    Load {
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
            Self::Persist { source, .. } | Self::Load { source, .. } => source
                .io_error()
                .map(FailureKind::from)
                .unwrap_or(FailureKind::Io),
        }
    }
}

/// A token lifetime longer than this is not believed (a bogus `expires_in` must not
/// overflow the clock or pin a token for years).
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The lifetime assumed when the endpoint omits `expires_in` (RFC 6749 makes it optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// An access token held in memory.
struct Held {
    /// The bearer value.
    access: SecretString,
    /// When the endpoint said it expires.
    expires_at: DateTime<Utc>,
    /// When the proactive check replaces it (`expires_at` minus the skew).
    refresh_at: DateTime<Utc>,
}

/// Everything the manager knows, behind one short-lived lock.
struct Cache {
    /// The state file has been read (lazily, on first use).
    loaded: bool,
    /// The current access token, if any.
    access: Option<Held>,
    /// The refresh token to present next (rotations replace it).
    refresh: SecretString,
    /// Refresh attempts finished so far; callers that queued behind an attempt see it move.
    attempts: u64,
    /// The error of the latest attempt, handed to callers that queued behind it so a
    /// failing endpoint is asked once per wave of callers, not once per caller.
    last_error: Option<TokenError>,
    /// The endpoint said `invalid_grant`: never ask it again in this process.
    revoked: bool,
}

/// The state file `state_dir/tokens/<name>.json`. Not `Debug`: it holds secrets.
#[derive(Serialize, Deserialize)]
struct Persisted {
    access_token: String,
    expires_at: DateTime<Utc>,
    refresh_token: String,
    /// SHA-256 of the configured refresh token the chain started from. When the operator
    /// re-authorises and puts a new refresh token in the configuration, the stored chain
    /// is stale and must not override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    configured_sha256: Option<String>,
}

/// A successful token response.
struct Granted {
    access: SecretString,
    lifetime: Duration,
    refresh: Option<SecretString>,
}

/// What the caller should do after looking at the cache.
enum Look {
    /// Hand out this token.
    Ready(SecretString),
    /// Refresh, for this reason (`initial`, `proactive` or `reactive`).
    Refresh(&'static str),
}

/// The token manager of one credential.
pub struct TokenManager<E: Env> {
    env: E,
    config: CredentialConfig,
    /// `state_dir/tokens/<file_stem(name)>.json`.
    path: PathBuf,
    /// Pattern 2 on: refresh within the skew of expiry, before any call fails.
    proactive: bool,
    /// One token request's deadline.
    call_timeout: Duration,
    cache: Mutex<Cache>,
    /// Single flight: held for the whole load-or-refresh, so concurrent callers wait for
    /// one request instead of each sending their own.
    flight: tokio::sync::Mutex<()>,
}

impl<E: Env> std::fmt::Debug for TokenManager<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: the configuration and the cache hold secrets.
        f.debug_struct("TokenManager")
            .field("name", &self.config.name)
            .field("token_url", &self.config.token_url.to_string())
            .field("proactive", &self.proactive)
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
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
        let path = state_dir
            .join("tokens")
            .join(format!("{}.json", store::file_stem(&config.name)));
        let cache = Cache {
            loaded: false,
            access: None,
            refresh: config.refresh_token.clone(),
            attempts: 0,
            last_error: None,
            revoked: false,
        };
        Self {
            env,
            config,
            path,
            proactive,
            call_timeout,
            cache: Mutex::new(cache),
            flight: tokio::sync::Mutex::new(()),
        }
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The state file this manager persists to.
    pub fn state_path(&self) -> &Path {
        &self.path
    }

    /// A token valid for at least the skew (refreshing first if needed).
    pub async fn access_token(&self) -> Result<SecretString, TokenError> {
        // Fast path: no lock held across an await, no request.
        let seen = {
            let cache = self.lock();
            if cache.revoked {
                return Err(self.invalid_grant());
            }
            if cache.loaded
                && let Some(held) = &cache.access
                && !self.stale(held)
            {
                return Ok(held.access.clone());
            }
            cache.attempts
        };
        let _flight = self.flight.lock().await;
        self.ensure_loaded().await?;
        let (reason, refresh_token) = {
            let cache = self.lock();
            // Someone else may have refreshed (or failed) while we waited.
            match self.look(&cache, seen, None)? {
                Look::Ready(token) => return Ok(token),
                Look::Refresh(reason) => (reason, cache.refresh.clone()),
            }
        };
        self.refresh(reason, refresh_token).await
    }

    /// After a 401 with `rejected`: refresh once, unless another caller already did.
    pub async fn refresh_after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> Result<SecretString, TokenError> {
        let seen = {
            let cache = self.lock();
            if cache.revoked {
                return Err(self.invalid_grant());
            }
            cache.attempts
        };
        let _flight = self.flight.lock().await;
        self.ensure_loaded().await?;
        let (reason, refresh_token) = {
            let cache = self.lock();
            match self.look(&cache, seen, Some(rejected))? {
                Look::Ready(token) => return Ok(token),
                Look::Refresh(reason) => (reason, cache.refresh.clone()),
            }
        };
        self.refresh(reason, refresh_token).await
    }

    /// When the current access token expires, if one is held.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.lock().access.as_ref().map(|h| h.expires_at)
    }

    /// Decides, under the flight lock, whether the held token will do. `rejected` is the
    /// token a 401 came back for (reactive path).
    fn look(
        &self,
        cache: &Cache,
        seen: u64,
        rejected: Option<&SecretString>,
    ) -> Result<Look, TokenError> {
        if cache.revoked {
            return Err(self.invalid_grant());
        }
        let mut reason = if rejected.is_some() {
            "reactive"
        } else {
            "initial"
        };
        if let Some(held) = &cache.access {
            let was_rejected = rejected.is_some_and(|r| same_secret(r, &held.access));
            if !was_rejected {
                if !self.stale(held) {
                    return Ok(Look::Ready(held.access.clone()));
                }
                reason = "proactive";
            }
        }
        if cache.attempts != seen {
            // An attempt finished while we queued; if it failed, share its failure
            // rather than asking the endpoint again straight away.
            if let Some(err) = &cache.last_error {
                return Err(duplicate(err));
            }
        }
        Ok(Look::Refresh(reason))
    }

    /// The held token must be replaced before use (only with the proactive pattern on).
    fn stale(&self, held: &Held) -> bool {
        self.proactive && held.refresh_at <= self.env.now()
    }

    /// Reads the state file once; a corrupt or stale file falls back to the configured
    /// refresh token.
    async fn ensure_loaded(&self) -> Result<(), TokenError> {
        if self.lock().loaded {
            return Ok(());
        }
        let stored = match store::read_json::<_, Persisted>(self.env.fs(), &self.path).await {
            Ok(stored) => stored,
            Err(StoreError::Corrupt { .. }) => {
                // The parser's message may quote the file, which holds secrets: say only
                // what happened. `read_json` has moved the file aside.
                self.env.emit(
                    Event::new(EventKind::TokenRefreshFailed)
                        .service(self.name())
                        .detail("token state file was corrupt and moved aside; using the configured refresh token"),
                );
                None
            }
            Err(source) => {
                return Err(TokenError::Load {
                    credential: self.config.name.clone(),
                    source,
                });
            }
        };
        let configured = fingerprint(&self.config.refresh_token);
        // A chain started from another configured refresh token is stale: the operator
        // re-authorised, and the configuration wins (the refresh then says `initial`).
        let stored = stored.filter(|p| {
            p.configured_sha256
                .as_ref()
                .is_none_or(|f| *f == configured)
        });
        let mut cache = self.lock();
        if let Some(p) = stored {
            if !p.refresh_token.is_empty() {
                cache.refresh = SecretString::from(p.refresh_token);
            }
            if !p.access_token.is_empty() {
                cache.access = Some(Held {
                    access: SecretString::from(p.access_token),
                    expires_at: p.expires_at,
                    refresh_at: p.expires_at - chrono_duration(self.config.skew),
                });
            }
        }
        cache.loaded = true;
        Ok(())
    }

    /// One refresh attempt (the caller holds the flight lock), with its event.
    async fn refresh(
        &self,
        reason: &'static str,
        refresh_token: SecretString,
    ) -> Result<SecretString, TokenError> {
        let requested_at = self.env.now();
        // Never ask for a token we could not keep: with rotation the endpoint spends the
        // old refresh token, so a refresh on a full disk would lose the credential for
        // good. Prove the state directory takes a durable write first.
        let result = match self.can_persist().await {
            Err(err) => Err(err),
            Ok(()) => match self.exchange(&refresh_token).await {
                Ok(granted) => self.commit(granted, requested_at).await,
                Err(err) => Err(err),
            },
        };
        {
            let mut cache = self.lock();
            cache.attempts += 1;
            match &result {
                Ok(_) => cache.last_error = None,
                Err(err) => {
                    if matches!(err, TokenError::InvalidGrant { .. }) {
                        cache.revoked = true;
                    }
                    cache.last_error = Some(duplicate(err));
                }
            }
        }
        match &result {
            Ok(_) => self.env.emit(
                Event::new(EventKind::TokenRefreshed)
                    .service(self.name())
                    .detail(reason),
            ),
            Err(err) => self.env.emit(
                Event::new(EventKind::TokenRefreshFailed)
                    .service(self.name())
                    .class(err.kind().class())
                    .detail(format!("{reason}: {err}")),
            ),
        }
        result
    }

    /// Writes and removes a probe file beside the state file, durably.
    async fn can_persist(&self) -> Result<(), TokenError> {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".probe");
        let probe = self.path.with_file_name(name);
        let persist = |source| TokenError::Persist {
            credential: self.config.name.clone(),
            source,
        };
        store::write_atomic(self.env.fs(), &probe, b"probe\n")
            .await
            .map_err(persist)?;
        // The probe has done its job once written; a failed removal is harmless.
        let _ = self.env.fs().remove(&probe).await;
        Ok(())
    }

    /// POSTs the `refresh_token` grant and reads the answer.
    async fn exchange(&self, refresh_token: &SecretString) -> Result<Granted, TokenError> {
        // The serializer is not `Send`: it lives only in this block.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token.expose_secret())
                .append_pair("client_id", &self.config.client_id);
            if let Some(secret) = &self.config.client_secret {
                form.append_pair("client_secret", secret.expose_secret());
            }
            if let Some(scope) = &self.config.scope {
                form.append_pair("scope", scope);
            }
            form.finish()
        };
        // The request holds secrets in its body: it is never logged.
        let req = http::Request::new(::http::Method::POST, self.config.token_url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        let resp = http::send(self.env.connector(), &req, self.call_timeout)
            .await
            .map_err(|e| self.endpoint(e.kind(), e.to_string()))?;
        if !(200..300).contains(&resp.status) {
            return Err(self.rejection(resp.status, &resp.body));
        }
        // Parse errors are not quoted: serde's messages can echo the token values.
        let value: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|_| self.endpoint(FailureKind::Io, "token response is not json".into()))?;
        let access = value
            .get("access_token")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                self.endpoint(FailureKind::Io, "token response has no access_token".into())
            })?;
        let lifetime = match value.get("expires_in") {
            None | Some(serde_json::Value::Null) => DEFAULT_LIFETIME,
            Some(v) => parse_lifetime(v).ok_or_else(|| {
                self.endpoint(
                    FailureKind::Io,
                    "token response has an invalid expires_in".into(),
                )
            })?,
        };
        let refresh = value
            .get("refresh_token")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(SecretString::from);
        Ok(Granted {
            access: SecretString::from(access),
            lifetime,
            refresh,
        })
    }

    /// Classifies a non-2xx answer of the token endpoint.
    fn rejection(&self, status: u16, body: &[u8]) -> TokenError {
        let code = oauth_error_code(body);
        let rejected = matches!(status, 400 | 401);
        if rejected && code.as_deref() == Some("invalid_grant") {
            return self.invalid_grant();
        }
        let kind = match code.as_deref() {
            // Wrong client credentials: no retry fixes them, a human must.
            Some("invalid_client" | "unauthorized_client") if rejected => FailureKind::BadConfig,
            // A redirect from a token endpoint is a wrong URL.
            _ => FailureKind::from_status(status).unwrap_or(FailureKind::BadConfig),
        };
        let detail = match code {
            Some(code) => format!("http {status} ({code})"),
            None => format!("http {status}"),
        };
        self.endpoint(kind, detail)
    }

    /// Makes a granted token current. A rotated refresh token is persisted durably first;
    /// if that fails the new access token is not used.
    async fn commit(
        &self,
        granted: Granted,
        requested_at: DateTime<Utc>,
    ) -> Result<SecretString, TokenError> {
        let lifetime = granted.lifetime.min(MAX_LIFETIME);
        // Measured from the request, not the answer: the token was issued in between.
        let expires_at = requested_at + chrono_duration(lifetime);
        // A skew as long as the lifetime would refresh on every call; keep half of it.
        let skew = self.config.skew.min(lifetime / 2);
        let refresh_at = expires_at - chrono_duration(skew);
        let current = self.lock().refresh.clone();
        let rotated = granted.refresh.filter(|new| !same_secret(new, &current));
        let next_refresh = rotated.clone().unwrap_or(current);
        let persisted = Persisted {
            access_token: granted.access.expose_secret().to_string(),
            expires_at,
            refresh_token: next_refresh.expose_secret().to_string(),
            configured_sha256: Some(fingerprint(&self.config.refresh_token)),
        };
        let written = store::write_json(self.env.fs(), &self.path, &persisted).await;
        drop(persisted);
        let mut cache = self.lock();
        if let Err(source) = written
            && rotated.is_some()
        {
            // The old refresh token is likely spent already; keep the new one in
            // memory so the next attempt presents it, but do not use the access
            // token that a crash could orphan.
            cache.refresh = next_refresh;
            return Err(TokenError::Persist {
                credential: self.config.name.clone(),
                source,
            });
        }
        // Without a rotation the file only caches the access token: losing that
        // costs one refresh after a restart, so the token is still used.
        cache.refresh = next_refresh;
        cache.access = Some(Held {
            access: granted.access.clone(),
            expires_at,
            refresh_at,
        });
        Ok(granted.access)
    }

    fn endpoint(&self, kind: FailureKind, detail: String) -> TokenError {
        TokenError::Endpoint {
            credential: self.config.name.clone(),
            kind,
            detail,
        }
    }

    fn invalid_grant(&self) -> TokenError {
        TokenError::InvalidGrant {
            credential: self.config.name.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `expires_in` as seconds: an integer, a non-negative float or a numeric string (some
/// providers send strings).
fn parse_lifetime(value: &serde_json::Value) -> Option<Duration> {
    let secs = match value {
        serde_json::Value::Number(n) => n.as_u64().map(|s| s as f64).or_else(|| n.as_f64())?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.min(MAX_LIFETIME.as_secs_f64()),
    ))
}

/// The OAuth2 `error` code of a rejection body, only if it looks like one (lowercase and
/// underscores): anything else may be free text and is not repeated.
fn oauth_error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = value.get("error")?.as_str()?;
    let plausible = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    plausible.then(|| code.to_string())
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

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A copy of an error, for callers that queued behind the attempt that produced it.
fn duplicate(err: &TokenError) -> TokenError {
    match err {
        TokenError::InvalidGrant { credential } => TokenError::InvalidGrant {
            credential: credential.clone(),
        },
        TokenError::Endpoint {
            credential,
            kind,
            detail,
        } => TokenError::Endpoint {
            credential: credential.clone(),
            kind: *kind,
            detail: detail.clone(),
        },
        TokenError::Persist { credential, source } => TokenError::Persist {
            credential: credential.clone(),
            source: duplicate_store(source),
        },
        TokenError::Load { credential, source } => TokenError::Load {
            credential: credential.clone(),
            source: duplicate_store(source),
        },
    }
}

fn duplicate_store(err: &StoreError) -> StoreError {
    match err {
        StoreError::Io { op, path, source } => StoreError::Io {
            op,
            path: path.clone(),
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        StoreError::Corrupt { path, detail } => StoreError::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        StoreError::Serialize { path, detail } => StoreError::Serialize {
            path: path.clone(),
            detail: detail.clone(),
        },
    }
}
