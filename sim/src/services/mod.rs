//! Simulated external services: an OAuth2 token server and rate-limited APIs.
//!
//! A service is a synchronous state machine over world-owned state: it sees one parsed
//! request and the simulated wall time, and returns one response. The connection layer
//! ([`crate::net`]) speaks HTTP/1.1 with hyper, applies faults and latency, and calls
//! [`Service::handle`]. Keeping services free of I/O makes them deterministic and lets
//! their state outlive a crash of the runner host.

pub mod api;
pub mod oauth;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use api::{ApiConfig, ApiCounters, ApiService, RequestRecord, SideEffect};
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
