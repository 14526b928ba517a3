//! A rate-limited, quota-limited, token-protected API that records every side effect.
//!
//! The limits are the ones the field report hit: a per-client token bucket of N requests
//! per minute (429 with `Retry-After`), a daily quota that resets at local midnight in
//! the world's zone (429 until midnight), and bearer tokens that expire (401
//! `{"error":"token_expired"}`). Two faults the driver switches here: a quota exhausted
//! on purpose (every request 429 `quota_exceeded` until a reset time, its `Retry-After`
//! that reset, in seconds or as an HTTP date), and this API alone revoking the tokens it
//! has seen (401 `invalid_token` for every token issued before the revocation, until
//! the client refreshes). Every mutating request is a recorded side effect; a
//! repeated `Idempotency-Key` replays the stored answer instead, so the invariant
//! checker can count duplicates the runner caused.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::ledger::{Effect, Observation, TokenSeen};
use super::{OAuthServer, Service, SimRequest, SimResponse, TokenStatus};

/// At most this many request records are kept (later ones are counted, not kept).
pub const MAX_RECORDS: usize = 200_000;
/// At most this many idempotency keys are remembered (the oldest are forgotten first).
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// Recorded side-effect bodies are cut to this many bytes.
pub const MAX_RECORDED_BODY_BYTES: usize = 16 * 1024;

/// How one API behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The host name it answers on.
    pub name: String,
    /// Per-client token bucket: this many requests per minute (burst of the same size).
    pub rate_limit_per_minute: Option<u32>,
    /// Per-client requests per local day.
    pub daily_quota: Option<u32>,
    /// The zone whose midnight resets the quota.
    pub zone: Tz,
    /// How long every answer takes.
    pub latency: Duration,
    /// Paths whose answers take their own time instead (long steps: renders, uploads).
    pub path_latency: BTreeMap<String, Duration>,
    /// Require bearer tokens issued by this server.
    pub auth: Option<OAuthServer>,
}

impl ApiConfig {
    /// No limits, no auth, no latency, UTC.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            rate_limit_per_minute: None,
            daily_quota: None,
            zone: Tz::UTC,
            latency: Duration::ZERO,
            path_latency: BTreeMap::new(),
            auth: None,
        }
    }
}

/// What the API has seen, for invariant checks and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiCounters {
    /// Requests other than `GET /health`.
    pub calls: u64,
    /// 2xx answers.
    pub ok_2xx: u64,
    /// 429 answers (rate limit plus quota).
    pub too_many_429: u64,
    /// Requests that arrived while their client was over its per-minute limit.
    pub rate_limit_violations: u64,
    /// Requests refused because the daily quota was spent.
    pub quota_rejections: u64,
    /// 401s for expired access tokens.
    pub token_expired_errors: u64,
    /// 401s for missing, unknown or revoked tokens.
    pub token_invalid_errors: u64,
    /// Side effects performed (mutating requests, not counting replays).
    pub side_effects: u64,
    /// Mutating requests answered from the idempotency store.
    pub dedup_hits: u64,
    /// `GET /health` requests.
    pub health_checks: u64,
    /// Request records dropped because [`MAX_RECORDS`] was reached.
    pub records_dropped: u64,
}

/// One request the API answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The client it was attributed to.
    pub client: String,
    /// The status answered.
    pub status: u16,
}

/// One side effect the API performed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideEffect {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The service (host name).
    pub service: String,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// The request body (lossy UTF-8, cut to [`MAX_RECORDED_BODY_BYTES`]).
    pub body: String,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens scaled by 60 000 (one request costs 60 000; refills N per millisecond).
    units: u64,
    last: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct ClientState {
    bucket: Option<Bucket>,
    day: Option<(NaiveDate, u32)>,
}

/// A quota exhausted on purpose (the `quota_exhaust` fault).
#[derive(Debug, Clone, Copy)]
struct Exhausted {
    /// Every request is refused until then.
    until: DateTime<Utc>,
    /// `Retry-After` as an HTTP date.
    http_date: bool,
}

