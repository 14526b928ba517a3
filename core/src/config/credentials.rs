//! `[credentials.<name>]`: OAuth2 refresh-token credentials, secrets resolved once.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::reader::Table;
use super::secret::SECRET_HINT;
use super::url::Url;

/// The name of a declared credential. The reader makes one only for a name that has a
/// `[credentials]` entry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId(Arc<str>);

impl CredentialId {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// For configurations built by hand (tests); the reader checks the name exists.
impl From<&str> for CredentialId {
    fn from(name: &str) -> Self {
        Self(name.into())
    }
}

impl Borrow<str> for CredentialId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[credentials.<name>]`: an OAuth2 refresh-token credential.
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    /// The credential's name (used in logs; its values never are).
    pub name: String,
    /// The token endpoint.
    pub token_url: Url,
    /// The OAuth2 client id.
    pub client_id: String,
    /// The client secret, if the endpoint needs one.
    pub client_secret: Option<SecretString>,
    /// The first refresh token (later ones are rotated into the store).
    pub refresh_token: SecretString,
    /// Refresh when expiry is this close (default 5 min).
    pub skew: Duration,
    /// How long one refresh may take, from sending the grant to its answer (default
    /// 30 s). A refresh runs on its own, so a run's deadline never cuts it off.
    pub refresh_timeout: Duration,
    /// Optional scope.
    pub scope: Option<String>,
}

const KEYS: &[&str] = &[
    "token_url",
    "client_id",
    "client_secret",
    "refresh_token",
    "skew",
    "refresh_timeout",
    "scope",
];
/// At most this many credentials.
pub const MAX_CREDENTIALS: usize = 1_000;

/// The credentials that validated, and the names of all declared ones (so that a
/// reference to a broken credential is not reported a second time).
pub(crate) fn read(top: &Table<'_>) -> (BTreeMap<String, CredentialConfig>, BTreeSet<String>) {
    let mut out = BTreeMap::new();
    let mut names = BTreeSet::new();
    let credentials = top.named_tables(
        "credentials",
        "credential name",
        MAX_CREDENTIALS,
        KEYS,
        "write it as a [credentials.NAME] section",
    );
    for (name, _, c) in credentials {
        names.insert(name.to_string());
        if let Some(cred) = credential(name, &c) {
            out.insert(name.to_string(), cred);
        }
    }
    (out, names)
}

fn credential(name: &str, c: &Table<'_>) -> Option<CredentialConfig> {
    c.finish();
    if c.entry("token_url").is_none() {
        c.missing(
            "token_url",
            "the OAuth2 token endpoint, e.g. \"https://oauth2.googleapis.com/token\"",
        );
    }
    let token_url = c.url("token_url");
    let client_id = c
        .required_string("client_id", "the OAuth2 client id of your app")
        .map(|(s, _)| s.to_string());
    let client_secret = c.secret("client_secret");
    let refresh_token = if c.entry("refresh_token").is_none() {
        c.missing("refresh_token", SECRET_HINT);
        None
    } else {
        c.secret("refresh_token")
    };
    let skew = c
        .duration("skew")
        .map_or(Duration::from_secs(300), |(d, _)| d);
    let refresh_timeout = c
        .positive_duration("refresh_timeout")
        .map_or(Duration::from_secs(30), |(d, _)| d);
    let scope = c.string("scope").map(|(s, _)| s.to_string());
    Some(CredentialConfig {
        name: name.to_string(),
        token_url: token_url?,
        client_id: client_id?,
        client_secret,
        refresh_token: refresh_token?,
        skew,
        refresh_timeout,
        scope,
    })
}
