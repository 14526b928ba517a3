//! `[patterns]`: which self-healing patterns are on.

use super::reader::Table;
pub use crate::wake::ClockMode;

/// Pattern switches. Production keeps them all on; the simulator's profiles turn
/// them off to measure what each buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Patterns {
    /// Pattern 1: how failed calls are retried.
    pub retry: RetryMode,
    /// Pattern 1: the jitter of backoff delays.
    pub jitter: Jitter,
    /// Pattern 1: per-service retry budget.
    pub retry_budget: bool,
    /// Pattern 2: refresh tokens before they expire.
    pub proactive_refresh: bool,
    /// Pattern 3: heartbeat monitor.
    pub heartbeat: bool,
    /// Pattern 4: per-job error boundaries and degraded steps.
    pub isolation: bool,
    /// Pattern 5: checkpoints and idempotency keys.
    pub checkpoints: bool,
    /// Pattern 6: time windows.
    pub windows: bool,
    /// Pattern 7: circuit breakers.
    pub breakers: bool,
    /// Pattern 4: output contracts; a 2xx that breaks its step's `expect` is a failure.
    pub contracts: bool,
    /// Pattern 4: step dependencies; a step runs only after the steps it `needs` are done.
    pub needs: bool,
    /// Pattern 1: per-service gates; a Retry-After, a quota reset or an open breaker
    /// holds every job's calls to that service until it passes.
    pub gates: bool,
    /// Pattern 7: a health request probes an open breaker when its cooldown ends,
    /// rather than the next scheduled call.
    pub probes: bool,
    /// How the schedule keeps time across sleeps and clock steps (part of pattern 3's
    /// watch over the runner itself): wall clock with wake detection, or the naive
    /// monotonic wait.
    pub clock: ClockMode,
}

impl Patterns {
    /// Every pattern on: the self-healing profile and the production default.
    pub const ALL: Self = Self {
        retry: RetryMode::Backoff,
        jitter: Jitter::Full,
        retry_budget: true,
        proactive_refresh: true,
        heartbeat: true,
        isolation: true,
        checkpoints: true,
        windows: true,
        breakers: true,
        contracts: true,
        needs: true,
        gates: true,
        probes: true,
        clock: ClockMode::Wall,
    };

    /// What the field report started with ("the first instinct when something fails:
    /// retry immediately"): a failed call is retried at once a few times with no
    /// backoff, jitter or budget; a token is refreshed only after a 401, and that run
    /// then gives up and "will retry next cycle"; no heartbeat, one error boundary
    /// around everything (the first failed step ends the run), no checkpoints, windows
    /// or breakers. The attempt count is the profile's (`sim`'s naive profile: 3).
    pub const NAIVE: Self = Self {
        retry: RetryMode::Immediate,
        jitter: Jitter::None,
        retry_budget: false,
        proactive_refresh: false,
        heartbeat: false,
        isolation: false,
        checkpoints: false,
        windows: false,
        breakers: false,
        contracts: false,
        needs: false,
        gates: false,
        probes: false,
        clock: ClockMode::Monotonic,
    };
}

impl Default for Patterns {
    fn default() -> Self {
        Self::ALL
    }
}

/// How failed calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// Never retry.
    Off,
    /// Retry at once, up to the attempt limit (the naive habit); a 401 is not retried:
    /// the token is refreshed and the run "will retry next cycle".
    Immediate,
    /// Exponential backoff with jitter.
    Backoff,
}

/// The jitter applied to exponential backoff (AWS "Exponential Backoff And Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// `min(cap, base * 2^n)`.
    None,
    /// Half fixed, half random.
    Equal,
    /// Uniform in `[0, min(cap, base * 2^n)]` (the default).
    Full,
    /// `min(cap, uniform(base, prev * 3))`.
    Decorrelated,
}

/// The keys of `[patterns]`.
pub(crate) const KEYS: &[&str] = &[
    "retry",
    "jitter",
    "retry_budget",
    "proactive_refresh",
    "heartbeat",
    "isolation",
    "checkpoints",
    "windows",
    "breakers",
    "contracts",
    "needs",
    "gates",
    "probes",
    "clock",
];

/// Reads `[patterns]` (absent: every pattern on).
pub(crate) fn read(t: Option<Table<'_>>) -> Patterns {
    let mut pat = Patterns::ALL;
    let Some(t) = t else {
        return pat;
    };
    t.finish();
    match t.choice("retry", &["off", "immediate", "backoff"]) {
        Some("off") => pat.retry = RetryMode::Off,
        Some("immediate") => pat.retry = RetryMode::Immediate,
        Some(_) => pat.retry = RetryMode::Backoff,
        None => {}
    }
    match t.choice("jitter", &["none", "equal", "full", "decorrelated"]) {
        Some("none") => pat.jitter = Jitter::None,
        Some("equal") => pat.jitter = Jitter::Equal,
        Some("decorrelated") => pat.jitter = Jitter::Decorrelated,
        Some(_) => pat.jitter = Jitter::Full,
        None => {}
    }
    match t.choice("clock", &["wall", "monotonic"]) {
        Some("monotonic") => pat.clock = ClockMode::Monotonic,
        Some(_) => pat.clock = ClockMode::Wall,
        None => {}
    }
    let switches: [(&'static str, &mut bool); 11] = [
        ("retry_budget", &mut pat.retry_budget),
        ("proactive_refresh", &mut pat.proactive_refresh),
        ("heartbeat", &mut pat.heartbeat),
        ("isolation", &mut pat.isolation),
        ("checkpoints", &mut pat.checkpoints),
        ("windows", &mut pat.windows),
        ("breakers", &mut pat.breakers),
        ("contracts", &mut pat.contracts),
        ("needs", &mut pat.needs),
        ("gates", &mut pat.gates),
        ("probes", &mut pat.probes),
    ];
    for (key, slot) in switches {
        if let Some(b) = t.boolean(key) {
            *slot = b;
        }
    }
    pat
}
