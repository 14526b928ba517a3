//! The simulated network: in-memory connections from the runner to world services.
//!
//! A connect resolves the host name against the [`ServiceRegistry`], asks the
//! [`FaultState`] what to do, and on success hands the server end of a
//! `tokio::io::duplex` pipe to a hyper HTTP/1.1 server task spawned on the current
//! (runner host) runtime. The runner's unchanged hyper client talks to the client end.
//! Latency, stalls and hangs are `tokio::time` sleeps, so the paused turmoil runtime
//! times them exactly at any tick size.
//!
//! Fault semantics:
//! - DNS failure: `NetErrorKind::Dns` at once. Unknown names fail the same way.
//! - Down: `NetErrorKind::Refused` at once.
//! - Partition: the connect hangs for [`PARTITION_CONNECT_TIMEOUT`], then fails with
//!   `NetErrorKind::TimedOut`; the caller's shorter deadline normally fires first.
//! - Reset: the server reads the request, then drops the connection without answering.
//! - Stall: the server handles the request, then holds the answer back.
//! - 5xx and 429 storms: answered by the connection layer without handling.
//!
//! TLS is not simulated: an `https` target gets the same plain pipe.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use steadfast_core::env::{Connector, NetError, NetErrorKind, Target, WallClock};
use tokio::io::DuplexStream;

use crate::env::SimClock;
use crate::faults::{ConnectVerdict, FaultState, PARTITION_CONNECT_TIMEOUT};
use crate::services::{Service, ServiceRegistry, SimRequest, SimResponse};

/// Bytes buffered in each direction of an in-memory connection.
pub const PIPE_BUFFER_BYTES: usize = 64 * 1024;
/// Request bodies larger than this are answered 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// What the network did per host, for reports and invariant checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostNetStats {
    /// Connect attempts.
    pub connects: u64,
    /// Connects that failed name resolution (injected or unknown name).
    pub dns_failures: u64,
    /// Connects refused (host down).
    pub refused: u64,
    /// Connects that hung (partition).
    pub partitioned: u64,
    /// Requests whose connection was reset.
    pub resets: u64,
    /// Requests whose answer was stalled.
    pub stalls: u64,
    /// Requests answered with an injected 5xx.
    pub injected_5xx: u64,
    /// Requests answered with an injected (storm) 429.
    pub injected_429: u64,
}

/// Per-host network statistics. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    hosts: Arc<Mutex<BTreeMap<String, HostNetStats>>>,
}

impl NetStats {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, HostNetStats>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, host: &str, f: impl FnOnce(&mut HostNetStats)) {
        f(self.lock().entry(host.to_string()).or_default());
    }

    /// The statistics of `host`.
    pub fn host(&self, host: &str) -> HostNetStats {
        self.lock().get(host).cloned().unwrap_or_default()
    }

    /// All hosts' statistics, by name.
    pub fn snapshot(&self) -> BTreeMap<String, HostNetStats> {
        self.lock().clone()
    }
}

/// The runner's connector inside the simulated world.
#[derive(Debug, Clone)]
pub struct SimConnector {
    services: ServiceRegistry,
    faults: FaultState,
    clock: SimClock,
    stats: NetStats,
}

impl SimConnector {
    /// A connector over world-owned services, faults and statistics.
    pub fn new(
        services: ServiceRegistry,
        faults: FaultState,
        clock: SimClock,
        stats: NetStats,
    ) -> Self {
        Self {
            services,
            faults,
            clock,
            stats,
        }
    }

    /// The statistics this connector records into.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }
}

impl Connector for SimConnector {
    type Stream = DuplexStream;

    async fn connect(&self, target: &Target) -> Result<DuplexStream, NetError> {
        let host = target.host.as_str();
        self.stats.bump(host, |s| s.connects += 1);
        let fail = |kind, detail: &str| NetError {
            kind,
            target: target.to_string(),
            detail: detail.to_string(),
        };
        let Some(service) = self.services.get(host) else {
            self.stats.bump(host, |s| s.dns_failures += 1);
            return Err(fail(NetErrorKind::Dns, "no such host"));
        };
        match self.faults.on_connect(host) {
            ConnectVerdict::Accept => {}
            ConnectVerdict::Dns => {
                self.stats.bump(host, |s| s.dns_failures += 1);
                return Err(fail(NetErrorKind::Dns, "name did not resolve"));
            }
            ConnectVerdict::Refuse => {
                self.stats.bump(host, |s| s.refused += 1);
                return Err(fail(NetErrorKind::Refused, "connection refused"));
            }
            ConnectVerdict::Hang => {
                self.stats.bump(host, |s| s.partitioned += 1);
                tokio::time::sleep(PARTITION_CONNECT_TIMEOUT).await;
                return Err(fail(NetErrorKind::TimedOut, "no answer to connect"));
            }
        }
        let (client, server) = tokio::io::duplex(PIPE_BUFFER_BYTES);
        let conn = Connection {
            host: host.to_string(),
            service,
            faults: self.faults.clone(),
            clock: self.clock.clone(),
            stats: self.stats.clone(),
        };
        tokio::spawn(conn.serve(server));
        Ok(client)
    }
}

/// The reason a connection is dropped mid-request.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by injected fault")]
struct InjectedReset;

/// The server side of one in-memory connection.
#[derive(Clone)]
struct Connection {
    host: String,
    service: Arc<dyn Service>,
    faults: FaultState,
    clock: SimClock,
    stats: NetStats,
}

impl Connection {
    async fn serve(self, stream: DuplexStream) {
        let io = hyper_util::rt::TokioIo::new(stream);
        let svc = hyper::service::service_fn(move |req| self.clone().respond(req));
        // The connection ends when the client hangs up or a reset is injected; both
        // are normal here, so the result carries no information.
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }

    async fn respond(
        self,
        req: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<Full<Bytes>>, InjectedReset> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_REQUEST_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return Ok(to_hyper(SimResponse::error(413, "payload_too_large"))),
        };
        let verdict = self.faults.on_request(&self.host);
        if verdict.reset {
            self.stats.bump(&self.host, |s| s.resets += 1);
            return Err(InjectedReset);
        }
        let response = match verdict.injected_status {
            Some(429) => {
                self.stats.bump(&self.host, |s| s.injected_429 += 1);
                let wait = verdict.retry_after.unwrap_or_default();
                SimResponse::too_many_requests(wait, "rate_limited")
            }
            Some(status) => {
                self.stats.bump(&self.host, |s| s.injected_5xx += 1);
                SimResponse::error(status, "injected_server_error")
            }
            None => {
                let request = SimRequest {
                    method: parts.method,
                    path: parts
                        .uri
                        .path_and_query()
                        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
                    headers: parts.headers,
                    body,
                };
                self.service.handle(&request, self.clock.now())
            }
        };
        if verdict.stalled {
            self.stats.bump(&self.host, |s| s.stalls += 1);
        }
        let delay = self.service.latency() + verdict.delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(to_hyper(response))
    }
}

fn to_hyper(response: SimResponse) -> http::Response<Full<Bytes>> {
    let mut out = http::Response::new(Full::new(response.body));
    *out.status_mut() = http::StatusCode::from_u16(response.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &response.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    out
}
