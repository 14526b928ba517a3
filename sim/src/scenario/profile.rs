//! Runner profiles: which self-healing patterns are on.
//!
//! `self-healing` is the production default (every pattern). `naive` is the field
//! report's "before" code: immediate retries (3 attempts, no backoff, jitter or
//! budget), reactive token refresh only (after a 401 the token is refreshed and the run
//! gives up until the next cycle), no heartbeat or alerting, one error boundary (the
//! first failed step ends the run, no degraded steps; a fatal error stops the runner),
//! no checkpoints, no windows, no breakers, no call timeouts and no supervisor to
//! restart a dead process.
//! `no-<pattern>` is self-healing with one pattern off, for ablation (`no-wall-clock`:
//! the schedule waits on the monotonic clock, as the naive runner does).

use steadfast_core::config::{ClockMode, Jitter, Patterns, RetryMode};

/// A named set of pattern switches plus the process-level habits that go with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Profile {
    /// The profile's name.
    pub name: &'static str,
    /// The runner's pattern switches.
    pub patterns: Patterns,
    /// Whether HTTP calls have a timeout (the naive scripts had none).
    pub call_timeouts: bool,
    /// Whether a supervisor (launchd `KeepAlive`, systemd `Restart=`) restarts a dead
    /// runner; `runner install` sets one up.
    pub supervised: bool,
    /// A fixed attempt count replacing the scenario's `[retry] max_attempts` (the naive
    /// scripts' `for attempt in range(3)`); `None` keeps the scenario's.
    pub max_attempts: Option<u32>,
}

impl Profile {
    /// A supervised profile with call timeouts and `patterns` (self-healing, or an
    /// ablation of it with one pattern off).
    const fn healing(name: &'static str, patterns: Patterns) -> Self {
        Self {
            name,
            patterns,
            call_timeouts: true,
            supervised: true,
            max_attempts: None,
        }
    }
}

const ON: Patterns = Patterns::ALL;

/// The naive profile's attempts per call, the first included: a "retry immediately"
/// loop of a script, small and fixed.
pub const NAIVE_ATTEMPTS: u32 = 3;

/// Every profile `--profile` accepts, in the order reports list them: the one list.
pub const ALL: [Profile; 16] = [
    Profile::healing("self-healing", ON),
    Profile {
        name: "naive",
        patterns: Patterns::NAIVE,
        call_timeouts: false,
        supervised: false,
        max_attempts: Some(NAIVE_ATTEMPTS),
    },
    Profile::healing(
        "no-retry",
        Patterns {
            retry: RetryMode::Off,
            ..ON
        },
    ),
    Profile::healing(
        "no-jitter",
        Patterns {
            jitter: Jitter::None,
            ..ON
        },
    ),
    Profile::healing(
        "no-proactive-refresh",
        Patterns {
            proactive_refresh: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-heartbeat",
        Patterns {
            heartbeat: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-isolation",
        Patterns {
            isolation: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-checkpoints",
        Patterns {
            checkpoints: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-windows",
        Patterns {
            windows: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-breakers",
        Patterns {
            breakers: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-budget",
        Patterns {
            retry_budget: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-contracts",
        Patterns {
            contracts: false,
            ..ON
        },
    ),
    Profile::healing("no-needs", Patterns { needs: false, ..ON }),
    Profile::healing("no-gates", Patterns { gates: false, ..ON }),
    Profile::healing(
        "no-probes",
        Patterns {
            probes: false,
            ..ON
        },
    ),
    Profile::healing(
        "no-wall-clock",
        Patterns {
            clock: ClockMode::Monotonic,
            ..ON
        },
    ),
];

/// The names of every profile, in [`ALL`]'s order.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|p| p.name)
}

impl Profile {
    /// The profile called `name`, if there is one.
    pub fn named(name: &str) -> Option<Self> {
        ALL.iter().find(|p| p.name == name).copied()
    }

    /// Whether alerts reach the operator (alerting belongs to the heartbeat pattern).
    pub fn alerts_delivered(&self) -> bool {
        self.patterns.heartbeat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_resolves_and_differs_from_self_healing() {
        let healing = Profile::named("self-healing").unwrap();
        for name in names() {
            let p = Profile::named(name).unwrap();
            assert_eq!(p.name, name);
            if name != "self-healing" {
                assert_ne!(p, healing, "{name} must switch something off");
            }
        }
        assert!(Profile::named("paranoid").is_none());
    }
}
