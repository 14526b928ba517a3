//! Simulated external services: an OAuth2 token server and rate-limited APIs.
//!
//! A service is a synchronous state machine over world-owned state: it sees one parsed
//! request and the simulated wall time, and returns one response. The connection layer
//! ([`crate::net`]) speaks HTTP/1.1 with hyper, applies faults and latency, and calls
//! [`Service::handle`]. Keeping services free of I/O makes them deterministic and lets
//! their state outlive a crash of the runner host.

pub mod api;
pub mod ledger;
pub mod oauth;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::faults::BadShape;

pub use api::{ApiConfig, ApiCounters, ApiService, RequestRecord, SideEffect};
pub use ledger::{Ledger, LedgerEntry, Observation};
pub use oauth::{OAuthConfig, OAuthCounters, OAuthServer, TokenStatus};

/// One request as a service sees it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Method.
    pub method: http::Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Headers. May hold an `Authorization` header: never log a request.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl SimRequest {
    /// A request without headers or body.
    pub fn new(method: http::Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header (invalid names or values are ignored: test helper).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            self.headers.append(n, v);
        }
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// A header as text, if present and valid.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("/")
    }
}

/// One response from a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimResponse {
    /// Status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl SimResponse {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: Bytes::from(value.to_string()),
        }
    }

    /// A JSON error body `{"error": code}`.
    pub fn error(status: u16, code: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": code }))
    }

    /// A 429 whose `Retry-After` is an HTTP date: `now + retry_after`, rounded up to the
    /// second (the format's resolution), so waiting until it is always long enough.
    pub fn too_many_requests_until(now: DateTime<Utc>, retry_after: Duration, code: &str) -> Self {
        let at = now + chrono::Duration::from_std(retry_after).unwrap_or(chrono::Duration::MAX);
        let whole = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        let at = DateTime::from_timestamp(whole, 0).unwrap_or(at);
        let mut r = Self::error(429, code);
        r.headers.push((
            "retry-after".to_string(),
            at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ));
        r
    }

    /// This 200 spoiled as `shape` (a 2xx answer whose body a client cannot use).
    pub fn spoiled(mut self, shape: BadShape) -> Self {
        self.body = match shape {
            BadShape::Empty => Bytes::new(),
            BadShape::Truncated => self.body.slice(..self.body.len() / 2),
            BadShape::NotJson => {
                for (name, value) in &mut self.headers {
                    if name.eq_ignore_ascii_case("content-type") {
                        *value = "text/html".to_string();
                    }
                }
                Bytes::from_static(
                    b"<html><body><h1>Service temporarily unavailable</h1></body></html>",
                )
            }
            BadShape::WrongShape => {
                let original: serde_json::Value =
                    serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null);
                Bytes::from(serde_json::json!({ "data": original }).to_string())
            }
        };
        self
    }

    /// A 429 with `Retry-After` in whole seconds (rounded up, at least 1).
    pub fn too_many_requests(retry_after: Duration, code: &str) -> Self {
        let secs = retry_after
            .as_secs()
            .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
            .max(1);
        let mut r = Self::error(429, code);
        r.headers
            .push(("retry-after".to_string(), secs.to_string()));
        r
    }

    /// A header value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A simulated service.
pub trait Service: Send + Sync + 'static {
    /// The host name it answers on.
    fn name(&self) -> &str;

    /// How long every answer takes before faults add to it.
    fn latency(&self) -> Duration {
        Duration::ZERO
    }

    /// How long an answer to a request for `path` (without its query) takes before
    /// faults add to it: a long step (a render, an upload) has its own.
    fn latency_of(&self, path: &str) -> Duration {
        let _ = path;
        self.latency()
    }

    /// Handles one request at simulated wall time `now`.
    fn handle(&self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse;

    /// The client `req` would be attributed to, without handling it (no counters, no
    /// side effect): the ledger's attribution of a request a fault answered before the
    /// service saw it (a storm's 429, an injected 5xx, a reset). By default: none.
    fn identify(&self, req: &SimRequest, now: DateTime<Utc>) -> Option<String> {
        let _ = (req, now);
        None
    }

    /// Handles one request and says what it saw and did, for the world's ledger
    /// (by default: nothing beyond the answer).
    fn handle_observed(&self, req: &SimRequest, now: DateTime<Utc>) -> (SimResponse, Observation) {
        (self.handle(req, now), Observation::default())
    }
}

/// Host name -> service. Cheap to clone; clones share the table.
#[derive(Clone, Default)]
pub struct ServiceRegistry {
    services: Arc<Mutex<BTreeMap<String, Arc<dyn Service>>>>,
}

impl std::fmt::Debug for ServiceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceRegistry")
            .field("hosts", &self.hosts())
            .finish()
    }
}

impl ServiceRegistry {
    /// Serves `service` under its name (replacing any previous one).
    pub fn register(&self, service: Arc<dyn Service>) {
        self.lock().insert(service.name().to_string(), service);
    }

    /// The service behind `host`, if one is registered.
    pub fn get(&self, host: &str) -> Option<Arc<dyn Service>> {
        self.lock().get(host).cloned()
    }

    /// Registered host names, sorted.
    pub fn hosts(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<dyn Service>>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A 64-bit mix (splitmix64) so one world seed yields independent sub-seeds.
pub(crate) fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_retry_after_date_is_rounded_up_and_reads_back_as_the_wait() {
        let now = at("2026-03-02T13:14:00.250Z");
        let r = SimResponse::too_many_requests_until(now, Duration::from_secs(90), "x");
        let value = r.header("retry-after").unwrap_or_default();
        assert_eq!(value, "Mon, 02 Mar 2026 13:15:31 GMT");
        // The runner's own parser reads it as a wait that is never too short.
        let wait = steadfast_core::retry::retry_after::parse(value, now);
        assert_eq!(wait, Some(Duration::from_millis(90_750)));
    }

    #[test]
    fn spoiled_answers_keep_their_status_and_lose_their_use() {
        let ok = SimResponse::json(200, &serde_json::json!({ "id": "7", "ok": true }));
        let empty = ok.clone().spoiled(BadShape::Empty);
        assert_eq!((empty.status, empty.body.len()), (200, 0));
        let cut = ok.clone().spoiled(BadShape::Truncated);
        assert!(serde_json::from_slice::<serde_json::Value>(&cut.body).is_err());
        assert!(ok.body.starts_with(&cut.body) && cut.body.len() < ok.body.len());
        let html = ok.clone().spoiled(BadShape::NotJson);
        assert_eq!(html.header("content-type"), Some("text/html"));
        assert!(serde_json::from_slice::<serde_json::Value>(&html.body).is_err());
        let wrong = ok.spoiled(BadShape::WrongShape);
        let v: serde_json::Value = serde_json::from_slice(&wrong.body).unwrap_or_default();
        assert_eq!(
            v.pointer("/id"),
            None,
            "the field a later step extracts is gone"
        );
        assert_eq!(v.pointer("/data/id"), Some(&serde_json::json!("7")));
    }
}
