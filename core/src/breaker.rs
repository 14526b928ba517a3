//! Pattern 7: a circuit breaker per service, shared by all jobs that use it.
//!
//! Closed -> open after N consecutive failures or a failure rate over a window; open for
//! a cooldown that grows on repeated trips up to a cap, with jitter; then half-open,
//! which lets exactly one probe through. State is kept in wall time and persisted, so it
//! survives a restart.

//! # Sharing and cancellation
//!
//! One [`Breakers`] serves every job, so three jobs calling a dead service trip one
//! breaker together and, once it is open, none of them calls it. A [`Permit`] holds a
//! handle to the shared state: a half-open probe whose call is cancelled (its permit
//! dropped unrecorded) frees the probe slot, so a cancelled probe cannot wedge the
//! breaker half-open forever. Outcomes of permits granted before the last state change
//! (calls still in flight when the breaker opened) are ignored: a late success from the
//! old closed period must not close a breaker that has since opened.
//!
//! # Time and persistence
//!
//! Open periods are wall-clock instants from `env.now()`, because tokio instants do not
//! survive a restart. Every state change is written to the store's `breakers` table (one
//! transaction) by [`Breakers::record`]; the open -> half-open move made by
//! [`Breakers::try_acquire`] is persisted with the probe's outcome. What is saved is the
//! state, the open-until instant and the trip count; the closed-state failure counters
//! are not, so a restart forgives a partial run of failures. A half-open breaker is
//! restored as open with its (elapsed) until, so the first call after the restart probes.
//! (Runners before the store kept this in `state_dir/breakers.json`; the daemon imports
//! that file once.)
//!
//! # Unknown services
//!
//! A service that is not in the configuration has no breaker: calls to it are allowed
//! and their outcomes ignored. Steps name configured services (the config checks that),
//! so this only matters to ad-hoc callers, who should not be refused by a breaker that
//! was never configured.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{BreakerConfig, ServiceConfig};
use crate::db::{BreakerRow, Db, DbError};
use crate::env::{Env, Rng};
use crate::event::{Event, EventKind};

/// The state file of runners before the store, under `state_dir` (imported once).
pub const LEGACY_STATE_FILE: &str = "breakers.json";

/// At most this many breaker rows are read back (one per configured service).
const MAX_ROWS: usize = 10_000;

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

    /// The state named `s` ([`Self::as_str`]'s inverse).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "closed" => Self::Closed,
            "open" => Self::Open,
            "half_open" => Self::HalfOpen,
            _ => return None,
        })
    }
}

/// The live state of every breaker, shared with outstanding permits.
type Cores = Arc<Mutex<BTreeMap<String, BreakerCore>>>;

/// Permission for one call. Record its outcome with [`Breakers::record`]; dropping it
/// unrecorded (a cancelled call) releases a half-open probe slot.
pub struct Permit {
    /// The shared state; `None` when no breaker manages the call (disabled, unknown).
    cores: Option<Cores>,
    /// The service called.
    service: String,
    /// This permit is the half-open probe.
    probe: bool,
    /// The breaker's generation when the permit was granted.
    generation: u64,
    /// Set by `record`, so `Drop` knows the outcome was delivered.
    recorded: bool,
}

impl Permit {
    /// The service this permit is for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether this call is the half-open probe that decides the breaker's fate.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    fn unmanaged(service: &str) -> Self {
        Self {
            cores: None,
            service: service.to_string(),
            probe: false,
            generation: 0,
            recorded: false,
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("service", &self.service)
            .field("probe", &self.probe)
            .field("managed", &self.cores.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.recorded || !self.probe {
            return;
        }
        let Some(cores) = &self.cores else { return };
        let mut cores = lock(cores);
        let Some(core) = cores.get_mut(&self.service) else {
            return;
        };
        if core.state == BreakerState::HalfOpen && core.generation == self.generation {
            // The probe never reported: let the next caller probe instead.
            core.probe_in_flight = false;
        }
    }
}

/// A refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The service.
    pub service: String,
    /// When the breaker will let a probe through. While a probe is already in flight
    /// this is the current time: the breaker may close as soon as the probe reports.
    pub until: DateTime<Utc>,
}

