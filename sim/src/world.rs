//! The world: everything outside the runner host, built from one seed.
//!
//! It owns the services, the fault switches, the network statistics, the process
//! script and the trace, all behind `Arc`s, so they survive `Sim::crash` and
//! `Sim::bounce` of the runner host. The runner's host software calls [`World::env`]
//! on every boot to get a fresh [`SimEnv`] wired to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use steadfast_core::env::{SeededRng, WallClock};

use steadfast_testkit::MemDb;

use crate::env::{SimClock, SimEnv, SimFs, SimMemory, SimParts, SimSpawner, TraceSink};
use crate::faults::FaultState;
use crate::net::{NetStats, SimConnector};
use crate::services::{ApiConfig, ApiService, OAuthConfig, OAuthServer, ServiceRegistry, mix_seed};

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
    clock: SimClock,
    faults: FaultState,
    services: ServiceRegistry,
    stats: NetStats,
    spawner: SimSpawner,
    trace: TraceSink,
    db: MemDb,
    boots: Arc<AtomicU64>,
    services_added: Arc<AtomicU64>,
}

impl World {
    /// An empty world starting at `epoch` (a fixed date, never the OS clock) whose
    /// every random choice derives from `seed`. Its zone is UTC until [`Self::with_zone`].
    pub fn new(seed: u64, epoch: DateTime<Utc>) -> Self {
        Self {
            seed,
            epoch,
            zone: Tz::UTC,
            clock: SimClock::new(epoch),
            faults: FaultState::new(mix_seed(seed, STREAM_FAULTS)),
            services: ServiceRegistry::default(),
            stats: NetStats::default(),
            spawner: SimSpawner::default(),
            trace: TraceSink::default(),
            db: MemDb::new(),
            boots: Arc::default(),
            services_added: Arc::default(),
        }
    }

    /// Sets the zone whose midnight resets API quotas (and the runner's local time).
    pub fn with_zone(mut self, zone: Tz) -> Self {
        self.zone = zone;
        self
    }

    /// Bounds the trace to `limit` events.
    pub fn with_trace_limit(mut self, limit: usize) -> Self {
        self.trace = TraceSink::with_limit(limit);
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
        self.services.register(Arc::new(server.clone()));
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
        self.services.register(Arc::new(api.clone()));
        api
    }

    /// A fresh environment for one boot of the runner; call it from host software.
    ///
    /// Each boot gets its own random stream (a restarted process does not replay its
    /// predecessor's choices) and starts with no leaked memory.
    pub fn env(&self) -> SimEnv {
        let boot = self.boots.fetch_add(1, Ordering::SeqCst);
        self.faults.restart_memory(self.clock.now());
        SimEnv::new(SimParts {
            clock: self.clock.clone(),
            rng: SeededRng::from_seed(mix_seed(mix_seed(self.seed, STREAM_BOOTS), boot)),
            net: SimConnector::new(
                self.services.clone(),
                self.faults.clone(),
                self.clock.clone(),
                self.stats.clone(),
            ),
            fs: SimFs::new(self.faults.clone()),
            memory: SimMemory::new(self.faults.clone(), self.clock.clone()),
            spawner: self.spawner.clone(),
            events: self.trace.clone(),
            db: self.db.clone(),
        })
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
    /// The simulated wall clock (outside a host: the last time a host saw).
    pub fn clock(&self) -> &SimClock {
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
    /// The process script.
    pub fn spawner(&self) -> &SimSpawner {
        &self.spawner
    }
    /// The trace.
    pub fn trace(&self) -> &TraceSink {
        &self.trace
    }
    /// The runner's durable store.
    pub fn db(&self) -> &MemDb {
        &self.db
    }
}
