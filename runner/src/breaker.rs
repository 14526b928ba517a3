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
//! survive a restart. Every state change is written to `state_dir/breakers.json`
//! (atomically and durably) by [`Breakers::record`]; the open -> half-open move made by
//! [`Breakers::try_acquire`] is persisted with the probe's outcome. What is saved is the
//! state, the open-until instant and the trip count; the closed-state failure counters
//! are not, so a restart forgives a partial run of failures. A half-open breaker is
//! restored as open with its (elapsed) until, so the first call after the restart probes.
//!
//! # Unknown services
//!
//! A service that is not in the configuration has no breaker: calls to it are allowed
//! and their outcomes ignored. Steps name configured services (the config checks that),
//! so this only matters to ad-hoc callers, who should not be refused by a breaker that
//! was never configured.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{BreakerConfig, ServiceConfig};
use crate::env::{Env, Rng};
use crate::event::{Event, EventKind};
use crate::store::{self, StoreError};

/// The state file's name under `state_dir`.
pub const STATE_FILE: &str = "breakers.json";

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

/// The persisted form of all breakers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedBreakers {
    services: BTreeMap<String, SavedBreaker>,
}

/// The persisted form of one breaker.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedBreaker {
    state: BreakerState,
    until: DateTime<Utc>,
    trips: u32,
    /// Absent in files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    opened_at: Option<DateTime<Utc>>,
}

/// The breakers of all services.
#[derive(Debug)]
pub struct Breakers<E: Env> {
    /// Clock, randomness (cooldown jitter), disk and events.
    env: E,
    /// `state_dir/breakers.json`.
    path: PathBuf,
    /// Off: allow everything, record nothing (the naive habit, for comparison).
    enabled: bool,
    /// Settings of every configured service.
    configs: BTreeMap<String, BreakerConfig>,
    /// The live breakers, shared with permits.
    cores: Cores,
    /// Serialises writers, so an older snapshot never lands after a newer one.
    persist: tokio::sync::Mutex<()>,
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
        let now = env.now();
        let configs: BTreeMap<String, BreakerConfig> = services
            .iter()
            .map(|(name, svc)| (name.clone(), svc.breaker))
            .collect();
        let cores = configs
            .keys()
            .map(|name| (name.clone(), BreakerCore::closed(now)))
            .collect();
        Self {
            env,
            path: state_dir.join(STATE_FILE),
            enabled,
            configs,
            cores: Arc::new(Mutex::new(cores)),
            persist: tokio::sync::Mutex::new(()),
        }
    }

    /// Restores persisted state (a corrupt file is reported and the breakers start closed).
    ///
    /// A missing file is a first start: `Ok`. Services no longer configured are dropped;
    /// an open-until further ahead than the service's longest open period (a clock that
    /// jumped, a hand-edited file) is pulled back to it, so no file can lock a service
    /// out for longer than its configuration allows.
    pub async fn restore(&self) -> Result<(), StoreError> {
        if !self.enabled {
            return Ok(());
        }
        let saved = store::read_json::<_, SavedBreakers>(self.env.fs(), &self.path).await;
        let now = self.env.now();
        let mut cores = lock(&self.cores);
        let saved = match saved {
            Ok(None) => return Ok(()),
            Ok(Some(saved)) => saved,
            Err(e) => {
                for core in cores.values_mut() {
                    *core = BreakerCore::closed(now);
                }
                return Err(e);
            }
        };
        for (name, entry) in saved.services {
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
                    .transition(BreakerState::Closed.as_str(), BreakerState::Open.as_str())
                    .delay(remaining)
                    .detail("restored from the state file"),
            );
        }
        Ok(())
    }

    /// Asks to make one call to `service`.
    ///
    /// Open and due: the caller becomes the half-open probe. Half-open with the probe
    /// out: refused. The caller emits `breaker_rejected`; transitions are emitted here.
    pub fn try_acquire(&self, service: &str) -> Result<Permit, Rejected> {
        if !self.enabled || !self.configs.contains_key(service) {
            return Ok(Permit::unmanaged(service));
        }
        let now = self.env.now();
        let mut cores = lock(&self.cores);
        let Some(core) = cores.get_mut(service) else {
            return Ok(Permit::unmanaged(service));
        };
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
        if !self.enabled || permit.cores.is_none() {
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
                let state = match cores.get(name) {
                    Some(core) if self.enabled => core.state,
                    _ => BreakerState::Closed,
                };
                (name.clone(), state)
            })
            .collect()
    }

    /// Services whose breaker has not been closed since the given time (open or
    /// half-open, through any number of failed probes), by service.
    pub fn open_since(&self) -> BTreeMap<String, DateTime<Utc>> {
        if !self.enabled {
            return BTreeMap::new();
        }
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
        core.enter(BreakerState::Open);
        self.emit_transition(service, from, core, reason, Some(period));
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
            .transition(from.as_str(), core.state.as_str())
            .detail(reason);
        if let Some(period) = period {
            event = event.delay(period);
        }
        self.env.emit(event);
    }

    /// Writes the current state of every breaker. A failed write leaves the state in
    /// memory (the next change rewrites the whole file) and is logged.
    async fn save(&self) {
        let _writer = self.persist.lock().await;
        let snapshot = {
            let cores = lock(&self.cores);
            SavedBreakers {
                services: cores
                    .iter()
                    .map(|(name, core)| {
                        let saved = SavedBreaker {
                            state: core.state,
                            until: core.until,
                            trips: core.trips,
                            opened_at: core.opened_at,
                        };
                        (name.clone(), saved)
                    })
                    .collect(),
            }
        };
        if let Err(e) = store::write_json(self.env.fs(), &self.path, &snapshot).await {
            tracing::warn!(
                target: "steadfast",
                error = %e,
                "failed to persist breaker state (hint: breakers keep working in memory; a restart forgets them)"
            );
        }
    }
}