/// One service's breaker.
#[derive(Debug)]
struct BreakerCore {
    state: BreakerState,
    /// Consecutive trips without a successful probe; drives the growing cooldown.
    trips: u32,
    /// Consecutive failures while closed.
    consecutive: u32,
    /// The last `window_calls` outcomes while closed (`true` = failure).
    recent: VecDeque<bool>,
    /// Failures in `recent`.
    recent_failures: u32,
    /// End of the open period (meaningful when open or half-open).
    until: DateTime<Utc>,
    /// The same end on the monotonic clock, for a period opened in this process: the
    /// period is over when either clock says so, so a sleep (the wall clock jumps on)
    /// ends it on wake and a backward step of the wall clock does not stretch it.
    until_mono: Option<tokio::time::Instant>,
    /// A half-open probe permit is outstanding.
    probe_in_flight: bool,
    /// When it left closed, for the episode that has not closed since.
    opened_at: Option<DateTime<Utc>>,
    /// Bumped on every state change, so permits from an earlier state are ignored.
    generation: u64,
}

impl BreakerCore {
    fn closed(now: DateTime<Utc>) -> Self {
        Self {
            state: BreakerState::Closed,
            trips: 0,
            consecutive: 0,
            recent: VecDeque::new(),
            recent_failures: 0,
            until: now,
            until_mono: None,
            probe_in_flight: false,
            opened_at: None,
            generation: 0,
        }
    }

    /// Enters `state`, clearing the counters of the state left.
    fn enter(&mut self, state: BreakerState) {
        self.state = state;
        self.consecutive = 0;
        self.recent.clear();
        self.recent_failures = 0;
        self.probe_in_flight = false;
        self.generation = self.generation.wrapping_add(1);
    }
}

/// The breakers of all services.
#[derive(Debug)]
pub struct Breakers<E: Env> {
    /// Clock, randomness (cooldown jitter) and events.
    env: E,
    /// The store, where every state change is written.
    db: Arc<Db<E>>,
    /// Settings of every guarded service (none when the pattern is off: every call
    /// is then allowed and nothing recorded).
    configs: BTreeMap<String, BreakerConfig>,
    /// The live breakers, shared with permits.
    cores: Cores,
    /// Serialises writers, so an older snapshot never lands after a newer one.
    persist: tokio::sync::Mutex<()>,
    /// Woken on every trip, so a prober sleeping until the earliest cooldown's end
    /// learns of a new, earlier one.
    tripped: tokio::sync::Notify,
}

impl<E: Env> Breakers<E> {
    /// One breaker per service; persisted in the store.
    pub fn new(env: E, db: Arc<Db<E>>, services: &BTreeMap<String, ServiceConfig>) -> Self {
        let configs = services
            .iter()
            .map(|(name, svc)| (name.clone(), svc.breaker))
            .collect();
        Self::guarding(env, db, configs)
    }

    /// No breakers: every call is allowed and nothing recorded (the pattern switched off).
    pub fn none(env: E, db: Arc<Db<E>>) -> Self {
        Self::guarding(env, db, BTreeMap::new())
    }

    fn guarding(env: E, db: Arc<Db<E>>, configs: BTreeMap<String, BreakerConfig>) -> Self {
        let now = env.now();
        let cores = configs
            .keys()
            .map(|name| (name.clone(), BreakerCore::closed(now)))
            .collect();
        Self {
            env,
            db,
            configs,
            cores: Arc::new(Mutex::new(cores)),
            persist: tokio::sync::Mutex::new(()),
            tripped: tokio::sync::Notify::new(),
        }
    }

    /// Restores the stored state (rows that cannot be read are reported and the
    /// breakers start closed).
    ///
    /// No rows is a first start: `Ok`. Services no longer configured are dropped; an
    /// open-until further ahead than the service's longest open period (a clock that
    /// jumped, a hand-edited row) is pulled back to it, so no stored state can lock a
    /// service out for longer than its configuration allows.
    pub fn restore(&self) -> Result<(), DbError> {
        if self.configs.is_empty() {
            return Ok(());
        }
        let saved = self.db.breakers(MAX_ROWS);
        let now = self.env.now();
        let mut cores = lock(&self.cores);
        let saved = match saved {
            Ok(saved) => saved,
            Err(e) => {
                for core in cores.values_mut() {
                    *core = BreakerCore::closed(now);
                }
                return Err(e);
            }
        };
        for entry in saved {
            let name = entry.service;
            let (Some(core), Some(cfg)) = (cores.get_mut(&name), self.configs.get(&name)) else {
                continue;
            };
            *core = BreakerCore::closed(now);
            core.trips = entry.trips;
            if entry.state == BreakerState::Closed {
                continue;
            }
            let latest = now + to_chrono(longest_open(cfg));
            core.until = entry.until.min(latest);
            core.opened_at = Some(entry.opened_at.map_or(now, |t| t.min(now)));
            // A probe in flight at the crash died with it: back to open, due now.
            core.enter(BreakerState::Open);
            let remaining = (core.until - now).to_std().unwrap_or(Duration::ZERO);
            self.env.emit(
                Event::new(EventKind::BreakerTransition)
                    .service(&name)
                    .transition(BreakerState::Closed, BreakerState::Open)
                    .delay(remaining)
                    .detail("restored from the store"),
            );
        }
        Ok(())
    }

