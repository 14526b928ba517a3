//! An OAuth2 token endpoint (`POST /token`, `refresh_token` grant) with world-owned state.
//!
//! It issues access tokens that expire on the simulated wall clock, rotates refresh
//! tokens (the old one stops working at once, as Google, Microsoft and Auth0 do with
//! rotation on), revokes on demand, and answers `invalid_grant` for unknown or revoked
//! refresh tokens. APIs ask it whether a bearer token is valid. Token values are random
//! strings from the world seed; they never appear in `Debug` output.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use steadfast_core::env::{Rng, SeededRng};

use super::{Service, SimRequest, SimResponse};

/// At most this many access tokens are remembered; the oldest are forgotten first
/// (they then validate as unknown rather than expired).
pub const MAX_ACCESS_TOKENS: usize = 10_000;

/// How the token server behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// Lifetime of an access token (`expires_in`).
    pub expires_in: Duration,
    /// Issue a new refresh token on every refresh and invalidate the old one.
    pub rotate_refresh_tokens: bool,
    /// A rotated-out refresh token is still accepted this long after its rotation (the
    /// "reuse interval" of providers that rotate), so a client whose refresh answer was
    /// lost in transit can try again. Zero is strict.
    pub reuse_grace: Duration,
}

impl Default for OAuthConfig {
    /// One-hour tokens with rotation, the common production setting.
    fn default() -> Self {
        Self {
            expires_in: Duration::from_secs(3600),
            rotate_refresh_tokens: true,
            reuse_grace: Duration::ZERO,
        }
    }
}

/// What an API learns about a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStatus {
    /// Valid; issued to this client.
    Valid {
        /// The OAuth2 client id.
        client_id: String,
    },
    /// Was valid, expired.
    Expired {
        /// The OAuth2 client id.
        client_id: String,
    },
    /// Revoked before it expired.
    Revoked {
        /// The OAuth2 client id.
        client_id: String,
    },
    /// Never issued (or forgotten).
    Unknown,
}

/// What the token server has seen, for invariant checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OAuthCounters {
    /// Requests to `/token`.
    pub token_requests: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// `invalid_grant` answers.
    pub invalid_grants: u64,
    /// Refreshes that presented a refresh token already rotated out: the client lost
    /// (did not persist) the rotated one.
    pub stale_refresh_token_uses: u64,
    /// Access tokens revoked early by the driver.
    pub revoked_access_tokens: u64,
    /// Malformed requests (bad grant type, missing fields).
    pub bad_requests: u64,
}

#[derive(Clone)]
struct AccessToken {
    client_id: String,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked: bool,
}

#[derive(Clone)]
enum RefreshState {
    Live,
    /// Replaced by a newer token at this time.
    RotatedOut(DateTime<Utc>),
    Revoked,
}

struct State {
    config: OAuthConfig,
    /// Refresh token -> (client id, state).
    refresh: BTreeMap<String, (String, RefreshState)>,
    /// Access token -> grant.
    access: BTreeMap<String, AccessToken>,
    /// Access tokens in issue order, for bounded eviction.
    access_order: VecDeque<String>,
    /// Revocations handed over by the driver, each (client id, instant): a token of that
    /// client issued at or before the instant is revoked from the instant on.
    revocations: VecDeque<(String, DateTime<Utc>)>,
    counters: OAuthCounters,
}

/// At most this many revocations are kept; the oldest goes first (its tokens have long
/// expired: a token lives hours, a revocation comes at most once a tick).
const MAX_REVOCATIONS: usize = 1_024;

/// The token server. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct OAuthServer {
    name: Arc<str>,
    state: Arc<Mutex<State>>,
    rng: Arc<SeededRng>,
}

impl std::fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Token values are secrets even in a simulation: show counts only.
        let s = self.lock();
        f.debug_struct("OAuthServer")
            .field("name", &self.name)
            .field("config", &s.config)
            .field("refresh_tokens", &s.refresh.len())
            .field("access_tokens", &s.access.len())
            .field("counters", &s.counters)
            .finish()
    }
}

