//! `[services.<name>]`: the external APIs steps call, with their breakers.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::duration;
use super::reader::Table;
use super::url::Url;

/// The name of a declared service. The reader makes one only for a name that has a
/// `[services]` entry, so a step's service is never looked up with a fallback.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(Arc<str>);

impl ServiceId {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// For configurations built by hand (tests); the reader checks the name exists.
impl From<&str> for ServiceId {
    fn from(name: &str) -> Self {
        Self(name.into())
    }
}

impl Borrow<str> for ServiceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[services.<name>]`: an external API.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The service's name.
    pub name: String,
    /// A URL probed by the heartbeat monitor (GET, 2xx = healthy).
    pub health_url: Option<Url>,
    /// One call's timeout (connect + response), default 30 s.
    pub call_timeout: Duration,
    /// Breaker settings.
    pub breaker: BreakerConfig,
}

/// Circuit-breaker settings of one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 3).
    pub failure_threshold: u32,
    /// Failure rate over the window that opens it (default 0.5).
    pub failure_rate: f64,
    /// Calls in the rate window (default 20; the rate rule needs at least this many).
    pub window_calls: u32,
    /// First open period (default 300 s).
    pub cooldown: Duration,
    /// Largest open period after repeated trips (default 3600 s).
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            failure_rate: 0.5,
            window_calls: 20,
            cooldown: Duration::from_secs(300),
            max_cooldown: Duration::from_secs(3600),
        }
    }
}

const KEYS: &[&str] = &["health_url", "call_timeout", "breaker"];
const BREAKER_KEYS: &[&str] = &[
    "failure_threshold",
    "failure_rate",
    "window_calls",
    "cooldown",
    "max_cooldown",
];
/// At most this many services.
pub const MAX_SERVICES: usize = 1_000;

/// Reads `[services]` from the top-level table.
pub(crate) fn read(top: &Table<'_>) -> BTreeMap<String, ServiceConfig> {
    let mut out = BTreeMap::new();
    let services = top.named_tables(
        "services",
        "service name",
        MAX_SERVICES,
        KEYS,
        "write it as a [services.NAME] section",
    );
    for (name, _, s) in services {
        s.finish();
        let health_url = s.url("health_url");
        let call_timeout = s
            .positive_duration("call_timeout")
            .map_or(Duration::from_secs(30), |(d, _)| d);
        let breaker = s
            .table("breaker", BREAKER_KEYS)
            .map_or_else(BreakerConfig::default, |b| breaker(&b));
        out.insert(
            name.to_string(),
            ServiceConfig {
                name: name.to_string(),
                health_url,
                call_timeout,
                breaker,
            },
        );
    }
    out
}

fn breaker(t: &Table<'_>) -> BreakerConfig {
    let mut b = BreakerConfig::default();
    t.finish();
    if let Some(n) = t.u32_in("failure_threshold", 1, 1000) {
        b.failure_threshold = n;
    }
    if let Some(x) = t.fraction("failure_rate", false) {
        b.failure_rate = x;
    }
    if let Some(n) = t.u32_in("window_calls", 1, 10_000) {
        b.window_calls = n;
    }
    let cooldown = t.positive_duration("cooldown");
    let max_cooldown = t.positive_duration("max_cooldown");
    if let Some((d, _)) = &cooldown {
        b.cooldown = *d;
    }
    if let Some((d, _)) = &max_cooldown {
        b.max_cooldown = *d;
    }
    if b.max_cooldown < b.cooldown {
        let (key, span) = match (&max_cooldown, &cooldown) {
            (Some((_, span)), _) => ("max_cooldown", span),
            (None, Some((_, span))) => ("cooldown", span),
            (None, None) => ("max_cooldown", t.span()),
        };
        t.error_hint(
            span,
            key,
            format!(
                "max_cooldown ({}) is shorter than cooldown ({})",
                duration::format(b.max_cooldown),
                duration::format(b.cooldown)
            ),
            "repeated trips lengthen the cooldown up to max_cooldown, so it must be at least cooldown",
        );
    }
    b
}