    /// Asks to make one call to `service`.
    ///
    /// Open and due: the caller becomes the half-open probe. Half-open with the probe
    /// out: refused. The caller emits `breaker_rejected`; transitions are emitted here.
    pub fn try_acquire(&self, service: &str) -> Result<Permit, Rejected> {
        if !self.configs.contains_key(service) {
            return Ok(Permit::unmanaged(service));
        }
        let now = self.env.now();
        let mut cores = lock(&self.cores);
        let Some(core) = cores.get_mut(service) else {
            return Ok(Permit::unmanaged(service));
        };
        if core.state == BreakerState::Open
            && core
                .until_mono
                .is_some_and(|end| tokio::time::Instant::now() >= end)
        {
            // The wall clock stepped back (NTP after a sleep, a bad RTC): the period
            // is over by the monotonic clock, which no step moves.
            core.until = core.until.min(now);
        }
        let probe = match core.state {
            BreakerState::Closed => false,
            BreakerState::Open if now < core.until => {
                return Err(Rejected {
                    service: service.to_string(),
                    until: core.until,
                });
            }
            BreakerState::Open => {
                core.enter(BreakerState::HalfOpen);
                self.emit_transition(service, BreakerState::Open, core, "cooldown over", None);
                true
            }
            BreakerState::HalfOpen if core.probe_in_flight => {
                return Err(Rejected {
                    service: service.to_string(),
                    until: now,
                });
            }
            // The previous probe was cancelled: this caller probes instead.
            BreakerState::HalfOpen => true,
        };
        if probe {
            core.probe_in_flight = true;
        }
        Ok(Permit {
            cores: Some(Arc::clone(&self.cores)),
            service: service.to_string(),
            probe,
            generation: core.generation,
            recorded: false,
        })
    }

    /// Records the outcome of a permitted call; persists and emits on a state change.
    pub async fn record(&self, mut permit: Permit, success: bool) {
        permit.recorded = true;
        if permit.cores.is_none() {
            return;
        }
        if self.apply(&permit, success) {
            self.save().await;
        }
    }

    /// The current state of every breaker, by service.
    ///
    /// An open breaker whose cooldown is over still reports open: it turns half-open
    /// when the next call asks.
    pub fn states(&self) -> BTreeMap<String, BreakerState> {
        let cores = lock(&self.cores);
        self.configs
            .keys()
            .map(|name| {
                let state = cores.get(name).map_or(BreakerState::Closed, |c| c.state);
                (name.clone(), state)
            })
            .collect()
    }

    /// Completes after the next trip of any breaker (or at once if one tripped since
    /// the last wait).
    pub async fn tripped(&self) {
        self.tripped.notified().await;
    }

    /// When `service`'s breaker lets its probe through, while it is open.
    pub fn open_until(&self, service: &str) -> Option<DateTime<Utc>> {
        lock(&self.cores)
            .get(service)
            .filter(|core| core.state == BreakerState::Open)
            .map(|core| core.until)
    }

    /// Services whose breaker has not been closed since the given time (open or
    /// half-open, through any number of failed probes), by service.
    pub fn open_since(&self) -> BTreeMap<String, DateTime<Utc>> {
        lock(&self.cores)
            .iter()
            .filter(|(_, core)| core.state != BreakerState::Closed)
            .filter_map(|(name, core)| Some((name.clone(), core.opened_at?)))
            .collect()
    }

