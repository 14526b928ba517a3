//! The simulated network's server side: what a world service does with a connection.
//!
//! The client side is the testkit's `RouteConnector`: a connect to a service's host
//! asks the world's [`FaultState`] (a `ConnectRule`) for a verdict, and on success
//! hands the server end of a `tokio::io::duplex` pipe to [`handler`], which serves it
//! with hyper on the current (runner host) runtime. The runner's unchanged hyper
//! client talks to the client end. Latency, stalls and hangs are `tokio::time` sleeps,
//! so the paused turmoil runtime times them exactly at any tick size.
//!
//! Fault semantics:
//! - DNS failure: `NetErrorKind::Dns` at once. Unknown names fail the same way.
//! - Down: `NetErrorKind::Refused` at once.
//! - Partition: the connect hangs for [`crate::faults::PARTITION_CONNECT_TIMEOUT`], then
//!   fails with `NetErrorKind::TimedOut`; the caller's shorter deadline normally fires
//!   first.
//! - Reset: the server reads the request, then drops the connection without answering.
//! - Stall: the server handles the request, then holds the answer back.
//! - 5xx and 429 storms: answered by the connection layer without handling; a storm's
//!   `Retry-After` in seconds or as an HTTP date.
//! - Bad answers: the request is handled, then its 2xx body is spoiled (empty,
//!   truncated, not JSON, or JSON of the wrong shape), optionally after a stall.
//! - A dead runner (a crash point hit or a kill inside a tick, the host not dropped
//!   yet): its requests reach no service; they hang until the host is dropped.
//!
//! TLS is not simulated: an `https` target gets the same plain pipe.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use steadfast_testkit::{CrashPoints, Handler, RouteConnector, TimeSource};
use tokio::io::DuplexStream;

use crate::env::TurmoilTime;
use crate::faults::FaultState;
use crate::services::ledger::{AnsweredBy, Ledger, Received};
use crate::services::{Observation, Service, SimRequest, SimResponse};

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
    /// 2xx answers whose body was spoiled (empty, truncated, not JSON, wrong shape).
    pub bad_answers: u64,
}

/// The request-side counts per host, as the server side bumps them. Cheap to clone;
/// clones share the table.
///
/// Kept apart from the connector on purpose: the handlers live in the connector's route
/// table, so a handler holding the connector (through [`NetStats`]) made a reference
/// cycle and every world leaked whole (a 10,000-seed sweep grew to 9.5 GB).
#[derive(Debug, Clone, Default)]
struct RequestCounts(Arc<Mutex<BTreeMap<String, HostNetStats>>>);

impl RequestCounts {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, HostNetStats>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, host: &str, f: impl FnOnce(&mut HostNetStats)) {
        f(self.lock().entry(host.to_string()).or_default());
    }
}

/// Per-host network statistics: connects as the connector counted them, requests as
/// the server side did. Cheap to clone; clones share the tables.
#[derive(Debug, Clone)]
pub struct NetStats {
    connector: RouteConnector,
    /// Request-side counts only (the connect fields stay 0 here).
    requests: RequestCounts,
}

