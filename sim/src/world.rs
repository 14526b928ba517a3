//! The world: everything outside the runner host, built from one seed.
//!
//! It owns the services, the fault switches, the network (routes and statistics), the
//! runner's disk, the process script and the trace, all behind `Arc`s, so they survive
//! `Sim::crash` and `Sim::bounce` of the runner host. The runner's host software calls
//! [`World::env`] on every boot to get a fresh [`SimEnv`] wired to them; the driver
//! crashes the host through [`World::crash`], which loses what the disk had not made
//! durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use steadfast_core::env::SeededRng;
use steadfast_core::event::MemorySink;
use steadfast_testkit::{
    FakeClock, FakeMemory, MemDb, MemFs, RouteConnector, ScriptedSpawner, TestParts, TimeSource,
};

use crate::env::{SimEnv, TurmoilTime};
use crate::faults::FaultState;
use crate::net::{self, NetStats};
use crate::services::{
    ApiConfig, ApiService, Ledger, OAuthConfig, OAuthServer, Service, ServiceRegistry, mix_seed,
};

/// Sub-seed streams, so adding a consumer never shifts another's sequence.
const STREAM_FAULTS: u64 = 1;
const STREAM_SERVICES: u64 = 2;
const STREAM_BOOTS: u64 = 3;

/// The simulated world around the runner. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct World {
    seed: u64,
    epoch: DateTime<Utc>,
    zone: Tz,
    /// The world's own time (services, the memory model).
    time: TurmoilTime,
    /// The runner's wall clock, over `time`.
    clock: FakeClock,
    faults: FaultState,
    services: ServiceRegistry,
    /// Routes to the services; its rule is `faults`.
    net: RouteConnector,
    stats: NetStats,
    /// The runner host's disk, outside the host so a crash loses only the undurable.
    fs: MemFs,
    /// The runner's store, outside the host: a crash drops only uncommitted work. Its
    /// commits count on the disk's crash points.
    db: MemDb,
    /// Driven by the memory model in `faults`.
    memory: FakeMemory,
    spawner: ScriptedSpawner,
    trace: MemorySink,
    /// Every request the services received: the judge's ground truth.
    ledger: Ledger,
    boots: Arc<AtomicU64>,
    services_added: Arc<AtomicU64>,
    /// An instant at which the runner's reaper kills it (a crash inside a tick).
    kill_at: Arc<tokio::sync::watch::Sender<Option<DateTime<Utc>>>>,
    /// When the runner died at a crash point or a kill, as its reaper saw it.
    died_at: Arc<Mutex<Option<DateTime<Utc>>>>,
    /// When the runner host was asleep or crashed by the world (the judge's excuse).
    away: crate::sleep::HostAway,
}

impl World {
    /// An empty world starting at `epoch` (a fixed date, never the OS clock) whose
    /// every random choice derives from `seed`. Its zone is UTC until [`Self::with_zone`].
    pub fn new(seed: u64, epoch: DateTime<Utc>) -> Self {
        let time = TurmoilTime::new(epoch);
        let fs = MemFs::default();
        let faults = FaultState::new(mix_seed(seed, STREAM_FAULTS));
        let net = RouteConnector::default();
        net.set_rule(Arc::new(faults.clone()));
        let memory = {
            let (faults, time) = (faults.clone(), time.clone());
            FakeMemory::driven_by(move || faults.memory_at(time.now()))
        };
        Self {
            seed,
            epoch,
            zone: Tz::UTC,
            clock: FakeClock::new(time.clone()),
            time,
            faults,
            services: ServiceRegistry::default(),
            stats: NetStats::new(net.clone()),
            net,
            db: MemDb::with_crash_points(fs.crash_points().clone()),
            fs,
            memory,
            spawner: ScriptedSpawner::default(),
            trace: MemorySink::default(),
            ledger: Ledger::default(),
            boots: Arc::default(),
            services_added: Arc::default(),
            kill_at: Arc::new(tokio::sync::watch::Sender::new(None)),
            died_at: Arc::default(),
            away: crate::sleep::HostAway::default(),
        }
    }

    /// Sets the zone whose midnight resets API quotas (and the runner's local time).
    pub fn with_zone(mut self, zone: Tz) -> Self {
        self.zone = zone;
        self
    }

    /// Bounds the trace to `limit` events.
    pub fn with_trace_limit(mut self, limit: usize) -> Self {
        self.trace = MemorySink::with_limit(limit);
        self
    }

    /// A turmoil builder with this world's epoch and seed already set (both must always
    /// be: turmoil's default epoch reads the OS clock).
    pub fn turmoil_builder(&self, tick: Duration, duration: Duration) -> turmoil::Builder {
        let since_epoch = self
            .epoch
            .timestamp_nanos_opt()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let mut builder = turmoil::Builder::new();
        builder
            .epoch(UNIX_EPOCH + Duration::from_nanos(since_epoch))
            .rng_seed(self.seed)
            .tick_duration(tick)
            .simulation_duration(duration);
        builder
    }

    fn next_service_seed(&self) -> u64 {
        let n = self.services_added.fetch_add(1, Ordering::SeqCst);
        mix_seed(mix_seed(self.seed, STREAM_SERVICES), n)
    }

    /// Adds a token server on host `name`.
    pub fn add_oauth(&self, name: &str, config: OAuthConfig) -> OAuthServer {
        let server = OAuthServer::new(name, config, self.next_service_seed());
        self.serve(Arc::new(server.clone()));
        server
    }