/// `min(max_cooldown, cooldown * 2^(trips-1))` plus up to 10% jitter, so breakers that
/// tripped together (one outage, many services) do not all probe in the same instant.
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
    let jitter = rng.between(0, period / 10);
    Duration::from_millis(period.saturating_add(jitter))
}

/// The longest open period `cfg` can produce (cap plus full jitter).
fn longest_open(cfg: &BreakerConfig) -> Duration {
    let max = millis(cfg.max_cooldown).max(millis(cfg.cooldown));
    Duration::from_millis(max.saturating_add(max / 10))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::env::testkit::TestEnv;

    const MIN: Duration = Duration::from_secs(60);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 3, 0, 0).unwrap()
    }

    fn dir() -> PathBuf {
        PathBuf::from("/state")
    }

    fn services(cfg: BreakerConfig) -> BTreeMap<String, ServiceConfig> {
        ["youtube", "blog"]
            .into_iter()
            .map(|name| {
                let svc = ServiceConfig {
                    name: name.to_string(),
                    health_url: None,
                    call_timeout: Duration::from_secs(30),
                    breaker: cfg,
                };
                (name.to_string(), svc)
            })
            .collect()
    }

    fn setup(cfg: BreakerConfig, enabled: bool) -> (TestEnv, Breakers<TestEnv>) {
        let env = TestEnv::new(t0(), 17);
        let breakers = Breakers::new(env.clone(), &dir(), &services(cfg), enabled);
        (env, breakers)
    }

    async fn call(b: &Breakers<TestEnv>, service: &str, success: bool) -> Result<bool, Rejected> {
        let permit = b.try_acquire(service)?;
        let probe = permit.is_probe();
        b.record(permit, success).await;
        Ok(probe)
    }

    /// The open periods announced so far, in order.
    fn open_periods(env: &TestEnv, service: &str) -> Vec<Duration> {
        env.events_so_far()
            .into_iter()
            .filter(|e| e.event == EventKind::BreakerTransition && e.to == Some("open"))
            .filter(|e| e.service.as_deref() == Some(service))
            .map(|e| Duration::from_millis(e.delay_ms.unwrap()))
            .collect()
    }

    fn transitions(env: &TestEnv) -> Vec<(&'static str, &'static str)> {
        env.events_so_far()
            .into_iter()
            .filter(|e| e.event == EventKind::BreakerTransition)
            .map(|e| (e.from.unwrap(), e.to.unwrap()))
            .collect()
    }

    fn state(b: &Breakers<TestEnv>, service: &str) -> BreakerState {
        b.states()[service]
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_three_consecutive_failures() {
        let (env, b) = setup(BreakerConfig::default(), true);
        for _ in 0..2 {
            call(&b, "youtube", false).await.unwrap();
        }
        assert_eq!(state(&b, "youtube"), BreakerState::Closed);
        call(&b, "youtube", false).await.unwrap();
        assert_eq!(state(&b, "youtube"), BreakerState::Open);
        assert_eq!(
            state(&b, "blog"),
            BreakerState::Closed,
            "breakers are per service"
        );

        let rejected = b.try_acquire("youtube").unwrap_err();
        assert_eq!(rejected.service, "youtube");
        let period = (rejected.until - env.now()).to_std().unwrap();
        assert!((5 * MIN..=5 * MIN + 30 * Duration::from_secs(1)).contains(&period));
        assert_eq!(open_periods(&env, "youtube"), vec![period]);
        assert_eq!(transitions(&env), vec![("closed", "open")]);
        assert!(b.try_acquire("blog").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn open_since_spans_failed_probes_and_ends_when_a_probe_succeeds() {
        let (env, b) = setup(BreakerConfig::default(), true);
        assert!(b.open_since().is_empty());
        for _ in 0..3 {
            call(&b, "youtube", false).await.unwrap();
        }
        let opened = env.now();
        assert_eq!(
            b.open_since(),
            BTreeMap::from([("youtube".to_string(), opened)])
        );
        // A failed probe re-opens: still the same episode.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(call(&b, "youtube", false).await.unwrap(), "the probe");
        assert_eq!(state(&b, "youtube"), BreakerState::Open);
        assert_eq!(b.open_since()["youtube"], opened);
        // A restart keeps the episode's start.
        let restored = Breakers::new(
            env.clone(),
            &dir(),
            &services(BreakerConfig::default()),
            true,
        );
        restored.restore().await.unwrap();
        assert_eq!(restored.open_since()["youtube"], opened);
        tokio::time::advance(Duration::from_secs(7200)).await;
        assert!(call(&b, "youtube", true).await.unwrap(), "the probe");
        assert!(b.open_since().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_count() {
        let (_env, b) = setup(BreakerConfig::default(), true);
        for ok in [false, false, true, false, false, true, false, false] {
            call(&b, "youtube", ok).await.unwrap();
        }
        assert_eq!(state(&b, "youtube"), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_over_a_full_window_opens() {
        let cfg = BreakerConfig {
            failure_threshold: 100,
            failure_rate: 0.5,
            window_calls: 10,
            ..BreakerConfig::default()
        };
        // 4 failures in 10: under the rate, stays closed however long it goes on.
        let (_env, b) = setup(cfg, true);
        for i in 0..50 {
            call(&b, "youtube", i % 5 >= 2).await.unwrap();
        }
        assert_eq!(state(&b, "youtube"), BreakerState::Closed);
        // Alternating: the 10th call fills the window at 5 of 10.
        let (env, b) = setup(cfg, true);
        for i in 0..9 {
            call(&b, "youtube", i % 2 == 0).await.unwrap();
            assert_eq!(state(&b, "youtube"), BreakerState::Closed, "call {i}");
        }
        call(&b, "youtube", false).await.unwrap();
        assert_eq!(state(&b, "youtube"), BreakerState::Open);
        let detail = env.events_so_far().pop().unwrap().detail.unwrap();
        assert_eq!(detail, "5 of the last 10 calls failed");
    }

    /// Trips the breaker, then fails `n` probes in a row.
    async fn fail_probes(env: &TestEnv, b: &Breakers<TestEnv>, n: usize) {
        for _ in 0..3 {
            call(b, "youtube", false).await.unwrap();
        }
        for _ in 0..n {
            let until = b.try_acquire("youtube").unwrap_err().until;
            tokio::time::advance((until - env.now()).to_std().unwrap()).await;
            assert!(
                call(b, "youtube", false).await.unwrap(),
                "must be the probe"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_grows_on_repeated_trips_and_is_capped() {
        let (env, b) = setup(BreakerConfig::default(), true);
        fail_probes(&env, &b, 6).await;
        let periods = open_periods(&env, "youtube");
        let expected = [5, 10, 20, 40, 60, 60, 60].map(|m| m * MIN);
        assert_eq!(periods.len(), expected.len());
        for (got, want) in periods.iter().zip(expected) {
            assert!(
                *got >= want && *got <= want + want / 10,
                "{got:?} vs {want:?}"
            );
        }
        // Jitter: repeated capped periods differ.
        assert_ne!(periods[4], periods[5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_closes_and_resets_the_cooldown() {
        let (env, b) = setup(BreakerConfig::default(), true);
        fail_probes(&env, &b, 2).await;
        let until = b.try_acquire("youtube").unwrap_err().until;
        tokio::time::advance((until - env.now()).to_std().unwrap()).await;
        assert!(call(&b, "youtube", true).await.unwrap());
        assert_eq!(state(&b, "youtube"), BreakerState::Closed);
        // Tripping again starts from the first cooldown.
        fail_probes(&env, &b, 0).await;
        let last = *open_periods(&env, "youtube").last().unwrap();
        assert!(last <= 5 * MIN + 30 * Duration::from_secs(1), "{last:?}");
        assert_eq!(
            transitions(&env)[5..],
            [
                ("open", "half_open"),
                ("half_open", "closed"),
                ("closed", "open")
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_one_half_open_probe_under_concurrency() {
        let (env, b) = setup(BreakerConfig::default(), true);
        fail_probes(&env, &b, 0).await;
        tokio::time::advance(Duration::from_secs(3600)).await;
        let b = Arc::new(b);
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (b, barrier) = (Arc::clone(&b), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    tokio::task::yield_now().await;
                    b.try_acquire("youtube")
                })
            })
            .collect();
        let mut permits = Vec::new();
        for task in tasks {
            if let Ok(permit) = task.await.unwrap() {
                permits.push(permit);
            }
        }
        assert_eq!(permits.len(), 1);
        assert!(permits[0].is_probe());
        assert_eq!(state(&b, "youtube"), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_permit_frees_the_slot() {
        let (env, b) = setup(BreakerConfig::default(), true);
        fail_probes(&env, &b, 0).await;
        tokio::time::advance(Duration::from_secs(3600)).await;
        let probe = b.try_acquire("youtube").unwrap();
        assert!(probe.is_probe());
        assert!(b.try_acquire("youtube").is_err());
        // The probing call is cancelled: its permit is dropped unrecorded.
        drop(probe);
        let next = b.try_acquire("youtube").unwrap();
        assert!(next.is_probe());
        assert!(b.try_acquire("youtube").is_err());
        b.record(next, true).await;
        assert_eq!(state(&b, "youtube"), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_from_before_a_trip_are_ignored() {
        let (env, b) = setup(BreakerConfig::default(), true);
        let mut in_flight: Vec<Permit> =
            (0..7).map(|_| b.try_acquire("youtube").unwrap()).collect();
        for permit in in_flight.drain(..3) {
            b.record(permit, false).await;
        }
        assert_eq!(state(&b, "youtube"), BreakerState::Open);
        // A call from the closed period succeeds late: the breaker stays open.
        b.record(in_flight.pop().unwrap(), true).await;
        assert_eq!(state(&b, "youtube"), BreakerState::Open);
        // The probe closes it; then the three other old calls fail late. They describe
        // the outage that is over, so they must not trip the new closed period.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(call(&b, "youtube", true).await.unwrap());
        for permit in in_flight {
            b.record(permit, false).await;
        }
        assert_eq!(state(&b, "youtube"), BreakerState::Closed);
        assert_eq!(
            transitions(&env),
            vec![
                ("closed", "open"),
                ("open", "half_open"),
                ("half_open", "closed")
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn state_survives_a_restart() {
        let (env, b) = setup(BreakerConfig::default(), true);
        fail_probes(&env, &b, 1).await;
        let until = b.try_acquire("youtube").unwrap_err().until;
        drop(b);
        env.parts().fs.crash();

        let restarted = Breakers::new(
            env.clone(),
            &dir(),
            &services(BreakerConfig::default()),
            true,
        );
        assert_eq!(state(&restarted, "youtube"), BreakerState::Closed);
        restarted.restore().await.unwrap();
        assert_eq!(state(&restarted, "youtube"), BreakerState::Open);
        assert_eq!(state(&restarted, "blog"), BreakerState::Closed);
        assert_eq!(restarted.try_acquire("youtube").unwrap_err().until, until);
        // The trip count survived too: the next failed probe opens for the third period.
        tokio::time::advance((until - env.now()).to_std().unwrap()).await;
        assert!(call(&restarted, "youtube", false).await.unwrap());
        let last = *open_periods(&env, "youtube").last().unwrap();
        assert!(last >= 20 * MIN && last <= 22 * MIN, "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_breaker_restarts_open_and_probes_again() {
        let (env, b) = setup(BreakerConfig::default(), true);
        fail_probes(&env, &b, 1).await;
        tokio::time::advance(Duration::from_secs(3600)).await;
        let probe = b.try_acquire("youtube").unwrap();
        // Persist the half-open state by a change on another service.
        for _ in 0..3 {
            call(&b, "blog", false).await.unwrap();
        }
        std::mem::forget(probe); // the process dies with the probe in flight
        env.parts().fs.crash();
        let restarted = Breakers::new(
            env.clone(),
            &dir(),
            &services(BreakerConfig::default()),
            true,
        );
        restarted.restore().await.unwrap();
        assert_eq!(state(&restarted, "youtube"), BreakerState::Open);
        assert!(restarted.try_acquire("youtube").unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_future_until_is_pulled_back_on_restore() {
        let (env, b) = setup(BreakerConfig::default(), true);
        let saved = SavedBreakers {
            services: BTreeMap::from([(
                "youtube".to_string(),
                SavedBreaker {
                    state: BreakerState::Open,
                    until: t0() + chrono::Duration::days(365),
                    trips: 3,
                    opened_at: None,
                },
            )]),
        };
        store::write_json(env.fs(), &dir().join(STATE_FILE), &saved)
            .await
            .unwrap();
        b.restore().await.unwrap();
        let until = b.try_acquire("youtube").unwrap_err().until;
        assert!(
            until <= env.now() + chrono::Duration::minutes(66),
            "{until}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_corrupt_state_file_resets_to_closed() {
        let (env, b) = setup(BreakerConfig::default(), true);
        fail_probes(&env, &b, 0).await;
        assert_eq!(state(&b, "youtube"), BreakerState::Open);
        let path = dir().join(STATE_FILE);
        crate::env::FileSystem::write(env.fs(), &path, b"{\"services\": [tor")
            .await
            .unwrap();
        let err = b.restore().await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(state(&b, "youtube"), BreakerState::Closed);
        assert!(b.try_acquire("youtube").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_state_file_is_a_first_start() {
        let (_env, b) = setup(BreakerConfig::default(), true);
        b.restore().await.unwrap();
        assert!(b.states().values().all(|s| *s == BreakerState::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_breakers_allow_everything_and_record_nothing() {
        let (env, b) = setup(BreakerConfig::default(), false);
        for _ in 0..20 {
            assert!(!call(&b, "youtube", false).await.unwrap());
        }
        assert!(b.states().values().all(|s| *s == BreakerState::Closed));
        assert_eq!(b.states().len(), 2);
        assert!(env.events_so_far().is_empty());
        assert!(env.parts().fs.paths().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_services_are_unmanaged() {
        let (env, b) = setup(BreakerConfig::default(), true);
        for _ in 0..20 {
            call(&b, "not-configured", false).await.unwrap();
        }
        assert!(!b.states().contains_key("not-configured"));
        assert!(env.events_so_far().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn permits_do_not_leak_secrets_or_internals_in_debug() {
        let (_env, b) = setup(BreakerConfig::default(), true);
        let permit = b.try_acquire("youtube").unwrap();
        let text = format!("{permit:?}");
        assert!(
            text.contains("youtube") && text.contains("probe: false"),
            "{text}"
        );
    }

    /// Calls a dead service from 3 jobs every 15 minutes for 2 hours; returns how many
    /// calls reached it and how many of those were probes.
    async fn dead_service(enabled: bool) -> (u32, u32, Vec<u32>) {
        let (_env, b) = setup(BreakerConfig::default(), enabled);
        let (mut hits, mut probes, mut per_tick) = (0, 0, Vec::new());
        for tick in 0..=8 {
            if tick > 0 {
                tokio::time::advance(15 * MIN).await;
            }
            let mut this_tick = 0;
            for _job in 0..3 {
                if let Ok(probe) = call(&b, "youtube", false).await {
                    hits += 1;
                    this_tick += 1;
                    probes += u32::from(probe);
                }
            }
            per_tick.push(this_tick);
        }
        (hits, probes, per_tick)
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_service_is_left_alone_except_for_probes() {
        // Naive: every job hits the dead service on every run.
        let (naive_hits, _, _) = dead_service(false).await;
        assert_eq!(naive_hits, 27);
        // Ours: three failures open it; afterwards only single probes, ever rarer.
        let (hits, probes, per_tick) = dead_service(true).await;
        assert_eq!(hits, 3 + probes);
        assert_eq!(per_tick[0], 3);
        assert!(per_tick[1..].iter().all(|n| *n <= 1), "{per_tick:?}");
        assert!(
            hits <= 7,
            "{hits} calls reached the dead service: {per_tick:?}"
        );
    }
}
