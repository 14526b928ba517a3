//! The heartbeat monitor: every interval it looks for silent deaths (overdue jobs),
//! memory over its warning threshold and services failing their health probe, and
//! alerts a human once per episode.
//!
//! A service whose gate is closed (it advertised a `Retry-After` or a quota reset, or
//! its breaker opened) is not health-checked until the gate opens: the service asked
//! every caller to stay away until then, the monitor included, and the breaker's one
//! probe is the prober's. Its episode neither grows nor clears while it is held.
//!
//! Episodes are kept in the store (`alerts`), so a restart neither alerts again for an
//! episode a human already heard of nor forgets one that was building up (a service
//! that failed two probes before the restart alerts on the third after it). They are
//! written only when they change, not on every look.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::{Finding, Heartbeats};
use crate::alert::{Alert, AlertKind, AlertSink};
use crate::config::{ServiceConfig, Url};
use crate::db::Episode;
use crate::env::{Env, MemoryProbe};
use crate::event::{Event, EventKind};
use crate::http;
use crate::taxonomy::ErrorClass;
use crate::wake::Drift;

/// The shortest interval [`Monitor::run`] accepts (a zero interval would spin).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// One service's health probe: `GET url`, 2xx within `timeout` is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthProbe {
    /// The service's name, as in findings, events and alerts.
    pub service: String,
    /// The URL probed.
    pub url: Url,
    /// The probe's deadline (the service's call timeout).
    pub timeout: Duration,
}

impl HealthProbe {
    /// The probes of every service that has a `health_url`, in the given order.
    pub fn from_services<'a>(services: impl IntoIterator<Item = &'a ServiceConfig>) -> Vec<Self> {
        services
            .into_iter()
            .filter_map(|s| {
                s.health_url.as_ref().map(|url| Self {
                    service: s.name.clone(),
                    url: url.clone(),
                    timeout: s.call_timeout,
                })
            })
            .collect()
    }
}

/// What an episode is about: one alert per key until its finding clears.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum EpisodeKey {
    Overdue(String),
    Memory,
    Service(String),
    Breaker(String),
}

impl EpisodeKey {
    /// The key as stored.
    fn stored(&self) -> String {
        match self {
            Self::Overdue(job) => format!("overdue:{job}"),
            Self::Memory => "memory".to_string(),
            Self::Service(service) => format!("service:{service}"),
            Self::Breaker(service) => format!("breaker:{service}"),
        }
    }

    /// A stored key; `None` for one this runner does not know (kept, not guessed at).
    fn parse(stored: &str) -> Option<Self> {
        if stored == "memory" {
            return Some(Self::Memory);
        }
        let (kind, name) = stored.split_once(':')?;
        let name = name.to_string();
        Some(match kind {
            "overdue" => Self::Overdue(name),
            "service" => Self::Service(name),
            "breaker" => Self::Breaker(name),
            _ => return None,
        })
    }
}

/// Failed health probes in a row before a service's episode becomes an alert: one
/// failed probe is a blip the runner's retries absorb, not something for a human.
pub const UNHEALTHY_LOOKS_BEFORE_ALERT: u32 = 3;

impl EpisodeKey {
    /// Looks in a row before the episode is an alert.
    fn looks_before_alert(&self) -> u32 {
        match self {
            Self::Service(_) => UNHEALTHY_LOOKS_BEFORE_ALERT,
            Self::Overdue(_) | Self::Memory | Self::Breaker(_) => 1,
        }
    }
}

/// Where the monitor reads breakers that have not closed, and since when.
pub type OpenBreakers = Box<dyn Fn() -> BTreeMap<String, DateTime<Utc>> + Send + Sync>;

/// Where the monitor reads a service's gate: `(service, now)` -> the instant before
/// which the service takes no calls, when its gate is closed at `now`.
pub type ClosedGates = Box<dyn Fn(&str, DateTime<Utc>) -> Option<DateTime<Utc>> + Send + Sync>;

