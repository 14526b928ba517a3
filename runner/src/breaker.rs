//! Pattern 7: a circuit breaker per service, shared by all jobs that use it.
//!
//! Closed -> open after N consecutive failures or a failure rate over a window; open for
//! a cooldown that grows on repeated trips up to a cap, with jitter; then half-open,
//! which lets exactly one probe through. State is kept in wall time and persisted, so it
//! survives a restart.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::config::ServiceConfig;
use crate::env::Env;
use crate::store::StoreError;

/// The state of one breaker, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until `until`.
    Open,
    /// One probe may go through.
    HalfOpen,
}

impl BreakerState {
    /// The snake_case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Permission for one call. Record its outcome with [`Breakers::record`]; dropping it
/// unrecorded (a cancelled call) releases a half-open probe slot.
#[derive(Debug)]
pub struct Permit {
    _private: (),
}

/// A refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The service.
    pub service: String,
    /// When the breaker will let a probe through.
    pub until: DateTime<Utc>,
}

/// The breakers of all services.
#[derive(Debug)]
pub struct Breakers<E: Env> {
    _env: E,
}

impl<E: Env> Breakers<E> {
    /// One breaker per service; persisted under `state_dir`. Disabled breakers allow
    /// every call and record nothing.
    pub fn new(
        env: E,
        state_dir: &Path,
        services: &BTreeMap<String, ServiceConfig>,
        enabled: bool,
    ) -> Self {
        let _ = (state_dir, services, enabled);
        Self { _env: env }
    }

    /// Restores persisted state (a corrupt file is reported and the breakers start closed).
    pub async fn restore(&self) -> Result<(), StoreError> {
        unimplemented!("breaker restore")
    }

    /// Asks to make one call to `service`.
    pub fn try_acquire(&self, service: &str) -> Result<Permit, Rejected> {
        let _ = service;
        unimplemented!("breaker acquire")
    }

    /// Records the outcome of a permitted call; persists and emits on a state change.
    pub async fn record(&self, permit: Permit, success: bool) {
        let _ = (permit, success);
        unimplemented!("breaker record")
    }

    /// The current state of every breaker, by service.
    pub fn states(&self) -> BTreeMap<String, BreakerState> {
        unimplemented!("breaker states")
    }
}