    /// Applies one outcome; `true` when the state changed.
    fn apply(&self, permit: &Permit, success: bool) -> bool {
        let Some(cfg) = self.configs.get(&permit.service) else {
            return false;
        };
        let mut cores = lock(&self.cores);
        let Some(core) = cores.get_mut(&permit.service) else {
            return false;
        };
        if core.generation != permit.generation {
            // Granted before the last state change: its outcome describes a past state.
            return false;
        }
        match (core.state, permit.probe) {
            (BreakerState::Closed, false) => {
                if success {
                    core.consecutive = 0;
                } else {
                    core.consecutive = core.consecutive.saturating_add(1);
                }
                let window = usize::try_from(cfg.window_calls).unwrap_or(usize::MAX);
                if window > 0 {
                    core.recent.push_back(!success);
                    core.recent_failures += u32::from(!success);
                    while core.recent.len() > window {
                        if core.recent.pop_front() == Some(true) {
                            core.recent_failures -= 1;
                        }
                    }
                }
                if success {
                    return false;
                }
                let len = core.recent.len();
                let rate_tripped = window > 0
                    && len >= window
                    && f64::from(core.recent_failures) / len as f64 >= cfg.failure_rate;
                let reason = if core.consecutive >= cfg.failure_threshold {
                    format!("{} consecutive failures", core.consecutive)
                } else if rate_tripped {
                    format!("{} of the last {len} calls failed", core.recent_failures)
                } else {
                    return false;
                };
                self.trip(&permit.service, cfg, core, BreakerState::Closed, &reason);
                true
            }
            (BreakerState::HalfOpen, true) if success => {
                core.trips = 0;
                core.opened_at = None;
                core.enter(BreakerState::Closed);
                self.emit_transition(
                    &permit.service,
                    BreakerState::HalfOpen,
                    core,
                    "probe succeeded",
                    None,
                );
                true
            }
            (BreakerState::HalfOpen, true) => {
                self.trip(
                    &permit.service,
                    cfg,
                    core,
                    BreakerState::HalfOpen,
                    "probe failed",
                );
                true
            }
            _ => false,
        }
    }

    /// Opens `core` for the next, longer cooldown.
    fn trip(
        &self,
        service: &str,
        cfg: &BreakerConfig,
        core: &mut BreakerCore,
        from: BreakerState,
        reason: &str,
    ) {
        core.trips = core.trips.saturating_add(1);
        if from == BreakerState::Closed {
            core.opened_at = Some(self.env.now());
        }
        let period = open_period(cfg, core.trips, self.env.rng());
        core.until = self.env.now() + to_chrono(period);
        core.until_mono = Some(tokio::time::Instant::now() + period);
        core.enter(BreakerState::Open);
        self.emit_transition(service, from, core, reason, Some(period));
        self.tripped.notify_one();
    }

    fn emit_transition(
        &self,
        service: &str,
        from: BreakerState,
        core: &BreakerCore,
        reason: &str,
        period: Option<Duration>,
    ) {
        let mut event = Event::new(EventKind::BreakerTransition)
            .service(service)
            .transition(from, core.state)
            .detail(reason);
        if let Some(period) = period {
            event = event.delay(period);
        }
        self.env.emit(event);
    }

    /// Writes the current state of every breaker. A failed write leaves the state in
    /// memory (the next change rewrites every row) and is logged.
    async fn save(&self) {
        let _writer = self.persist.lock().await;
        let rows = lock(&self.cores)
            .iter()
            .map(|(name, core)| BreakerRow {
                service: name.clone(),
                state: core.state,
                until: core.until,
                trips: core.trips,
                opened_at: core.opened_at,
            })
            .collect();
        if let Err(e) = self.db.save_breakers(rows).await {
            tracing::warn!(
                target: "steadfast",
                error = %e,
                "failed to persist breaker state (hint: breakers keep working in memory; a restart forgets them)"
            );
        }
    }
}

/// "Equal jitter" (AWS, "Exponential Backoff And Jitter"): half of
/// `min(max_cooldown, cooldown * 2^(trips-1))` plus a random share of the other half.
/// Breakers that tripped together (one outage, many services) do not all probe in the
/// same instant, and, more to the point, probes do not keep landing in the same phase
/// of a periodic fault: with a few percent of jitter every cooldown of a 5-minute
/// cooldown breaker is a multiple of 5 minutes, and against DNS failing 2 minutes of
/// every 5 every probe failed, doubling the cooldown each time (issue 11, case 2).
/// The period never exceeds the configured cap.
fn open_period(cfg: &BreakerConfig, trips: u32, rng: &impl Rng) -> Duration {
    let base = millis(cfg.cooldown);
    let max = millis(cfg.max_cooldown);
    let shift = trips.saturating_sub(1);
    let step = if shift >= 64 {
        u64::MAX
    } else {
        base.saturating_mul(1u64 << shift)
    };
    let period = step.min(max);
    let half = period / 2;
    Duration::from_millis(half.saturating_add(rng.between(0, period - half)))
}

/// The longest open period `cfg` can produce.
fn longest_open(cfg: &BreakerConfig) -> Duration {
    Duration::from_millis(millis(cfg.max_cooldown).max(millis(cfg.cooldown)))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A std duration as a chrono one, saturating at a century (far beyond any cooldown).
fn to_chrono(d: Duration) -> chrono::Duration {
    const CENTURY: chrono::Duration = chrono::Duration::days(36_525);
    chrono::Duration::from_std(d).map_or(CENTURY, |c| c.min(CENTURY))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
