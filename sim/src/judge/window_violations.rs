//! Actions done outside their time window: requests of a step whose action has a
//! window, done by the world (see [`super::work::done`]) while the window was closed
//! on the host's wall clock (the world's, unless the world stepped the host's clock:
//! see [`super::host`]).

use chrono_tz::Tz;
use steadfast_core::config::Config;

use super::window;
use super::work::{self, WorkMap};
use crate::services::ledger::LedgerEntry;

/// Windowed actions the world performed while their window was closed.
pub fn count(
    config: &Config,
    zone: Tz,
    map: &WorkMap,
    ledger: &[LedgerEntry],
    host: impl Fn(chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc>,
) -> u64 {
    ledger
        .iter()
        .filter(|e| {
            let Some(p) = map.endpoint_of(config, e) else {
                return false;
            };
            let Some(w) = config.jobs[p.job].steps[p.step]
                .action
                .as_ref()
                .and_then(|a| config.windows.get(a))
            else {
                return false;
            };
            work::done(e, p.writes) && !window::is_open(w, zone, host(e.at))
        })
        .count() as u64
}