impl OAuthServer {
    /// A token server answering on host `name`, drawing token values from `seed`.
    pub fn new(name: &str, config: OAuthConfig, seed: u64) -> Self {
        Self {
            name: Arc::from(name),
            state: Arc::new(Mutex::new(State {
                config,
                refresh: BTreeMap::new(),
                access: BTreeMap::new(),
                access_order: VecDeque::new(),
                revocations: VecDeque::new(),
                counters: OAuthCounters::default(),
            })),
            rng: Arc::new(SeededRng::from_seed(seed)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn random_token(&self, prefix: &str) -> String {
        format!(
            "{prefix}_{:016x}{:016x}",
            self.rng.next_u64(),
            self.rng.next_u64()
        )
    }

    /// Accepts `token` as a live refresh token of `client_id` (the runner's configured one).
    pub fn add_refresh_token(&self, client_id: &str, token: &str) {
        self.lock().refresh.insert(
            token.to_string(),
            (client_id.to_string(), RefreshState::Live),
        );
    }

    /// Issues a fresh random refresh token to `client_id`.
    pub fn issue_refresh_token(&self, client_id: &str) -> String {
        let token = self.random_token("rt");
        self.add_refresh_token(client_id, &token);
        token
    }

    /// Changes the lifetime of tokens issued from now on.
    pub fn set_expires_in(&self, expires_in: Duration) {
        self.lock().config.expires_in = expires_in;
    }

    /// Revokes, from `at` on, every access token of `client_id` issued at or before `at`
    /// (the next API call with one 401s). `at` may lie ahead, inside the coming tick: a
    /// token issued before it is still revoked at it. Returns how many tokens known now
    /// and unexpired at `at` it revokes.
    pub fn revoke_access_tokens(&self, client_id: &str, at: DateTime<Utc>) -> u64 {
        let mut s = self.lock();
        let n = s
            .access
            .values()
            .filter(|t| t.client_id == client_id && !t.revoked)
            .filter(|t| t.issued_at <= at && t.expires_at > at)
            .count() as u64;
        if s.revocations.len() >= MAX_REVOCATIONS {
            s.revocations.pop_front();
        }
        s.revocations.push_back((client_id.to_string(), at));
        s.counters.revoked_access_tokens += n;
        n
    }

    /// Revokes every refresh token of `client_id` (the next refresh gets `invalid_grant`).
    pub fn revoke_refresh_tokens(&self, client_id: &str) {
        for (owner, state) in self.lock().refresh.values_mut() {
            if owner == client_id {
                *state = RefreshState::Revoked;
            }
        }
    }

    /// When the access token `bearer` was issued, if this server issued it.
    pub fn issued_at(&self, bearer: &str) -> Option<DateTime<Utc>> {
        self.lock().access.get(bearer).map(|t| t.issued_at)
    }

    /// Whether `bearer` is a valid access token at `now`.
    pub fn validate(&self, bearer: &str, now: DateTime<Utc>) -> TokenStatus {
        let s = self.lock();
        let revoked = |t: &AccessToken| {
            t.revoked
                || s.revocations
                    .iter()
                    .any(|(client, at)| *client == t.client_id && t.issued_at <= *at && *at <= now)
        };
        match s.access.get(bearer) {
            None => TokenStatus::Unknown,
            Some(t) if revoked(t) => TokenStatus::Revoked {
                client_id: t.client_id.clone(),
            },
            Some(t) if t.expires_at <= now => TokenStatus::Expired {
                client_id: t.client_id.clone(),
            },
            Some(t) => TokenStatus::Valid {
                client_id: t.client_id.clone(),
            },
        }
    }

    /// When the access token `bearer` was issued and when it expires (for the world's
    /// ledger), if this server issued it and still remembers it.
    pub fn token_times(&self, bearer: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.lock()
            .access
            .get(bearer)
            .map(|t| (t.issued_at, t.expires_at))
    }

    /// The counters so far.
    pub fn counters(&self) -> OAuthCounters {
        self.lock().counters.clone()
    }

    fn refresh(&self, form: &BTreeMap<String, String>, now: DateTime<Utc>) -> SimResponse {
        let mut s = self.lock();
        s.counters.token_requests += 1;
        match form.get("grant_type").map(String::as_str) {
            Some("refresh_token") => {}
            Some(_) => {
                s.counters.bad_requests += 1;
                return SimResponse::error(400, "unsupported_grant_type");
            }
            None => {
                s.counters.bad_requests += 1;
                return SimResponse::error(400, "invalid_request");
            }
        }
        let Some(presented) = form.get("refresh_token") else {
            s.counters.bad_requests += 1;
            return SimResponse::error(400, "invalid_request");
        };
        let client_id = match s.refresh.get(presented) {
            Some((client, RefreshState::Live)) => client.clone(),
            Some((client, RefreshState::RotatedOut(at)))
                if now - *at
                    < chrono::Duration::from_std(s.config.reuse_grace).unwrap_or_default() =>
            {
                client.clone()
            }
            Some((_, RefreshState::RotatedOut(_))) => {
                s.counters.stale_refresh_token_uses += 1;
                s.counters.invalid_grants += 1;
                return SimResponse::error(400, "invalid_grant");
            }
            Some((_, RefreshState::Revoked)) | None => {
                s.counters.invalid_grants += 1;
                return SimResponse::error(400, "invalid_grant");
            }
        };
        // A refresh token issued to another client is as good as unknown.
        if form.get("client_id").is_some_and(|c| *c != client_id) {
            s.counters.invalid_grants += 1;
            return SimResponse::error(400, "invalid_grant");
        }
        let expires_in = s.config.expires_in;
        let access = self.random_token("at");
        let refresh_token = if s.config.rotate_refresh_tokens {
            let next = self.random_token("rt");
            if let Some(old) = s.refresh.get_mut(presented)
                && matches!(old.1, RefreshState::Live)
            {
                old.1 = RefreshState::RotatedOut(now);
            }
            s.refresh
                .insert(next.clone(), (client_id.clone(), RefreshState::Live));
            next
        } else {
            presented.clone()
        };
        let expires_at = now + chrono::Duration::from_std(expires_in).unwrap_or_default();
        s.access.insert(
            access.clone(),
            AccessToken {
                client_id,
                issued_at: now,
                expires_at,
                revoked: false,
            },
        );
        s.access_order.push_back(access.clone());
        while s.access_order.len() > MAX_ACCESS_TOKENS {
            if let Some(oldest) = s.access_order.pop_front() {
                s.access.remove(&oldest);
            }
        }
        s.counters.tokens_issued += 1;
        SimResponse::json(
            200,
            &serde_json::json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": expires_in.as_secs(),
                "refresh_token": refresh_token,
            }),
        )
    }
}

impl Service for OAuthServer {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse {
        match (req.method.as_str(), req.path_only()) {
            ("GET", "/health") => SimResponse::json(200, &serde_json::json!({ "ok": true })),
            ("POST", "/token") => self.refresh(&parse_form(&req.body), now),
            (_, "/token") => SimResponse::error(405, "method_not_allowed"),
            _ => SimResponse::error(404, "not_found"),
        }
    }
}

/// Parses an `application/x-www-form-urlencoded` body (first value of each key wins).
pub fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let key = percent_decode(kv.next().unwrap_or_default());
        let value = percent_decode(kv.next().unwrap_or_default());
        out.entry(key).or_insert(value);
    }
    out
}

