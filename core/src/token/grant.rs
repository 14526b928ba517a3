//! The `refresh_token` grant on the wire (RFC 6749 section 6): the form it sends and
//! what each answer means. Kept apart from the manager so the bookkeeping around a
//! refresh (single flight, the store) reads without the protocol in the way.
//!
//! The request holds secrets in its body and is never logged; error details never quote
//! a response body (providers echo tokens in their error descriptions).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::TokenError;
use crate::config::CredentialConfig;
use crate::env::Connector;
use crate::http;
use crate::taxonomy::FailureKind;

/// A token lifetime longer than this is not believed (a bogus `expires_in` must not
/// overflow the clock or pin a token for years).
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The lifetime assumed when the endpoint omits `expires_in` (RFC 6749 makes it optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A successful token response.
pub(super) struct Granted {
    /// The new access token.
    pub(super) access: SecretString,
    /// How long it lives, as the endpoint said (bounded).
    pub(super) lifetime: Duration,
    /// A new refresh token, if the endpoint sent one (rotation, or the same one again).
    pub(super) refresh: Option<SecretString>,
}

/// A grant that brought no token.
pub(super) struct Failed {
    /// What went wrong.
    pub(super) error: TokenError,
    /// The endpoint answered with an error status, so it rotated nothing. When false the
    /// grant may have reached it and rotated the refresh token with the answer lost.
    pub(super) refused: bool,
}

/// POSTs the grant for `refresh_token` and reads the answer, all within `timeout`.
pub(super) async fn exchange<C: Connector>(
    connector: &C,
    config: &CredentialConfig,
    refresh_token: &SecretString,
    timeout: Duration,
) -> Result<Granted, Failed> {
    let lost = |kind, detail: String| Failed {
        error: endpoint(config, kind, detail),
        refused: false,
    };
    let resp = http::send(connector, &request(config, refresh_token), timeout)
        .await
        .map_err(|e| lost(e.kind(), e.to_string()))?;
    if !(200..300).contains(&resp.status) {
        return Err(Failed {
            error: rejection(config, resp.status, &resp.body),
            refused: true,
        });
    }
    // Parse errors are not quoted: serde's messages can echo the token values.
    let value: serde_json::Value = serde_json::from_slice(&resp.body)
        .map_err(|_| lost(FailureKind::Io, "token response is not json".into()))?;
    let access = value
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| lost(FailureKind::Io, "token response has no access_token".into()))?;
    let lifetime = match value.get("expires_in") {
        None | Some(serde_json::Value::Null) => DEFAULT_LIFETIME,
        Some(v) => parse_lifetime(v).ok_or_else(|| {
            lost(
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

/// The form POST of the grant.
fn request(config: &CredentialConfig, refresh_token: &SecretString) -> http::Request {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", refresh_token.expose_secret())
        .append_pair("client_id", &config.client_id);
    if let Some(secret) = &config.client_secret {
        form.append_pair("client_secret", secret.expose_secret());
    }
    if let Some(scope) = &config.scope {
        form.append_pair("scope", scope);
    }
    http::Request::new(::http::Method::POST, config.token_url.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(form.finish())
}

/// Classifies a non-2xx answer of the token endpoint.
fn rejection(config: &CredentialConfig, status: u16, body: &[u8]) -> TokenError {
    let code = oauth_error_code(body);
    let rejected = matches!(status, 400 | 401);
    if rejected && code.as_deref() == Some("invalid_grant") {
        return TokenError::InvalidGrant {
            credential: config.name.clone(),
        };
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
    endpoint(config, kind, detail)
}

fn endpoint(config: &CredentialConfig, kind: FailureKind, detail: String) -> TokenError {
    TokenError::Endpoint {
        credential: config.name.clone(),
        kind,
        detail,
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