#[derive(Debug)]
struct State {
    config: ApiConfig,
    exhausted: Option<Exhausted>,
    /// Tokens issued before this instant are refused here (`api_token_revoke`).
    revoked_before: Option<DateTime<Utc>>,
    clients: BTreeMap<String, ClientState>,
    idempotency: BTreeMap<(String, String), SimResponse>,
    idempotency_order: VecDeque<(String, String)>,
    counters: ApiCounters,
    requests: Vec<RequestRecord>,
    side_effects: Vec<SideEffect>,
    /// What the request being handled showed (for the world's ledger).
    seen: Observation,
}

/// One API. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct ApiService {
    name: Arc<str>,
    state: Arc<Mutex<State>>,
}

const UNITS_PER_REQUEST: u64 = 60_000;

impl ApiService {
    /// An API configured by `config`.
    pub fn new(config: ApiConfig) -> Self {
        Self {
            name: Arc::from(config.name.as_str()),
            state: Arc::new(Mutex::new(State {
                config,
                exhausted: None,
                revoked_before: None,
                clients: BTreeMap::new(),
                idempotency: BTreeMap::new(),
                idempotency_order: VecDeque::new(),
                counters: ApiCounters::default(),
                requests: Vec::new(),
                side_effects: Vec::new(),
                seen: Observation::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters so far.
    pub fn counters(&self) -> ApiCounters {
        self.lock().counters.clone()
    }

    /// Every request answered so far (up to [`MAX_RECORDS`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Every side effect so far (up to [`MAX_RECORDS`]).
    pub fn side_effects(&self) -> Vec<SideEffect> {
        self.lock().side_effects.clone()
    }

    /// Spends every client's quota until `until`: each request is answered 429
    /// `quota_exceeded` with `Retry-After` up to `until` (as an HTTP date when
    /// `http_date`), and counted as a quota rejection.
    pub fn exhaust_quota(&self, until: DateTime<Utc>, http_date: bool) {
        self.lock().exhausted = Some(Exhausted { until, http_date });
    }

    /// This API alone stops accepting the access tokens issued before `at` (401
    /// `invalid_token`); a token issued later (after a refresh) works again.
    pub fn revoke_tokens_before(&self, at: DateTime<Utc>) {
        self.lock().revoked_before = Some(at);
    }

    /// Changes the base latency.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().config.latency = latency;
    }
}

impl Service for ApiService {
    fn identify(&self, req: &SimRequest, now: DateTime<Utc>) -> Option<String> {
        self.lock().client_of(req, now)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn latency(&self) -> Duration {
        self.lock().config.latency
    }

    fn latency_of(&self, path: &str) -> Duration {
        let s = self.lock();
        s.config
            .path_latency
            .get(path)
            .copied()
            .unwrap_or(s.config.latency)
    }

    fn handle(&self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse {
        self.handle_observed(req, now).0
    }

    fn handle_observed(&self, req: &SimRequest, now: DateTime<Utc>) -> (SimResponse, Observation) {
        let mut s = self.lock();
        s.seen = Observation::default();
        if req.method == http::Method::GET && req.path_only() == "/health" {
            s.counters.health_checks += 1;
            return (
                SimResponse::json(200, &serde_json::json!({ "ok": true })),
                Observation::default(),
            );
        }
        s.counters.calls += 1;
        let (client, response) = s.answer(&self.name, req, now);
        s.seen.client = Some(client.clone());
        match response.status {
            200..=299 => s.counters.ok_2xx += 1,
            429 => s.counters.too_many_429 += 1,
            _ => {}
        }
        if s.requests.len() < MAX_RECORDS {
            s.requests.push(RequestRecord {
                at: now,
                method: req.method.to_string(),
                path: req.path.clone(),
                client,
                status: response.status,
            });
        } else {
            s.counters.records_dropped += 1;
        }
        (response, std::mem::take(&mut s.seen))
    }
}

impl State {
    /// The client the request is attributed to, and the answer.
    fn answer(
        &mut self,
        service: &str,
        req: &SimRequest,
        now: DateTime<Utc>,
    ) -> (String, SimResponse) {
        let client = match self.authenticate(req, now) {
            Ok(client) => client,
            Err((client, response)) => return (client, response),
        };
        if let Some(ex) = self.exhausted
            && now < ex.until
        {
            self.counters.quota_rejections += 1;
            let wait = (ex.until - now).to_std().unwrap_or_default();
            let response = if ex.http_date {
                SimResponse::too_many_requests_until(now, wait, "quota_exceeded")
            } else {
                SimResponse::too_many_requests(wait, "quota_exceeded")
            };
            return (client, response);
        }
        let state = self.clients.entry(client.clone()).or_default();
        if let Some(per_minute) = self.config.rate_limit_per_minute
            && let Err(wait) = take_token(state, per_minute, now)
        {
            self.counters.rate_limit_violations += 1;
            return (client, SimResponse::too_many_requests(wait, "rate_limited"));
        }
        if let Some(quota) = self.config.daily_quota {
            let today = now.with_timezone(&self.config.zone).date_naive();
            let used = match state.day {
                Some((day, used)) if day == today => used,
                _ => 0,
            };
            if used >= quota {
                self.counters.quota_rejections += 1;
                let wait = until_local_midnight(now, self.config.zone);
                return (
                    client,
                    SimResponse::too_many_requests(wait, "quota_exceeded"),
                );
            }
            state.day = Some((today, used + 1));
        }
        let mutating = matches!(
            req.method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
        );
        if !mutating {
            let id = self.counters.calls.to_string();
            let body = serde_json::json!({ "id": id, "ok": true, "path": req.path_only() });
            return (client, SimResponse::json(200, &body));
        }
        let key = req.header_str("idempotency-key").map(str::to_string);
        if let Some(key) = &key
            && let Some(stored) = self.idempotency.get(&(client.clone(), key.clone()))
        {
            self.counters.dedup_hits += 1;
            self.seen.effect = Effect::Replayed;
            return (client, stored.clone());
        }
        self.counters.side_effects += 1;
        self.seen.effect = Effect::Applied;
        let id = self.counters.side_effects.to_string();
        let response = SimResponse::json(200, &serde_json::json!({ "id": id, "ok": true }));
        if self.side_effects.len() < MAX_RECORDS {
            let body = &req.body[..req.body.len().min(MAX_RECORDED_BODY_BYTES)];
            self.side_effects.push(SideEffect {
                at: now,
                service: service.to_string(),
                method: req.method.to_string(),
                path: req.path.clone(),
                idempotency_key: key.clone(),
                body: String::from_utf8_lossy(body).into_owned(),
            });
        }
        if let Some(key) = key {
            let entry = (client.clone(), key);
            self.idempotency.insert(entry.clone(), response.clone());
            self.idempotency_order.push_back(entry);
            while self.idempotency_order.len() > MAX_IDEMPOTENCY_KEYS {
                if let Some(old) = self.idempotency_order.pop_front() {
                    self.idempotency.remove(&old);
                }
            }
        }
        (client, response)
    }

    /// The client `req` is attributed to, as [`Self::authenticate`] would attribute it,
    /// read-only.
    fn client_of(&self, req: &SimRequest, now: DateTime<Utc>) -> Option<String> {
        let Some(oauth) = &self.config.auth else {
            return Some(
                req.header_str("x-client-id")
                    .unwrap_or("anonymous")
                    .to_string(),
            );
        };
        let bearer = req.header_str("authorization").and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })?;
        Some(match oauth.validate(bearer.trim(), now) {
            TokenStatus::Valid { client_id }
            | TokenStatus::Expired { client_id }
            | TokenStatus::Revoked { client_id } => client_id,
            TokenStatus::Unknown => "unknown".to_string(),
        })
    }

    /// The client id, or the 401 to answer.
    fn authenticate(
        &mut self,
        req: &SimRequest,
        now: DateTime<Utc>,
    ) -> Result<String, (String, SimResponse)> {
        let Some(oauth) = &self.config.auth else {
            let client = req.header_str("x-client-id").unwrap_or("anonymous");
            return Ok(client.to_string());
        };
        let bearer = req.header_str("authorization").and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        let status = bearer.map_or(TokenStatus::Unknown, |b| oauth.validate(b.trim(), now));
        let times = bearer.and_then(|b| oauth.token_times(b.trim()));
        let age = times.map_or(0, |(issued, _)| (now - issued).num_seconds());
        self.seen.token = match (&status, times) {
            (TokenStatus::Valid { .. }, _) => TokenSeen::Valid { age_secs: age },
            (TokenStatus::Expired { .. }, Some((_, expires))) => TokenSeen::Expired {
                age_secs: age,
                expired_for_secs: (now - expires).num_seconds(),
            },
            _ => TokenSeen::Invalid,
        };
        let revoked_here = self.revoked_before.is_some_and(|cut| {
            bearer
                .and_then(|b| oauth.issued_at(b.trim()))
                .is_some_and(|issued| issued < cut)
        });
        match status {
            TokenStatus::Valid { client_id } if revoked_here => {
                self.counters.token_invalid_errors += 1;
                Err((client_id, SimResponse::error(401, "invalid_token")))
            }
            TokenStatus::Valid { client_id } => Ok(client_id),
            TokenStatus::Expired { client_id } => {
                self.counters.token_expired_errors += 1;
                Err((client_id, SimResponse::error(401, "token_expired")))
            }
            TokenStatus::Revoked { client_id } => {
                self.counters.token_invalid_errors += 1;
                Err((client_id, SimResponse::error(401, "invalid_token")))
            }
            TokenStatus::Unknown => {
                self.counters.token_invalid_errors += 1;
                Err((
                    "unknown".to_string(),
                    SimResponse::error(401, "invalid_token"),
                ))
            }
        }
    }
}

/// Takes one request's worth from the client's bucket, or says how long until one is there.
fn take_token(
    state: &mut ClientState,
    per_minute: u32,
    now: DateTime<Utc>,
) -> Result<(), Duration> {
    let per_ms = u64::from(per_minute.max(1));
    let capacity = per_ms * UNITS_PER_REQUEST;
    let bucket = state.bucket.get_or_insert(Bucket {
        units: capacity,
        last: now,
    });
    let elapsed_ms = u64::try_from((now - bucket.last).num_milliseconds()).unwrap_or(0);
    bucket.units = bucket
        .units
        .saturating_add(elapsed_ms.saturating_mul(per_ms))
        .min(capacity);
    bucket.last = now.max(bucket.last);
    if bucket.units >= UNITS_PER_REQUEST {
        bucket.units -= UNITS_PER_REQUEST;
        Ok(())
    } else {
        let missing = UNITS_PER_REQUEST - bucket.units;
        Err(Duration::from_millis(missing.div_ceil(per_ms)))
    }
}

/// Time from `now` until the next local midnight in `zone` (DST-aware).
pub fn until_local_midnight(now: DateTime<Utc>, zone: Tz) -> Duration {
    let fallback = Duration::from_secs(24 * 3600);
    let Some(next_day) = now.with_timezone(&zone).date_naive().succ_opt() else {
        return fallback;
    };
    let midnight = next_day.and_time(chrono::NaiveTime::MIN);
    // Where DST skips midnight (e.g. America/Santiago), the day starts at the first
    // valid local time after it; step in half hours, a bounded number of times.
    let next = (0..=6).find_map(|half_hours| {
        zone.from_local_datetime(&(midnight + chrono::Duration::minutes(30 * half_hours)))
            .earliest()
    });
    next.and_then(|t| (t.with_timezone(&Utc) - now).to_std().ok())
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::OAuthConfig;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn get(path: &str) -> SimRequest {
        SimRequest::new(http::Method::GET, path)
    }

    #[test]
    fn token_bucket_limits_bursts_and_refills() {
        let api = ApiService::new(ApiConfig {
            rate_limit_per_minute: Some(3),
            ..ApiConfig::new("api.sim")
        });
        let t = at("2024-06-01T12:00:00Z");
        for _ in 0..3 {
            assert_eq!(api.handle(&get("/x"), t).status, 200);
        }
        let limited = api.handle(&get("/x"), t);
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after"), Some("20"));
        // One token back after 20 s.
        assert_eq!(
            api.handle(&get("/x"), t + chrono::Duration::seconds(20))
                .status,
            200
        );
        let c = api.counters();
        assert_eq!(
            (c.calls, c.ok_2xx, c.rate_limit_violations, c.too_many_429),
            (5, 4, 1, 1)
        );
    }

    proptest::proptest! {
        /// Whatever the arrival pattern, no 60 s window admits more than two buckets'
        /// worth (burst plus refill), and waiting the advertised `Retry-After` always
        /// gets the next request in.
        #[test]
        fn bucket_bounds_any_window_and_retry_after_is_honest(
            per_minute in 1u32..20,
            gaps_ms in proptest::collection::vec(0u64..20_000, 1..200),
        ) {
            let api = ApiService::new(ApiConfig {
                rate_limit_per_minute: Some(per_minute),
                ..ApiConfig::new("api.sim")
            });
            let mut t = at("2024-06-01T12:00:00Z");
            let mut accepted = Vec::new();
            for gap in gaps_ms {
                t += chrono::Duration::milliseconds(i64::try_from(gap).unwrap_or(0));
                let r = api.handle(&get("/x"), t);
                if r.status == 200 {
                    accepted.push(t);
                } else {
                    let wait: i64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
                    t += chrono::Duration::seconds(wait);
                    proptest::prop_assert_eq!(api.handle(&get("/x"), t).status, 200);
                    accepted.push(t);
                }
            }
            let limit = 2 * usize::try_from(per_minute).unwrap_or(usize::MAX);
            for (i, start) in accepted.iter().enumerate() {
                let end = *start + chrono::Duration::seconds(60);
                let in_window = accepted[i..].iter().take_while(|t| **t < end).count();
                proptest::prop_assert!(in_window <= limit, "{} > {}", in_window, limit);
            }
        }
    }

    #[test]
    fn quota_resets_at_local_midnight_across_dst() {
        // 2024-03-31 is the spring-forward day in Berlin: the day has 23 hours.
        let api = ApiService::new(ApiConfig {
            daily_quota: Some(2),
            zone: chrono_tz::Europe::Berlin,
            ..ApiConfig::new("api.sim")
        });
        let t = at("2024-03-31T12:00:00Z"); // 14:00 CEST
        assert_eq!(api.handle(&get("/x"), t).status, 200);
        assert_eq!(api.handle(&get("/x"), t).status, 200);
        let r = api.handle(&get("/x"), t);
        assert_eq!(r.status, 429);
        // Midnight CEST is 22:00 UTC: 10 hours.
        assert_eq!(r.header("retry-after"), Some("36000"));
        assert_eq!(
            api.handle(&get("/x"), at("2024-03-31T21:59:59Z")).status,
            429
        );
        assert_eq!(
            api.handle(&get("/x"), at("2024-03-31T22:00:00Z")).status,
            200
        );
        assert_eq!(api.counters().quota_rejections, 2);
    }

    #[test]
    fn midnight_skipped_by_dst_resolves_to_first_valid_time() {
        // Santiago sprang forward at 2024-09-08 00:00 local -> 01:00.
        let zone = chrono_tz::America::Santiago;
        let now = at("2024-09-07T23:00:00-04:00");
        let wait = until_local_midnight(now, zone);
        assert_eq!(
            wait,
            Duration::from_secs(3600),
            "01:00 -03 is 04:00Z, one hour on"
        );
    }

    #[test]
    fn idempotency_key_replays_without_a_second_side_effect() {
        let api = ApiService::new(ApiConfig::new("api.sim"));
        let t = at("2024-06-01T12:00:00Z");
        let post = SimRequest::new(http::Method::POST, "/posts")
            .header("idempotency-key", "run-1/publish")
            .body("{\"title\":\"a\"}");
        let first = api.handle(&post, t);
        let again = api.handle(&post, t);
        assert_eq!(first, again);
        let naive = SimRequest::new(http::Method::POST, "/posts").body("{}");
        api.handle(&naive, t);
        api.handle(&naive, t);
        let c = api.counters();
        assert_eq!((c.side_effects, c.dedup_hits), (3, 1));
        let effects = api.side_effects();
        assert_eq!(effects[0].idempotency_key.as_deref(), Some("run-1/publish"));
        assert_eq!(effects[0].body, "{\"title\":\"a\"}");
    }

    #[test]
    fn an_exhausted_quota_refuses_until_its_reset_in_seconds_or_as_a_date() {
        let api = ApiService::new(ApiConfig::new("api.sim"));
        let t = at("2026-03-02T10:00:00Z");
        api.exhaust_quota(at("2026-03-02T10:30:00.500Z"), false);
        let r = api.handle(&get("/x"), t);
        assert_eq!((r.status, r.header("retry-after")), (429, Some("1801")));
        assert_eq!(r.body, "{\"error\":\"quota_exceeded\"}");
        api.exhaust_quota(at("2026-03-02T10:30:00.500Z"), true);
        let r = api.handle(&get("/x"), t);
        assert_eq!(
            r.header("retry-after"),
            Some("Mon, 02 Mar 2026 10:30:01 GMT")
        );
        assert_eq!(
            api.handle(&get("/x"), at("2026-03-02T10:30:00.500Z"))
                .status,
            200,
            "reset"
        );
        assert_eq!(api.counters().quota_rejections, 2);
    }

    #[test]
    fn a_token_revoked_at_one_api_works_again_once_refreshed() {
        let oauth = OAuthServer::new("auth.sim", OAuthConfig::default(), 1);
        let api = ApiService::new(ApiConfig {
            auth: Some(oauth.clone()),
            ..ApiConfig::new("api.sim")
        });
        let other = ApiService::new(ApiConfig {
            auth: Some(oauth.clone()),
            ..ApiConfig::new("other.sim")
        });
        let t = at("2026-03-02T10:00:00Z");
        let token = |now| {
            let rt = oauth.issue_refresh_token("c1");
            let req = SimRequest::new(http::Method::POST, "/token")
                .body(format!("grant_type=refresh_token&refresh_token={rt}"));
            let body: serde_json::Value =
                serde_json::from_slice(&oauth.handle(&req, now).body).unwrap_or_default();
            format!(
                "Bearer {}",
                body["access_token"].as_str().unwrap_or_default()
            )
        };
        let old = token(t);
        api.revoke_tokens_before(t + chrono::Duration::minutes(1));
        let later = t + chrono::Duration::minutes(2);
        let refused = api.handle(&get("/x").header("authorization", &old), later);
        assert_eq!(refused.status, 401);
        assert_eq!(refused.body, "{\"error\":\"invalid_token\"}");
        assert_eq!(
            other
                .handle(&get("/x").header("authorization", &old), later)
                .status,
            200,
            "only this API revoked it"
        );
        let fresh = token(later);
        assert_eq!(
            api.handle(&get("/x").header("authorization", &fresh), later)
                .status,
            200
        );
        assert_eq!(api.counters().token_invalid_errors, 1);
    }

    #[test]
    fn bearer_tokens_are_checked_and_expiry_counted() {
        let oauth = OAuthServer::new("auth.sim", OAuthConfig::default(), 1);
        let api = ApiService::new(ApiConfig {
            auth: Some(oauth.clone()),
            ..ApiConfig::new("api.sim")
        });
        let t = at("2024-06-01T12:00:00Z");
        let rt = oauth.issue_refresh_token("c1");
        let token_req = SimRequest::new(http::Method::POST, "/token")
            .body(format!("grant_type=refresh_token&refresh_token={rt}"));
        let body: serde_json::Value =
            serde_json::from_slice(&oauth.handle(&token_req, t).body).unwrap_or_default();
        let bearer = format!(
            "Bearer {}",
            body["access_token"].as_str().unwrap_or_default()
        );
        let call = get("/x").header("authorization", &bearer);
        assert_eq!(api.handle(&call, t).status, 200);
        let expired = api.handle(&call, t + chrono::Duration::hours(1));
        assert_eq!(expired.status, 401);
        assert_eq!(expired.body, "{\"error\":\"token_expired\"}");
        assert_eq!(api.handle(&get("/x"), t).status, 401);
        assert_eq!(
            api.handle(&get("/health"), t).status,
            200,
            "health needs no token"
        );
        let c = api.counters();
        assert_eq!(
            (
                c.token_expired_errors,
                c.token_invalid_errors,
                c.health_checks
            ),
            (1, 1, 1)
        );
        assert_eq!(api.requests()[0].client, "c1");
    }
}
