//! The fake network: named hosts routed to in-process handlers over in-memory pipes.
//!
//! Why this shape: the runner's unchanged hyper client talks to a `tokio::io::duplex`
//! pipe whose other end a handler serves (a hyper service in a task), so tests and the
//! simulator exercise the real HTTP code without sockets, and paused time times every
//! delay exactly. What happens to a connect attempt is decided in one place, turmoil
//! style: a [`ConnectRule`] sees the attempt and returns a [`ConnectVerdict`]. The
//! simulator's fault switches are such a rule; tests flip single hosts with
//! [`RouteConnector::fail`]. What happens after the connect (resets, stalls, injected
//! answers) is the handler's business.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use steadfast_core::env::{Connector, NetError, NetErrorKind, Target};
use tokio::io::DuplexStream;

/// Bytes buffered in each direction of an in-memory connection.
pub const PIPE_BUFFER_BYTES: usize = 64 * 1024;
/// At most this many hosts get their own [`ConnectStats`]; attempts to further names
/// are still counted in [`RouteConnector::connects`].
pub const MAX_STATS_HOSTS: usize = 4096;

/// Serves one in-memory connection (the server end of a duplex pipe).
pub type Handler = Arc<dyn Fn(DuplexStream) + Send + Sync>;

/// What becomes of one connect attempt to a routed host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectVerdict {
    /// Open the connection.
    Accept,
    /// Fail at once with this kind (`Dns`: the name did not resolve; `Refused`: the
    /// host is down; others as named).
    Fail(NetErrorKind),
    /// No answer: hang this long, then fail with `TimedOut` (a partition).
    Hang(Duration),
}

/// Decides the fate of connect attempts (the network's fault model).
pub trait ConnectRule: fmt::Debug + Send + Sync + 'static {
    /// The verdict for one attempt to `target`, a host that has a route.
    fn on_connect(&self, target: &Target) -> ConnectVerdict;
}

/// What connect attempts to one host came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectStats {
    /// Attempts.
    pub connects: u64,
    /// Attempts that failed name resolution (no route, or the verdict).
    pub dns_failures: u64,
    /// Attempts refused.
    pub refused: u64,
    /// Attempts that hung.
    pub hung: u64,
    /// Attempts failed with another kind.
    pub other_failures: u64,
}

#[derive(Default)]
struct Routes {
    handlers: BTreeMap<String, Handler>,
    /// Per-host switches set by [`RouteConnector::fail`]; they win over the rule.
    failing: BTreeMap<String, NetErrorKind>,
    rule: Option<Arc<dyn ConnectRule>>,
    stats: BTreeMap<String, ConnectStats>,
}

/// Routes host names to in-process handlers; other names fail DNS. Cheap to clone;
/// clones share routes, rule and statistics.
#[derive(Default, Clone)]
pub struct RouteConnector {
    routes: Arc<Mutex<Routes>>,
    connects: Arc<AtomicU64>,
}

impl fmt::Debug for RouteConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.lock();
        f.debug_struct("RouteConnector")
            .field("hosts", &routes.handlers.keys().collect::<Vec<_>>())
            .field("failing", &routes.failing)
            .field("rule", &routes.rule)
            .finish_non_exhaustive()
    }
}

/// The detail of a failed connect (never a secret).
fn detail(kind: NetErrorKind) -> &'static str {
    match kind {
        NetErrorKind::Dns => "name did not resolve",
        NetErrorKind::Refused => "connection refused",
        NetErrorKind::Reset => "connection reset",
        NetErrorKind::TimedOut => "no answer to connect",
        NetErrorKind::Tls => "tls handshake failed",
        NetErrorKind::Other => "injected fault",
    }
}

impl RouteConnector {
    fn lock(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `host` to `handler`.
    pub fn route(&self, host: &str, handler: Handler) {
        self.lock().handlers.insert(host.to_string(), handler);
    }

    /// Installs the rule that judges every connect to a routed host (replacing one).
    pub fn set_rule(&self, rule: Arc<dyn ConnectRule>) {
        self.lock().rule = Some(rule);
    }

    /// Makes connections to `host` fail with `kind` until [`Self::heal`].
    pub fn fail(&self, host: &str, kind: NetErrorKind) {
        self.lock().failing.insert(host.to_string(), kind);
    }

    /// Removes a switch set by [`Self::fail`].
    pub fn heal(&self, host: &str) {
        self.lock().failing.remove(host);
    }

    /// Connect attempts so far, to any name.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::SeqCst)
    }

    /// What attempts to `host` came to.
    pub fn stats(&self, host: &str) -> ConnectStats {
        self.lock().stats.get(host).cloned().unwrap_or_default()
    }

    /// Every host's [`ConnectStats`], by name.
    pub fn all_stats(&self) -> BTreeMap<String, ConnectStats> {
        self.lock().stats.clone()
    }

