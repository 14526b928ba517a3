//! Each credential's token chain in the store, so a restart goes on refreshing with the
//! refresh token the provider expects and never presents a spent one.
//!
//! A refresh is two transactions: [`Db::begin_refresh`] before the grant is sent (it
//! proves the store takes a write, so a full disk never spends a rotating refresh token,
//! and marks a refresh in flight) and [`Db::save_token`] with its answer (the rotated
//! refresh token and the access token it came with, together). A mark still set at the
//! next start means an answer was lost: the runner stopped, or the endpoint did not
//! answer, between the two.
//!
//! The rows hold secrets: nothing here formats a token, and [`StoredToken`]'s `Debug`
//! says only which parts are present.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};

use super::time::{from_ms, to_ms};
use super::{Db, DbError};
use crate::env::Env;

/// One credential's token chain, as stored.
#[derive(Clone)]
pub struct StoredToken {
    /// The refresh token to present next.
    pub refresh_token: SecretString,
    /// The access token it last brought, if any.
    pub access_token: Option<SecretString>,
    /// When that access token expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the configured refresh token the chain started from (`None`: not
    /// known, as in a state file of an older runner).
    pub configured_sha256: Option<String>,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: the tokens are secrets.
        f.debug_struct("StoredToken")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[hidden]"),
            )
            .field("expires_at", &self.expires_at)
            .field("configured_sha256", &self.configured_sha256)
            .finish_non_exhaustive()
    }
}

/// A stored chain and its bookkeeping.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// The chain.
    pub token: StoredToken,
    /// A refresh was sent at this instant and its answer never kept.
    pub refresh_sent_at: Option<DateTime<Utc>>,
    /// The last write.
    pub updated_at: DateTime<Utc>,
}

const UPSERT: &str = "INSERT INTO tokens (credential, access_token, expires_at, refresh_token, configured_sha256, refresh_sent_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (credential) DO UPDATE SET access_token = excluded.access_token,
         expires_at = excluded.expires_at, refresh_token = excluded.refresh_token,
         configured_sha256 = excluded.configured_sha256,
         refresh_sent_at = excluded.refresh_sent_at, updated_at = excluded.updated_at";

impl<E: Env> Db<E> {
    /// The stored chain of `credential`, if any.
    pub fn token(&self, credential: &str) -> Result<Option<TokenRow>, DbError> {
        self.read("read a token", |c| {
            c.query_row(
                "SELECT access_token, expires_at, refresh_token, configured_sha256, refresh_sent_at, updated_at
                 FROM tokens WHERE credential = ?1",
                [credential],
                |r| {
                    Ok(TokenRow {
                        token: StoredToken {
                            access_token: r.get::<_, Option<String>>(0)?.map(SecretString::from),
                            expires_at: r.get::<_, Option<i64>>(1)?.map(from_ms),
                            refresh_token: SecretString::from(r.get::<_, String>(2)?),
                            configured_sha256: r.get(3)?,
                        },
                        refresh_sent_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
                        updated_at: from_ms(r.get(5)?),
                    })
                },
            )
            .optional()
        })
    }

    /// Writes the chain a refresh starts from and marks the refresh in flight, before
    /// the grant is sent. If this fails, the grant must not be sent.
    pub async fn begin_refresh(
        &self,
        credential: &str,
        from: &StoredToken,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.upsert("begin a token refresh", credential, from, Some(now), now)
            .await
    }

    /// Keeps a refresh's answer: the refresh token to present next and the access token
    /// it came with, in one transaction; the refresh is no longer in flight.
    pub async fn save_token(
        &self,
        credential: &str,
        token: &StoredToken,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.upsert("save a refreshed token", credential, token, None, now)
            .await
    }

    /// The endpoint answered a refresh without a token (an error status): nothing was
    /// rotated, so the refresh is no longer in flight.
    pub async fn refresh_answered(&self, credential: &str) -> Result<(), DbError> {
        let credential = credential.to_string();
        self.write("end a token refresh", move |tx| {
            tx.execute(
                "UPDATE tokens SET refresh_sent_at = NULL WHERE credential = ?1",
                [credential],
            )?;
            Ok(())
        })
        .await
    }

    /// Imports a chain kept elsewhere (an older runner's token file) unless the store
    /// already has one for `credential`: the store's is newer. Returns whether it was
    /// imported.
    pub async fn import_token(
        &self,
        credential: &str,
        token: &StoredToken,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let credential = credential.to_string();
        let token = token.clone();
        self.write("import a token", move |tx| {
            let inserted = tx.execute(
                "INSERT INTO tokens (credential, access_token, expires_at, refresh_token, configured_sha256, refresh_sent_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6) ON CONFLICT (credential) DO NOTHING",
                params![
                    credential,
                    token.access_token.as_ref().map(|s| s.expose_secret().to_string()),
                    token.expires_at.map(to_ms),
                    token.refresh_token.expose_secret(),
                    token.configured_sha256,
                    to_ms(now),
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Every stored credential's access-token expiry (never a token), for `status`.
    pub fn token_expiries(&self) -> Result<BTreeMap<String, Option<DateTime<Utc>>>, DbError> {
        self.read("read token expiries", |c| {
            let mut stmt = c.prepare(
                "SELECT credential, expires_at FROM tokens ORDER BY credential LIMIT 1000",
            )?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?.map(from_ms),
                ))
            })?
            .collect()
        })
    }

    async fn upsert(
        &self,
        what: &'static str,
        credential: &str,
        token: &StoredToken,
        sent_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let credential = credential.to_string();
        let token = token.clone();
        self.write(what, move |tx| {
            tx.execute(
                UPSERT,
                params![
                    credential,
                    token
                        .access_token
                        .as_ref()
                        .map(|s| s.expose_secret().to_string()),
                    token.expires_at.map(to_ms),
                    token.refresh_token.expose_secret(),
                    token.configured_sha256,
                    sent_at.map(to_ms),
                    to_ms(now),
                ],
            )?;
            Ok(())
        })
        .await
    }
}
