//! Runner profiles: which self-healing patterns are on.
//!
//! `self-healing` is the production default (every pattern). `naive` is what the field
//! report started with: immediate retries, reactive token refresh only, no heartbeat or
//! alerting, no isolation (one job's fatal error stops the runner), no checkpoints, no
//! windows, no breakers, no call timeouts and no supervisor to restart a dead process.
//! `no-<pattern>` is self-healing with one pattern off, for ablation.

use steadfast_core::config::{Jitter, Patterns, RetryMode};

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
        }
    }
}

const ON: Patterns = Patterns::ALL;

/// Every profile `--profile` accepts, in the order reports list them: the one list.
pub const ALL: [Profile; 11] = [
    Profile::healing("self-healing", ON),
    Profile {
        name: "naive",
        patterns: Patterns::NAIVE,
        call_timeouts: false,
        supervised: false,
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
