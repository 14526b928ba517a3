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

/// Every profile name `--profile` accepts, in the order reports list them.
pub const NAMES: [&str; 11] = [
    "self-healing",
    "naive",
    "no-retry",
    "no-jitter",
    "no-proactive-refresh",
    "no-heartbeat",
    "no-isolation",
    "no-checkpoints",
    "no-windows",
    "no-breakers",
    "no-budget",
];

impl Profile {
    /// The profile called `name`, if there is one.
    pub fn named(name: &str) -> Option<Self> {
        let all = Patterns::ALL;
        let healing = |name: &'static str, patterns: Patterns| Self {
            name,
            patterns,
            call_timeouts: true,
            supervised: true,
        };
        Some(match name {
            "self-healing" => healing("self-healing", all),
            "naive" => Self {
                name: "naive",
                patterns: Patterns::NAIVE,
                call_timeouts: false,
                supervised: false,
            },
            "no-retry" => healing(
                "no-retry",
                Patterns {
                    retry: RetryMode::Off,
                    ..all
                },
            ),
            "no-jitter" => healing(
                "no-jitter",
                Patterns {
                    jitter: Jitter::None,
                    ..all
                },
            ),
            "no-proactive-refresh" => healing(
                "no-proactive-refresh",
                Patterns {
                    proactive_refresh: false,
                    ..all
                },
            ),
            "no-heartbeat" => healing(
                "no-heartbeat",
                Patterns {
                    heartbeat: false,
                    ..all
                },
            ),
            "no-isolation" => healing(
                "no-isolation",
                Patterns {
                    isolation: false,
                    ..all
                },
            ),
            "no-checkpoints" => healing(
                "no-checkpoints",
                Patterns {
                    checkpoints: false,
                    ..all
                },
            ),
            "no-windows" => healing(
                "no-windows",
                Patterns {
                    windows: false,
                    ..all
                },
            ),
            "no-breakers" => healing(
                "no-breakers",
                Patterns {
                    breakers: false,
                    ..all
                },
            ),
            "no-budget" => healing(
                "no-budget",
                Patterns {
                    retry_budget: false,
                    ..all
                },
            ),
            _ => return None,
        })
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
        for name in NAMES {
            let p = Profile::named(name).unwrap();
            assert_eq!(p.name, name);
            if name != "self-healing" {
                assert_ne!(p, healing, "{name} must switch something off");
            }
        }
        assert!(Profile::named("paranoid").is_none());
    }
}