fn percent_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => {
                let hex = std::str::from_utf8(&input[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_717_200_000, 0).unwrap_or_default()
    }

    fn refresh_req(token: &str) -> SimRequest {
        SimRequest::new(http::Method::POST, "/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=refresh_token&refresh_token={token}&client_id=c1"
            ))
    }

    fn json(r: &SimResponse) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap_or_default()
    }

    #[test]
    fn issues_expiring_tokens_and_rotates_refresh_tokens() {
        let oauth = OAuthServer::new("auth.sim", OAuthConfig::default(), 1);
        oauth.add_refresh_token("c1", "rt-initial");
        let r = oauth.handle(&refresh_req("rt-initial"), t0());
        assert_eq!(r.status, 200);
        let body = json(&r);
        assert_eq!(body["expires_in"], 3600);
        let access = body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let next = body["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_ne!(next, "rt-initial");
        assert_eq!(
            oauth.validate(&access, t0() + chrono::Duration::seconds(3599)),
            TokenStatus::Valid {
                client_id: "c1".into()
            }
        );
        assert_eq!(
            oauth.validate(&access, t0() + chrono::Duration::seconds(3600)),
            TokenStatus::Expired {
                client_id: "c1".into()
            }
        );
        // The rotated-out token is dead, and its reuse is counted.
        let stale = oauth.handle(&refresh_req("rt-initial"), t0());
        assert_eq!(
            (stale.status, json(&stale)["error"].clone()),
            (400, "invalid_grant".into())
        );
        assert_eq!(oauth.counters().stale_refresh_token_uses, 1);
        assert_eq!(oauth.handle(&refresh_req(&next), t0()).status, 200);
    }

    #[test]
    fn without_rotation_the_refresh_token_stays() {
        let oauth = OAuthServer::new(
            "auth.sim",
            OAuthConfig {
                rotate_refresh_tokens: false,
                ..OAuthConfig::default()
            },
            1,
        );
        oauth.add_refresh_token("c1", "rt");
        for _ in 0..3 {
            let r = oauth.handle(&refresh_req("rt"), t0());
            assert_eq!(json(&r)["refresh_token"], "rt");
        }
    }

    /// A revocation handed over ahead (inside the coming tick) bites at its instant, for
    /// every token issued at or before it, including one issued after the hand-over.
    #[test]
    fn a_revocation_handed_over_ahead_bites_at_its_instant() {
        let later = |s| t0() + chrono::Duration::seconds(s);
        // Without rotation, so one refresh token serves every refresh below.
        let config = OAuthConfig {
            rotate_refresh_tokens: false,
            ..OAuthConfig::default()
        };
        let oauth = OAuthServer::new("auth.sim", config, 1);
        let rt = oauth.issue_refresh_token("c1");
        let first = json(&oauth.handle(&refresh_req(&rt), later(10)))["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(oauth.revoke_access_tokens("c1", later(30)), 1);
        assert_eq!(
            oauth.validate(&first, later(29)),
            TokenStatus::Valid {
                client_id: "c1".into()
            }
        );
        assert!(matches!(
            oauth.validate(&first, later(30)),
            TokenStatus::Revoked { .. }
        ));
        let rotated = json(&oauth.handle(&refresh_req(&rt), later(20)));
        let second = rotated["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            matches!(
                oauth.validate(&second, later(40)),
                TokenStatus::Revoked { .. }
            ),
            "issued before the instant, after the hand-over: revoked too"
        );
        let third = json(&oauth.handle(&refresh_req(&rt), later(31)))["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            oauth.validate(&third, later(40)),
            TokenStatus::Valid {
                client_id: "c1".into()
            }
        );
    }

    #[test]
    fn revocation_and_unknown_tokens() {
        let oauth = OAuthServer::new("auth.sim", OAuthConfig::default(), 1);
        let rt = oauth.issue_refresh_token("c1");
        let r = oauth.handle(&refresh_req(&rt), t0());
        let access = json(&r)["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(oauth.revoke_access_tokens("c1", t0()), 1);
        assert!(matches!(
            oauth.validate(&access, t0()),
            TokenStatus::Revoked { .. }
        ));
        assert_eq!(oauth.validate("at_nope", t0()), TokenStatus::Unknown);
        oauth.revoke_refresh_tokens("c1");
        let next = json(&r)["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(oauth.handle(&refresh_req(&next), t0()).status, 400);
        assert_eq!(oauth.handle(&refresh_req("unknown"), t0()).status, 400);
        assert_eq!(oauth.counters().invalid_grants, 2);
    }

    #[test]
    fn token_values_come_from_the_seed() {
        let issue =
            |seed| OAuthServer::new("a", OAuthConfig::default(), seed).issue_refresh_token("c");
        assert_eq!(issue(5), issue(5));
        assert_ne!(issue(5), issue(6));
    }

    #[test]
    fn debug_output_hides_token_values() {
        let oauth = OAuthServer::new("auth.sim", OAuthConfig::default(), 1);
        let rt = oauth.issue_refresh_token("c1");
        assert!(!format!("{oauth:?}").contains(&rt));
    }

    #[test]
    fn form_parsing_decodes_percent_and_plus() {
        let f = parse_form(b"a=x%2By+z&b=%zz&a=ignored&c");
        assert_eq!(f["a"], "x+y z");
        assert_eq!(f["b"], "%zz");
        assert_eq!(f["c"], "");
    }
}