impl NetStats {
    /// Statistics over `connector`'s connect counts.
    pub fn new(connector: RouteConnector) -> Self {
        Self {
            connector,
            requests: RequestCounts::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, HostNetStats>> {
        self.requests.lock()
    }

    fn merged(&self, host: &str, requests: Option<&HostNetStats>) -> HostNetStats {
        let connects = self.connector.stats(host);
        HostNetStats {
            connects: connects.connects,
            dns_failures: connects.dns_failures,
            refused: connects.refused,
            partitioned: connects.hung,
            ..requests.cloned().unwrap_or_default()
        }
    }

    /// The statistics of `host`.
    pub fn host(&self, host: &str) -> HostNetStats {
        let requests = self.lock().get(host).cloned();
        self.merged(host, requests.as_ref())
    }

    /// All hosts' statistics, by name.
    pub fn snapshot(&self) -> BTreeMap<String, HostNetStats> {
        let requests = self.lock().clone();
        let mut hosts: Vec<String> = self.connector.all_stats().into_keys().collect();
        hosts.extend(requests.keys().cloned());
        hosts
            .into_iter()
            .map(|host| {
                let merged = self.merged(&host, requests.get(&host));
                (host, merged)
            })
            .collect()
    }
}

/// The handler that serves `service` on each connection to `host`, with the world's
/// request faults; every request is written to `ledger`.
pub fn handler(
    host: &str,
    service: Arc<dyn Service>,
    faults: FaultState,
    time: TurmoilTime,
    stats: NetStats,
    runner: Arc<CrashPoints>,
    ledger: Ledger,
) -> Handler {
    let conn = Connection {
        host: host.to_string(),
        service,
        faults,
        time,
        stats: stats.requests,
        runner,
        ledger,
    };
    Arc::new(move |stream| {
        tokio::spawn(conn.clone().serve(stream));
    })
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
    time: TurmoilTime,
    stats: RequestCounts,
    /// The runner's crash points: once one hit, the process is dead.
    runner: Arc<CrashPoints>,
    ledger: Ledger,
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
        let base_latency = self.service.latency_of(parts.uri.path());
        if self.runner.hit().is_some() {
            // The process died before this request left it: nothing reaches the
            // service, and nobody is left to read an answer.
            return std::future::pending().await;
        }
        let request = SimRequest {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            headers: parts.headers,
            body,
        };
        let now = self.time.now();
        let sleeps = self.time.sleeps();
        let verdict = self.faults.on_request(&self.host);
        // Who sent it, when a fault answers before the service: the judge attributes
        // every 429 and every reset to a client, storms' included.
        let seen_by_fault = || Observation {
            client: self.service.identify(&request, now),
            ..Observation::default()
        };
        if verdict.reset {
            self.stats.bump(&self.host, |s| s.resets += 1);
            self.ledger.record(Received {
                service: &self.host,
                request: &request,
                at: now,
                answered_at: now,
                response: None,
                answered_by: AnsweredBy::Fault(crate::faults::FaultKind::Reset),
                observation: seen_by_fault(),
            });
            return Err(InjectedReset);
        }
        let (response, answered_by, observation) = match verdict.injected_status {
            Some(429) => {
                self.stats.bump(&self.host, |s| s.injected_429 += 1);
                let wait = verdict.retry_after.unwrap_or_default();
                (
                    if verdict.retry_after_date {
                        SimResponse::too_many_requests_until(self.time.now(), wait, "rate_limited")
                    } else {
                        SimResponse::too_many_requests(wait, "rate_limited")
                    },
                    AnsweredBy::Fault(crate::faults::FaultKind::RateLimitStorm),
                    seen_by_fault(),
                )
            }
            Some(status) => {
                self.stats.bump(&self.host, |s| s.injected_5xx += 1);
                (
                    SimResponse::error(status, "injected_server_error"),
                    AnsweredBy::Fault(crate::faults::FaultKind::ServerError),
                    seen_by_fault(),
                )
            }
            None => {
                let (answer, observation) = self.service.handle_observed(&request, now);
                let answer = match verdict.bad_answer {
                    Some(shape) if (200..300).contains(&answer.status) => {
                        self.stats.bump(&self.host, |s| s.bad_answers += 1);
                        answer.spoiled(shape)
                    }
                    _ => answer,
                };
                (answer, AnsweredBy::Service, observation)
            }
        };
        if verdict.stalled {
            self.stats.bump(&self.host, |s| s.stalls += 1);
        }
        let delay = base_latency + verdict.delay;
        self.ledger.record(Received {
            service: &self.host,
            request: &request,
            at: now,
            answered_at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
            response: Some(&response),
            answered_by,
            observation,
        });
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.time.sleeps() != sleeps {
            // The runner's host slept while this answer was on its way: on wake its
            // connection is gone (the request was handled; the answer is lost).
            self.stats.bump(&self.host, |s| s.resets += 1);
            return Err(InjectedReset);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::driver::simulate;
    use crate::faults::FaultKind;
    use crate::scenario::{Profile, Scenario};
    use crate::services::ledger::AnsweredBy;

    #[test]
    fn a_storms_429s_and_resets_name_the_client_that_sent_them() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/rate-limit-storm.toml");
        let s = Scenario::load(&path).unwrap_or_else(|d| panic!("{d}"));
        let healing = Profile::named("self-healing").unwrap();
        let run = simulate(&s, 1, healing, &mut |_| {}).unwrap();
        let storm: Vec<Option<String>> = run.world.ledger().with_entries(|entries| {
            entries
                .iter()
                .filter(|e| e.answered_by == AnsweredBy::Fault(FaultKind::RateLimitStorm))
                .map(|e| e.client.clone())
                .collect()
        });
        assert!(!storm.is_empty(), "the storm answered some requests");
        assert!(
            storm.iter().all(|c| c.as_deref() == Some("steadfast")),
            "every storm 429 names the runner's client: {storm:?}"
        );
    }
}