/// The heartbeat monitor (pattern 3).
pub struct Monitor<E: Env, A: AlertSink> {
    env: E,
    heartbeats: Arc<Heartbeats<E>>,
    probes: Vec<HealthProbe>,
    /// Resident memory above this is a finding.
    memory_warn_bytes: u64,
    alerts: A,
    /// The runner's start: jobs never seen are measured from here.
    since: DateTime<Utc>,
    /// Findings of the previous check and how many looks in a row have seen each; an
    /// episode alerts once, on the look that reaches its count.
    open_episodes: Mutex<BTreeMap<EpisodeKey, u32>>,
    /// The episodes as the store has them (looks capped at the alert's count), to write
    /// only what changed.
    stored: Mutex<BTreeMap<EpisodeKey, Episode>>,
    /// Breakers to watch, and how long one may stay open before it is a finding.
    breakers: Option<(OpenBreakers, Duration)>,
    /// The services' gates: a service held by its gate is not health-checked, and a
    /// job deferred behind one for longer than its threshold is a finding.
    gates: Option<ClosedGates>,
    /// Job -> the services its steps call (in step order, without repeats).
    job_services: BTreeMap<String, Vec<String>>,
    /// After a wake or clock step, overdue jobs and stuck breakers are not judged
    /// until this monotonic instant: the job tasks first account for the slots that
    /// passed (catch-up runs, missed slots journaled), and a breaker gets its probe.
    quiet_until: Mutex<Option<tokio::time::Instant>>,
    /// Whether wakes start a quiet period (off: the naive monitor pages on wake).
    wake_grace: bool,
}

/// How long after a wake overdue jobs and stuck breakers are left unjudged: longer
/// than a job task takes to notice the wake (its waits are sliced into minutes).
pub const WAKE_GRACE: Duration = Duration::from_secs(150);