    /// Counts the attempt and decides it.
    fn decide(&self, target: &Target) -> Decision {
        self.connects.fetch_add(1, Ordering::SeqCst);
        let mut routes = self.lock();
        let decision = match routes.handlers.get(&target.host).cloned() {
            None => Decision::NoSuchHost,
            Some(handler) => {
                let verdict = match routes.failing.get(&target.host) {
                    Some(kind) => ConnectVerdict::Fail(*kind),
                    None => routes
                        .rule
                        .as_ref()
                        .map_or(ConnectVerdict::Accept, |r| r.on_connect(target)),
                };
                match verdict {
                    ConnectVerdict::Accept => Decision::Serve(handler),
                    ConnectVerdict::Fail(kind) => Decision::Fail(kind),
                    ConnectVerdict::Hang(wait) => Decision::Hang(wait),
                }
            }
        };
        let known = routes.stats.len();
        let stats = match routes.stats.get_mut(&target.host) {
            Some(stats) => Some(stats),
            None if known < MAX_STATS_HOSTS => {
                Some(routes.stats.entry(target.host.clone()).or_default())
            }
            None => None,
        };
        if let Some(stats) = stats {
            stats.connects += 1;
            match decision {
                Decision::Serve(_) => {}
                Decision::NoSuchHost | Decision::Fail(NetErrorKind::Dns) => stats.dns_failures += 1,
                Decision::Fail(NetErrorKind::Refused) => stats.refused += 1,
                Decision::Fail(_) => stats.other_failures += 1,
                Decision::Hang(_) => stats.hung += 1,
            }
        }
        decision
    }
}

/// What [`RouteConnector::decide`] made of one attempt.
enum Decision {
    Serve(Handler),
    NoSuchHost,
    Fail(NetErrorKind),
    Hang(Duration),
}

impl Connector for RouteConnector {
    type Stream = DuplexStream;

    async fn connect(&self, target: &Target) -> Result<DuplexStream, NetError> {
        let fail = |kind, detail: &str| NetError {
            kind,
            target: target.to_string(),
            detail: detail.to_string(),
        };
        match self.decide(target) {
            Decision::Serve(handler) => {
                let (client, server) = tokio::io::duplex(PIPE_BUFFER_BYTES);
                handler(server);
                Ok(client)
            }
            Decision::NoSuchHost => Err(fail(NetErrorKind::Dns, "no such host")),
            Decision::Fail(kind) => Err(fail(kind, detail(kind))),
            Decision::Hang(wait) => {
                tokio::time::sleep(wait).await;
                Err(fail(NetErrorKind::TimedOut, detail(NetErrorKind::TimedOut)))
            }
        }
    }
}

/// Serves a hyper service on one in-memory connection, in a spawned task.
pub fn serve<S>(stream: DuplexStream, service: S)
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str) -> Target {
        Target {
            host: host.to_string(),
            port: 443,
            tls: true,
        }
    }

    /// Refuses `down`, hangs `far` for a minute, accepts the rest.
    #[derive(Debug)]
    struct Rule;

    impl ConnectRule for Rule {
        fn on_connect(&self, target: &Target) -> ConnectVerdict {
            match target.host.as_str() {
                "down" => ConnectVerdict::Fail(NetErrorKind::Refused),
                "far" => ConnectVerdict::Hang(Duration::from_secs(60)),
                _ => ConnectVerdict::Accept,
            }
        }
    }

    fn connector() -> RouteConnector {
        let net = RouteConnector::default();
        for host in ["up", "down", "far"] {
            net.route(host, Arc::new(|_server: DuplexStream| {}));
        }
        net.set_rule(Arc::new(Rule));
        net
    }

    async fn kind(net: &RouteConnector, host: &str) -> Option<NetErrorKind> {
        net.connect(&target(host)).await.err().map(|e| e.kind)
    }

    #[tokio::test(start_paused = true)]
    async fn the_rule_judges_routed_hosts_and_unknown_names_fail_dns() {
        let net = connector();
        assert_eq!(kind(&net, "up").await, None);
        assert_eq!(kind(&net, "down").await, Some(NetErrorKind::Refused));
        let before = tokio::time::Instant::now();
        assert_eq!(kind(&net, "far").await, Some(NetErrorKind::TimedOut));
        assert_eq!(
            before.elapsed(),
            Duration::from_secs(60),
            "hung its full time"
        );
        let err = net.connect(&target("nowhere")).await.unwrap_err();
        assert_eq!(
            (err.kind, err.detail.as_str()),
            (NetErrorKind::Dns, "no such host")
        );
        assert_eq!(net.connects(), 4);
        let far = net.stats("far");
        assert_eq!((far.connects, far.hung), (1, 1));
        assert_eq!(net.stats("nowhere").dns_failures, 1);
        assert_eq!(net.stats("down").refused, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_switch_wins_over_the_rule_until_healed() {
        let net = connector();
        net.fail("up", NetErrorKind::Reset);
        assert_eq!(kind(&net, "up").await, Some(NetErrorKind::Reset));
        net.heal("up");
        assert_eq!(kind(&net, "up").await, None);
        assert_eq!(net.stats("up").other_failures, 1);
        assert_eq!(net.all_stats().len(), 1);
    }
}