    /// An API configuration in this world's zone, without limits.
    pub fn api_config(&self, name: &str) -> ApiConfig {
        ApiConfig {
            zone: self.zone,
            ..ApiConfig::new(name)
        }
    }

    /// Adds an API.
    pub fn add_api(&self, config: ApiConfig) -> ApiService {
        let api = ApiService::new(config);
        self.serve(Arc::new(api.clone()));
        api
    }

    /// Registers `service` and routes connections to its host name to it.
    fn serve(&self, service: Arc<dyn Service>) {
        self.services.register(service.clone());
        let host = service.name().to_string();
        let handler = net::handler(
            &host,
            service,
            self.faults.clone(),
            self.time.clone(),
            self.stats.clone(),
            self.fs.crash_points().clone(),
            self.ledger.clone(),
        );
        self.net.route(&host, handler);
    }

    /// A fresh environment for one boot of the runner; call it from host software.
    ///
    /// Each boot gets its own random stream (a restarted process does not replay its
    /// predecessor's choices) and starts with no leaked memory.
    pub fn env(&self) -> SimEnv {
        let boot = self.boots.fetch_add(1, Ordering::SeqCst);
        self.away.booted(self.time.now());
        self.faults.restart_memory(self.time.now());
        SimEnv::from_parts(TestParts {
            clock: self.clock.clone(),
            rng: SeededRng::from_seed(mix_seed(mix_seed(self.seed, STREAM_BOOTS), boot)),
            net: self.net.clone(),
            fs: self.fs.clone(),
            memory: self.memory.clone(),
            spawner: self.spawner.clone(),
            events: self.trace.clone(),
            db: self.db.clone(),
        })
    }

    /// Crashes `host` (the runner's) and with it the power of its disk: what was not
    /// durable is lost. Every crash of the runner host goes through here.
    pub fn crash(&self, sim: &mut turmoil::Sim<'_>, host: &str) {
        sim.crash(host);
        self.fs.crash();
        // A kill scheduled for the process that just died dies with it.
        self.kill_at.send_replace(None);
    }

    /// Has the runner's reaper kill the runner at `at` (inside the coming tick). The
    /// reaper must be running ([`Self::reaper`], spawned at boot).
    pub fn schedule_kill(&self, at: DateTime<Utc>) {
        self.kill_at.send_replace(Some(at));
    }

    /// Whether the runner is dead: a crash point hit or a kill, and the driver has not
    /// dropped the host yet. A dead process reaches no service and commits nothing.
    pub fn runner_dead(&self) -> bool {
        self.fs.crash_points().hit().is_some()
    }

    /// When the runner died (at a crash point or a kill) since the last call, if its
    /// reaper saw it.
    pub fn take_death(&self) -> Option<DateTime<Utc>> {
        self.died_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The runner host's reaper: spawned at boot beside the runner, it kills the process
    /// at the instant [`Self::schedule_kill`] set (exactly, inside a tick: it sleeps on
    /// the host's paused clock) and notes when a crash point stopped it, so the driver
    /// can date a crash between its ticks. It ends when the process dies.
    pub async fn reaper(self) {
        let points = self.fs.crash_points().clone();
        let mut kills = self.kill_at.subscribe();
        loop {
            let target = *kills.borrow_and_update();
            let wait = target.map(|at| (at - self.time.now()).to_std().unwrap_or_default());
            tokio::select! {
                biased;
                _ = points.crashed() => break,
                changed = kills.changed() => {
                    if changed.is_err() {
                        // The sender lives in the world, as long as this task can.
                        break;
                    }
                }
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                    self.kill_at.send_replace(None);
                    points.kill("crash.instant");
                    break;
                }
            }
        }
        *self.died_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.time.now());
    }

    /// When the runner host was away by the world's doing (asleep, crashed until a
    /// scheduled restart), in world time.
    pub fn host_away(&self) -> &crate::sleep::HostAway {
        &self.away
    }

    /// The seed everything derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// When the world starts.
    pub fn epoch(&self) -> DateTime<Utc> {
        self.epoch
    }
    /// The world's zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }
    /// How many times the runner booted.
    pub fn boots(&self) -> u64 {
        self.boots.load(Ordering::SeqCst)
    }
    /// The world's own time (services, the memory model); [`crate::sleep`] jumps it.
    pub fn time(&self) -> &TurmoilTime {
        &self.time
    }

    /// The runner's wall clock (outside a host: the last time a host saw).
    pub fn clock(&self) -> &FakeClock {
        &self.clock
    }
    /// The fault switches.
    pub fn faults(&self) -> &FaultState {
        &self.faults
    }
    /// The services by host name.
    pub fn services(&self) -> &ServiceRegistry {
        &self.services
    }
    /// Per-host network statistics.
    pub fn net_stats(&self) -> &NetStats {
        &self.stats
    }
    /// The runner host's disk (its full switch, its crash points).
    pub fn fs(&self) -> &MemFs {
        &self.fs
    }
    /// The runner's store (its full switch).
    pub fn db(&self) -> &MemDb {
        &self.db
    }
    /// The process script.
    pub fn spawner(&self) -> &ScriptedSpawner {
        &self.spawner
    }
    /// The trace.
    pub fn trace(&self) -> &MemorySink {
        &self.trace
    }
    /// Every request the services received.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}