impl<E: Env, A: AlertSink> std::fmt::Debug for Monitor<E, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("probes", &self.probes)
            .field("memory_warn_bytes", &self.memory_warn_bytes)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl<E: Env, A: AlertSink> Monitor<E, A> {
    /// A monitor over `heartbeats` (shared with the jobs that record successes), probing
    /// `probes`, warning above `memory_warn_bytes`, alerting `alerts`; `since` is the
    /// runner's start time. The episodes an earlier process left open are read back
    /// from the store (an unreadable store is reported and starts with none).
    pub fn new(
        env: E,
        heartbeats: Arc<Heartbeats<E>>,
        probes: Vec<HealthProbe>,
        memory_warn_bytes: u64,
        alerts: A,
        since: DateTime<Utc>,
    ) -> Self {
        let stored: BTreeMap<EpisodeKey, Episode> = match heartbeats.db().episodes() {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(key, e)| Some((EpisodeKey::parse(&key)?, e)))
                .collect(),
            Err(e) => {
                env.emit(
                    Event::new(EventKind::HeartbeatFinding)
                        .class(ErrorClass::Degraded)
                        .detail(format!("alert episodes start empty: {e}")),
                );
                BTreeMap::new()
            }
        };
        let open = stored.iter().map(|(k, e)| (k.clone(), e.looks)).collect();
        Self {
            env,
            heartbeats,
            probes,
            memory_warn_bytes,
            alerts,
            since,
            open_episodes: Mutex::new(open),
            stored: Mutex::new(stored),
            breakers: None,
            gates: None,
            job_services: BTreeMap::new(),
            quiet_until: Mutex::new(None),
            wake_grace: false,
        }
    }

    /// Also reports every breaker that has stayed open (through failed probes) for
    /// longer than `limit`.
    pub fn watch_breakers(mut self, open: OpenBreakers, limit: Duration) -> Self {
        self.breakers = Some((open, limit));
        self
    }

    /// Does not health-check a service while `gates` says it is held: the service asked
    /// everyone to wait (a `Retry-After`, a quota reset), or its breaker is open and the
    /// prober's probe is the one call allowed. Also reports a job (of `job_services`:
    /// job -> the services its steps call) whose run has been deferred for longer than
    /// its threshold while one of its services is held: such a job is not overdue (a
    /// deferred run is waiting, not dead), yet it produces nothing, and nobody would
    /// hear of it until the gate opens (a spent daily quota: until midnight).
    pub fn watch_gates(
        mut self,
        gates: ClosedGates,
        job_services: BTreeMap<String, Vec<String>>,
    ) -> Self {
        self.gates = Some(gates);
        self.job_services = job_services;
        self
    }

    /// Jobs overdue while a run of theirs waits behind a service's gate: reported as
    /// such (naming the service and when it takes calls again), in place of a plain
    /// "overdue" (one episode either way).
    fn deferred_behind_gates(&self, now: DateTime<Utc>, findings: &mut Vec<Finding>) {
        let Some(gates) = &self.gates else {
            return;
        };
        for (job, services) in &self.job_services {
            let overdue = findings
                .iter()
                .any(|f| matches!(f, Finding::Overdue { job: j, .. } if j == job));
            if !overdue {
                continue;
            }
            let Some((service, not_before)) = services
                .iter()
                .find_map(|s| gates(s, now).map(|until| (s, until)))
            else {
                continue;
            };
            let Some(since) = self.heartbeats.held_since(job) else {
                continue;
            };
            findings.retain(|f| !matches!(f, Finding::Overdue { job: j, .. } if j == job));
            findings.push(Finding::DeferredBehindGate {
                job: job.clone(),
                since,
                threshold: self.heartbeats.threshold(job).unwrap_or_default(),
                service: service.clone(),
                not_before,
            });
        }
    }

    /// The probed services whose gate is closed at `now`.
    fn held(&self, now: DateTime<Utc>) -> BTreeSet<String> {
        let Some(gates) = &self.gates else {
            return BTreeSet::new();
        };
        self.probes
            .iter()
            .filter(|p| gates(&p.service, now).is_some())
            .map(|p| p.service.clone())
            .collect()
    }

    /// After a wake (told by [`Monitor::run`]'s readings of both clocks), leave overdue
    /// jobs and stuck breakers unjudged for [`WAKE_GRACE`]: a job that slept through
    /// its slots is not late until it has had the chance to catch up.
    pub fn wake_grace(mut self, on: bool) -> Self {
        self.wake_grace = on;
        self
    }

    /// Starts a quiet period of [`WAKE_GRACE`] from now.
    fn woke(&self) {
        let until = tokio::time::Instant::now() + WAKE_GRACE;
        *self.quiet_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    fn quiet(&self) -> bool {
        self.quiet_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// One look: overdue jobs, memory, then services in probe order. Every finding is an
    /// event; a finding that was not present in the previous look is also an alert.
    pub async fn check_once(&self) -> Vec<Finding> {
        let now = self.env.now();
        let quiet = self.quiet();
        let mut findings = if quiet {
            Vec::new()
        } else {
            self.heartbeats.overdue(now)
        };
        if !quiet {
            self.deferred_behind_gates(now, &mut findings);
        }
        let bytes = self.env.memory().resident_bytes();
        if bytes > self.memory_warn_bytes {
            findings.push(Finding::MemoryHigh {
                bytes,
                limit: self.memory_warn_bytes,
            });
        }
        let held = self.held(now);
        findings.extend(self.probe_all(&held).await);
        if let Some((open, limit)) = self.breakers.as_ref().filter(|_| !quiet) {
            let limit_c = chrono::Duration::from_std(*limit).unwrap_or(chrono::Duration::MAX);
            for (service, since) in open() {
                if now - since >= limit_c {
                    findings.push(Finding::BreakerStuck {
                        service,
                        since,
                        limit: *limit,
                    });
                }
            }
        }
        self.report(&findings, &held).await;
        findings
    }

    /// Checks every `interval` (at least [`MIN_INTERVAL`]) until `shutdown` becomes true
    /// or its sender is dropped. The first check runs at once.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(interval.max(MIN_INTERVAL));
        // After a slow check, keep the spacing rather than checking in a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let interval = interval.max(MIN_INTERVAL);
        let mut drift: Option<Drift> = None;
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                _ = ticks.tick() => {}
            }
            let now = self.env.now();
            let expected = if drift.is_some() {
                interval
            } else {
                Duration::ZERO
            };
            let reading = drift.get_or_insert_with(|| Drift::start(now));
            if self.wake_grace && reading.observe(now, expected).is_wake() {
                self.woke();
            }
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = self.check_once() => {}
            }
        }
    }

    /// Probes every service but the `held` ones concurrently, so one hanging service
    /// does not delay the others; results come back in probe order.
    async fn probe_all(&self, held: &BTreeSet<String>) -> Vec<Finding> {
        let mut set = tokio::task::JoinSet::new();
        // Held services: no call, no finding (`Some(None)`).
        let mut outcomes: Vec<Option<Option<String>>> = vec![None; self.probes.len()];
        for (index, probe) in self.probes.iter().enumerate() {
            if held.contains(&probe.service) {
                outcomes[index] = Some(None);
                continue;
            }
            let (env, probe) = (self.env.clone(), probe.clone());
            set.spawn(async move { (index, probe_one(&env, &probe).await) });
        }
        // `None`: the probe task did not finish (it panicked), which counts as unhealthy.
        while let Some(joined) = set.join_next().await {
            if let Ok((index, outcome)) = joined {
                outcomes[index] = Some(outcome);
            }
        }
        self.probes
            .iter()
            .zip(outcomes)
            .filter_map(|(probe, outcome)| {
                let detail = match outcome {
                    Some(None) => return None,
                    Some(Some(detail)) => detail,
                    None => "health probe task failed".to_string(),
                };
                Some(Finding::ServiceUnhealthy {
                    service: probe.service.clone(),
                    detail,
                })
            })
            .collect()
    }

    /// Emits each new episode's finding, raises an alert for each episode that has
    /// lasted its number of looks, and keeps the episodes that changed in the store.
    async fn report(&self, findings: &[Finding], held: &BTreeSet<String>) {
        let (changed, closed) = self.look(findings, held);
        if let Err(e) = self.heartbeats.db().save_episodes(changed, closed).await {
            // The alerts went out; only their memory across a restart is lost.
            self.env.emit(
                Event::new(EventKind::HeartbeatFinding)
                    .class(ErrorClass::Degraded)
                    .detail(format!("alert episodes not kept: {e}")),
            );
        }
    }

    /// One look's bookkeeping: events and alerts, then the episodes the store must
    /// change (by stored key) and the ones it must forget. The episodes of `held`
    /// services (not checked this look) stay as they were.
    fn look(
        &self,
        findings: &[Finding],
        held: &BTreeSet<String>,
    ) -> (Vec<(String, Episode)>, Vec<String>) {
        let now = self.env.now();
        let mut open = self.open_episodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut current: BTreeMap<EpisodeKey, u32> = BTreeMap::new();
        for finding in findings {
            let (key, kind, job, service, message) = self.describe(finding);
            if current.contains_key(&key) {
                continue;
            }
            let looks = open.get(&key).copied().unwrap_or(0).saturating_add(1);
            let mut event = Event::new(EventKind::HeartbeatFinding).detail(message.clone());
            if let Some(job) = &job {
                event = event.job(job.clone());
            }
            if let Some(service) = &service {
                event = event.service(service.clone());
            }
            // One finding event per episode, not per look: a job overdue for a day
            // must not write a line a minute.
            if looks == 1 {
                self.env.emit(event.clone());
            }
            if looks == key.looks_before_alert() {
                self.env.emit(Event {
                    event: EventKind::Alert,
                    ..event
                });
                self.alerts.alert(Alert {
                    at: now,
                    kind,
                    job,
                    service,
                    message,
                });
            }
            current.insert(key, looks);
        }
        // A run in progress neither raises nor clears an overdue episode: the job is not
        // overdue while it runs, but a run that fails again is the same episode, not a
        // new alert.
        for (key, looks) in open.iter() {
            if let EpisodeKey::Overdue(job) = key
                && !current.contains_key(key)
                && self.heartbeats.is_running(job)
            {
                current.insert(key.clone(), *looks);
            }
            // A service its gate holds was not checked: its episode is unchanged.
            if let EpisodeKey::Service(service) = key
                && held.contains(service)
            {
                current.insert(key.clone(), *looks);
            }
        }
        // Keys absent now have cleared: their next appearance is a new episode.
        *open = current;
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        let closed: Vec<EpisodeKey> = stored
            .keys()
            .filter(|k| !open.contains_key(*k))
            .cloned()
            .collect();
        for key in &closed {
            stored.remove(key);
        }
        let mut changed = Vec::new();
        for (key, looks) in open.iter() {
            let threshold = key.looks_before_alert();
            let before = stored.get(key).copied();
            let episode = Episode {
                opened_at: before.map_or(now, |e| e.opened_at),
                // Past the alert's count more looks change nothing worth a write.
                looks: (*looks).min(threshold),
                sent_at: before
                    .and_then(|e| e.sent_at)
                    .or_else(|| (*looks >= threshold).then_some(now)),
            };
            if before != Some(episode) {
                stored.insert(key.clone(), episode);
                changed.push((key.stored(), episode));
            }
        }
        (changed, closed.iter().map(EpisodeKey::stored).collect())
    }

    fn describe(
        &self,
        finding: &Finding,
    ) -> (
        EpisodeKey,
        AlertKind,
        Option<String>,
        Option<String>,
        String,
    ) {
        match finding {
            Finding::Overdue {
                job,
                last_success,
                known_since,
                threshold,
            } => {
                let message = match last_success {
                    Some(last) => format!(
                        "job has not succeeded since {} (threshold {}s)",
                        last.to_rfc3339_opts(SecondsFormat::Secs, true),
                        threshold.as_secs()
                    ),
                    None => format!(
                        "job has never succeeded since it was first scheduled at {} (threshold {}s)",
                        known_since.to_rfc3339_opts(SecondsFormat::Secs, true),
                        threshold.as_secs()
                    ),
                };
                (
                    EpisodeKey::Overdue(job.clone()),
                    AlertKind::Overdue,
                    Some(job.clone()),
                    None,
                    message,
                )
            }
            Finding::DeferredBehindGate {
                job,
                since,
                threshold,
                service,
                not_before,
            } => (
                EpisodeKey::Overdue(job.clone()),
                AlertKind::Overdue,
                Some(job.clone()),
                Some(service.clone()),
                format!(
                    "job's run due {} has waited longer than its threshold ({}s): service `{service}` takes no calls before {}",
                    since.to_rfc3339_opts(SecondsFormat::Secs, true),
                    threshold.as_secs(),
                    not_before.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            ),
            Finding::MemoryHigh { bytes, limit } => (
                EpisodeKey::Memory,
                AlertKind::Memory,
                None,
                None,
                format!(
                    "resident memory {bytes} bytes is over the warning threshold of {limit} bytes"
                ),
            ),
            Finding::ServiceUnhealthy { service, detail } => (
                EpisodeKey::Service(service.clone()),
                AlertKind::ServiceUnhealthy,
                None,
                Some(service.clone()),
                detail.clone(),
            ),
            Finding::BreakerStuck {
                service,
                since,
                limit,
            } => (
                EpisodeKey::Breaker(service.clone()),
                AlertKind::BreakerStuck,
                None,
                Some(service.clone()),
                format!(
                    "circuit breaker has not closed since {} (limit {}s): calls to the service keep failing",
                    since.to_rfc3339_opts(SecondsFormat::Secs, true),
                    limit.as_secs()
                ),
            ),
        }
    }
}

/// Probes one service: `None` when healthy, else what failed.
async fn probe_one<E: Env>(env: &E, probe: &HealthProbe) -> Option<String> {
    let req = http::Request::new(::http::Method::GET, probe.url.clone());
    match http::send(env.connector(), &req, probe.timeout).await {
        Ok(resp) if (200..300).contains(&resp.status) => None,
        Ok(resp) => Some(format!("health probe answered http {}", resp.status)),
        Err(err) => Some(format!("health probe failed: {err}")),
    }
}
