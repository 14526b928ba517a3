//! The driver: builds the world from a scenario, runs the runner core on a turmoil host,
//! flips faults on their timeline, plays the supervisor and the operator, and returns
//! everything the metrics need.
//!
//! Fault switches (a service down, a storm, resets, stalls, DNS) and access-token
//! revocations start and end at their own instant: the driver hands each one to the
//! world's [`crate::faults::FaultState`] (or the token server) before the tick it falls
//! in, and the world takes it on at that instant. Other driver actions (restarts,
//! refresh-token revocations, quota exhaustion, leaks, a full disk, sleeps and clock
//! steps, the operator's looks) land on the tick boundary at or after their instant;
//! inside a tick, tokio's paused clock times latency, stalls, timeouts and backoff
//! exactly. A crash lands on a tick boundary when its instant is one; otherwise the
//! runner host's reaper
//! ([`World::reaper`]) kills the process at that exact instant inside the tick, and a
//! crash at a durable operation stops the process inside its commit sequence (the
//! testkit's `CrashPoints`, shared by the store and the disk). Either way the dead
//! process does nothing more, and the driver drops the host at the end of the tick.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use secrecy::ExposeSecret;
use steadfast_core::config::Config;
use steadfast_core::scheduler::Runner;
use steadfast_testkit::CrashAt;

use crate::World;
use crate::faults::{Fault, FaultKind, MemoryModel};
use crate::metrics::OutputTimes;
use crate::operator::{Intervention, OperatorSink};
use crate::scenario::{FaultSpec, FaultSpecKind, Profile, Scenario};
use crate::services::{ApiService, OAuthConfig, OAuthServer};
use crate::sleep::ClockFault;

/// The host the runner lives on.
pub const RUNNER_HOST: &str = "runner";
/// At most this many onsets of one recurring fault.
const MAX_ONSETS: usize = 10_000;
/// How long a stall that stands for "never answers" lasts.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// turmoil reported an error from the host software.
    #[error("simulation failed: {0}")]
    Turmoil(String),
}

/// Something the world did to the runner (for the report's timeline).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorldEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// What (`fault_start`, `fault_end`, `crash`, `restart`, `oom_kill`, `exit`,
    /// `intervention`, `supervisor_restart`).
    pub what: String,
    /// Details.
    pub detail: String,
}

/// Everything a finished simulation leaves for the metrics and the report.
#[derive(Debug)]
pub struct SimRun {
    /// The seed.
    pub seed: u64,
    /// The profile.
    pub profile: Profile,
    /// The runner configuration the profile produced.
    pub config: Config,
    /// The world after the run (services, trace, counters).
    pub world: World,
    /// APIs by the runner's service name.
    pub apis: BTreeMap<String, ApiService>,
    /// Token servers by name.
    pub oauth: BTreeMap<String, OAuthServer>,
    /// The operator's inbox.
    pub operator: OperatorSink,
    /// Manual interventions.
    pub interventions: Vec<Intervention>,
    /// What the world did, in order (bounded).
    pub timeline: Vec<WorldEvent>,
    /// When runner-level silent deaths were injected.
    pub silent_deaths: Vec<DateTime<Utc>>,
    /// When a supervisor restarted a dead runner.
    pub supervisor_restarts: Vec<DateTime<Utc>>,
    /// When the world started and ended.
    pub start: DateTime<Utc>,
    /// The end, in world time (past the turmoil steps by every sleep of the host).
    pub end: DateTime<Utc>,
    /// Simulated seconds run.
    pub simulated_seconds: f64,
}

#[derive(Debug, Clone)]
enum Action {
    Set(String, Fault),
    Clear(String, FaultKind),
    RevokeAccess(String),
    RevokeRefresh(String),
    Leak(u64),
    DiskFull(bool),
    Crash {
        restart_after: Option<Duration>,
    },
    /// Kill the runner at this instant inside the coming tick.
    KillAt {
        at: DateTime<Utc>,
        restart_after: Duration,
    },
    /// Exhaust an API's quota until a reset (`None`: the next local midnight).
    QuotaExhaust {
        api: String,
        until: Option<DateTime<Utc>>,
        http_date: bool,
    },
    /// An API alone revokes the tokens issued until now.
    ApiTokenRevoke(String),
    /// Crash the runner at a durable operation counted from now.
    ArmCrash {
        at: CrashAt,
        restart_after: Duration,
    },
    /// The runner host sleeps or its wall clock steps ([`crate::sleep`]).
    Clock(ClockFault),
    Check(NaiveTime),
}

#[derive(Debug, Clone)]
struct Timed {
    at: DateTime<Utc>,
    seq: usize,
    label: &'static str,
    action: Action,
}

fn after(start: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    start + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The fault timeline of a scenario, sorted.
fn timeline(scenario: &Scenario) -> Vec<Timed> {
    let start = scenario.world.start;
    let end = after(start, scenario.world.duration);
    let tick = chrono::Duration::from_std(scenario.world.tick)
        .unwrap_or(chrono::Duration::MAX)
        .num_milliseconds()
        .max(1);
    // The tick boundary at or before `at` (ticks count from the start).
    let tick_of = move |at: DateTime<Utc>| {
        let since = (at - start).num_milliseconds();
        start + chrono::Duration::milliseconds(since - since.rem_euclid(tick))
    };
    let mut out: Vec<Timed> = Vec::new();
    let mut push = |at: DateTime<Utc>, label: &'static str, action: Action| {
        let seq = out.len();
        out.push(Timed {
            at,
            seq,
            label,
            action,
        });
    };
    for f in &scenario.calibrated_faults() {
        let mut onset = after(start, f.at);
        for _ in 0..MAX_ONSETS {
            if onset >= end {
                break;
            }
            let until = if f.duration.is_zero() {
                end
            } else {
                after(onset, f.duration)
            };
            for (at, action) in fault_actions(f, onset, until, &tick_of) {
                push(at, f.kind.as_str(), action);
            }
            match f.every {
                Some(every) => onset = after(onset, every),
                None => break,
            }
        }
    }
    // The operator's daily looks.
    let zone = scenario.world.zone;
    let first_day = start.with_timezone(&zone).date_naive();
    let days = scenario.world.duration.as_secs() / 86_400 + 2;
    for day in 0..days {
        let date = first_day + chrono::Days::new(day);
        for check in &scenario.operator.checks {
            if let Some(local) = zone.from_local_datetime(&date.and_time(*check)).earliest() {
                let at = local.with_timezone(&Utc);
                if at > start && at < end {
                    push(at, "check", Action::Check(*check));
                }
            }
        }
    }
    out.sort_by_key(|t| (t.at, t.seq));
    out
}

fn host(name: &str) -> String {
    format!("{name}.sim")
}

fn fault_actions(
    f: &FaultSpec,
    onset: DateTime<Utc>,
    until: DateTime<Utc>,
    tick_of: &dyn Fn(DateTime<Utc>) -> DateTime<Utc>,
) -> Vec<(DateTime<Utc>, Action)> {
    let h = host(&f.target);
    let switch = |fault: Fault| {
        let kind = fault.kind();
        vec![
            (onset, Action::Set(h.clone(), fault)),
            (until, Action::Clear(h.clone(), kind)),
        ]
    };
    match f.kind {
        FaultSpecKind::TokenRevoke => vec![(onset, Action::RevokeAccess(f.target.clone()))],
        FaultSpecKind::RefreshRevoke => vec![(onset, Action::RevokeRefresh(f.target.clone()))],
        FaultSpecKind::RateLimitStorm => switch(Fault::RateLimitStorm {
            retry_after: f.retry_after,
            http_date: f.retry_after_date,
        }),
        FaultSpecKind::BadAnswer => switch(Fault::BadAnswer {
            shape: f.shape.unwrap_or(crate::faults::BadShape::Empty),
            probability: f.probability,
            stall: f.stall,
        }),
        FaultSpecKind::QuotaExhaust => vec![(
            onset,
            Action::QuotaExhaust {
                api: f.target.clone(),
                until: (!f.duration.is_zero()).then_some(until),
                http_date: f.retry_after_date,
            },
        )],
        FaultSpecKind::ApiTokenRevoke => vec![(onset, Action::ApiTokenRevoke(f.target.clone()))],
        FaultSpecKind::Reset => switch(Fault::Reset {
            probability: f.probability,
        }),
        FaultSpecKind::Stall => switch(Fault::Stall {
            duration: f.stall,
            probability: f.probability,
        }),
        FaultSpecKind::ServerError => switch(Fault::ServerError {
            status: f.status,
            probability: f.probability,
        }),
        FaultSpecKind::Dns => switch(Fault::DnsFailure),
        FaultSpecKind::Slow => switch(Fault::Latency(f.latency)),
        FaultSpecKind::Partition => switch(Fault::Partition),
        FaultSpecKind::Down => switch(Fault::Down),
        FaultSpecKind::MemoryLeak => vec![
            (onset, Action::Leak(f.leak_bytes_per_hour)),
            (until, Action::Leak(0)),
        ],
        FaultSpecKind::DiskFull => vec![
            (onset, Action::DiskFull(true)),
            (until, Action::DiskFull(false)),
        ],
        FaultSpecKind::Crash => match f.crash_point {
            Some(p) => vec![(
                onset,
                Action::ArmCrash {
                    at: if p.after {
                        CrashAt::After(p.op)
                    } else {
                        CrashAt::Before(p.op)
                    },
                    restart_after: f.restart_after,
                },
            )],
            None if tick_of(onset) == onset => vec![(
                onset,
                Action::Crash {
                    restart_after: Some(f.restart_after),
                },
            )],
            None => vec![(
                tick_of(onset),
                Action::KillAt {
                    at: onset,
                    restart_after: f.restart_after,
                },
            )],
        },
        FaultSpecKind::SilentDeath if f.target == "runner" => {
            vec![(
                onset,
                Action::Crash {
                    restart_after: None,
                },
            )]
        }
        FaultSpecKind::SilentDeath => switch(Fault::Stall {
            duration: FOREVER,
            probability: 1.0,
        }),
        FaultSpecKind::Sleep => vec![(onset, Action::Clock(ClockFault::Sleep(f.duration)))],
        FaultSpecKind::ClockStep => {
            let by = chrono::Duration::from_std(f.duration).unwrap_or_default();
            let by = if f.backward { -by } else { by };
            vec![(onset, Action::Clock(ClockFault::Step(by)))]
        }
    }
}

/// Mutable state of one simulation outside the host.
struct Driver<'a> {
    scenario: &'a Scenario,
    profile: Profile,
    world: World,
    oauth: BTreeMap<String, OAuthServer>,
    apis: BTreeMap<String, ApiService>,
    config: Arc<Mutex<Config>>,
    operator: OperatorSink,
    interventions: Vec<Intervention>,
    timeline: Vec<WorldEvent>,
    silent_deaths: Vec<DateTime<Utc>>,
    supervisor_restarts: Vec<DateTime<Utc>>,
    /// A scheduled restart of the runner, if any.
    restart_at: Option<DateTime<Utc>>,
    /// Whether the last stop was expected to be followed by a restart.
    was_running: bool,
    revoked: Vec<String>,
    /// How far the operator has read the trace for rejected credentials.
    trace_cursor: usize,
    /// Each job's output so far, as the operator sees it.
    outputs: OutputTimes,
    faults_since_fix: Vec<String>,
    /// How long after a crash inside a tick (a kill or a crash point) the runner
    /// restarts, while one is pending.
    pending_crash: Option<Duration>,
}

const MAX_TIMELINE: usize = 20_000;

impl Driver<'_> {
    fn log(&mut self, at: DateTime<Utc>, what: &str, detail: String) {
        if self.timeline.len() < MAX_TIMELINE {
            self.timeline.push(WorldEvent {
                at,
                what: what.to_string(),
                detail,
            });
        }
    }

    /// Logs an event dated inside the coming tick (a fault switch): after every event
    /// dated at or before it, so the timeline stays in time order.
    fn log_ahead(&mut self, at: DateTime<Utc>, what: &str, detail: String) {
        if self.timeline.len() < MAX_TIMELINE {
            let place = self.timeline.partition_point(|e| e.at <= at);
            self.timeline.insert(
                place,
                WorldEvent {
                    at,
                    what: what.to_string(),
                    detail,
                },
            );
        }
    }

    /// The world's wall-clock time at the driver's `now` (turmoil's time): later than
    /// it by every sleep so far.
    fn world_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.world.time().jumped()
    }

    fn clients_of(&self, oauth: &str) -> Vec<String> {
        let host = host(oauth);
        let config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        config
            .credentials
            .values()
            .filter(|c| c.token_url.host == host)
            .map(|c| c.client_id.clone())
            .collect()
    }

    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, now: DateTime<Utc>, t: Timed) {
        let faults = self.world.faults().clone();
        if !matches!(t.action, Action::Check(_)) {
            self.faults_since_fix.push(t.label.to_string());
        }
        match t.action {
            // Handed over before the tick they fall in, taken on at their instant.
            Action::Set(h, fault) => {
                self.log_ahead(t.at, "fault_start", format!("{} on {h}", t.label));
                faults.set_at(t.at, &h, fault);
            }
            Action::Clear(h, kind) => {
                self.log_ahead(t.at, "fault_end", format!("{} on {h}", t.label));
                faults.clear_at(t.at, &h, kind);
            }
            // Handed over before the tick it falls in, like a switch: the token
            // server revokes at the instant (in the world's time, past every sleep).
            Action::RevokeAccess(name) => {
                let at = self.world_time(t.at);
                if let Some(server) = self.oauth.get(&name) {
                    for client in self.clients_of(&name) {
                        server.revoke_access_tokens(&client, at);
                    }
                }
                self.log_ahead(
                    t.at,
                    "fault_start",
                    format!("access tokens of {name} revoked"),
                );
            }
            Action::RevokeRefresh(name) => {
                if let Some(server) = self.oauth.get(&name) {
                    for client in self.clients_of(&name) {
                        server.revoke_access_tokens(&client, now);
                        server.revoke_refresh_tokens(&client);
                    }
                }
                self.revoked.push(name.clone());
                self.log(
                    now,
                    "fault_start",
                    format!("refresh tokens of {name} revoked"),
                );
            }
            Action::Leak(bytes) => {
                faults.set_memory(MemoryModel {
                    base_bytes: self.scenario.world.memory_base_bytes,
                    leak_bytes_per_hour: bytes,
                    leak_since: now,
                });
                self.log(
                    now,
                    "memory",
                    format!("leak {} MiB/h", bytes / (1024 * 1024)),
                );
            }
            Action::DiskFull(full) => {
                self.world.fs().set_full(full);
                self.world.db().set_full(full);
                self.log(
                    now,
                    if full { "fault_start" } else { "fault_end" },
                    "disk full".into(),
                );
            }
            Action::Clock(fault) => {
                fault.apply(&self.world, self.world_time(now));
                self.log(now, "fault_start", fault.describe());
            }
            Action::Crash { restart_after } => {
                if sim.is_host_running(RUNNER_HOST) {
                    self.world.crash(sim, RUNNER_HOST);
                }
                self.was_running = false;
                match restart_after {
                    Some(d) => {
                        self.world.host_away().down(self.world_time(now));
                        self.restart_at = Some(after(now, d));
                        self.log(now, "crash", format!("restart in {}s", d.as_secs()));
                    }
                    None => {
                        self.silent_deaths.push(now);
                        self.restart_at = None;
                        self.log(
                            now,
                            "silent_death",
                            "the runner process died without a word".into(),
                        );
                        self.on_dead(now);
                    }
                }
            }
            Action::KillAt { at, restart_after } => {
                if sim.is_host_running(RUNNER_HOST) && !self.world.runner_dead() {
                    self.world.schedule_kill(at);
                    self.pending_crash = Some(restart_after);
                } else {
                    // Already down: the crash only pushes the restart back, as on a
                    // tick boundary.
                    self.world.host_away().down(self.world_time(at));
                    self.was_running = false;
                    self.restart_at = Some(after(at, restart_after));
                    self.log(
                        at,
                        "crash",
                        format!("restart in {}s", restart_after.as_secs()),
                    );
                }
            }
            Action::ArmCrash { at, restart_after } => {
                self.world.fs().crash_points().arm(at);
                self.pending_crash = Some(restart_after);
                let (k, side) = match at {
                    CrashAt::Before(k) => (k, "before"),
                    CrashAt::After(k) => (k, "after"),
                };
                self.log(
                    now,
                    "crash_armed",
                    format!("crash {side} the {k}th durable operation from now"),
                );
            }
            Action::QuotaExhaust {
                api,
                until,
                http_date,
            } => {
                let zone = self.scenario.world.zone;
                let until = until.unwrap_or_else(|| {
                    after(now, crate::services::api::until_local_midnight(now, zone))
                });
                if let Some(service) = self.apis.get(&api) {
                    service.exhaust_quota(until, http_date);
                }
                self.log(
                    now,
                    "fault_start",
                    format!("quota of {api} exhausted until {}", until.to_rfc3339()),
                );
            }
            Action::ApiTokenRevoke(api) => {
                if let Some(service) = self.apis.get(&api) {
                    service.revoke_tokens_before(now);
                }
                self.log(
                    now,
                    "fault_start",
                    format!("{api} revoked every token it saw"),
                );
            }
            Action::Check(time) => {
                if let Some(problem) = self.visible_problem(sim, now) {
                    self.intervene(sim, now, format!("check at {time}: {problem}"));
                }
            }
        }
    }

    /// After a step: a runner that died inside the tick (a kill or a crash point) is
    /// dropped with its disk's undurable data, dated when it died.
    fn reap(&mut self, sim: &mut turmoil::Sim<'_>, now: DateTime<Utc>) {
        let points = self.world.fs().crash_points().clone();
        let Some(hit) = points.hit() else {
            return;
        };
        let seen = self.world.take_death();
        let died = seen.unwrap_or(now);
        // Every crash reaped here was scheduled by the world with its restart. The
        // reaper dates a death in world time.
        let world_died = seen.unwrap_or_else(|| self.world_time(now));
        self.world.host_away().down(world_died);
        if sim.is_host_running(RUNNER_HOST) {
            self.world.crash(sim, RUNNER_HOST);
        } else {
            self.world.fs().crash();
        }
        points.disarm();
        self.was_running = false;
        let restart_after = self.pending_crash.take().unwrap_or_default();
        self.restart_at = Some(after(died, restart_after));
        let place = if hit.label == "crash.instant" {
            "at its instant".to_string()
        } else {
            let side = if hit.after { "after" } else { "before" };
            format!("{side} durable operation {} ({})", hit.op, hit.label)
        };
        self.log(
            died,
            "crash",
            format!("{place}; restart in {}s", restart_after.as_secs()),
        );
    }

    /// A dead runner: a supervisor restarts it; without one it stays dead.
    fn on_dead(&mut self, now: DateTime<Utc>) {
        if self.profile.supervised && self.restart_at.is_none() {
            self.restart_at = Some(after(now, self.scenario.world.supervisor_delay));
            self.supervisor_restarts.push(now);
        }
    }

    /// What a human looking at the system would see is wrong, if anything.
    fn visible_problem(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        if !sim.is_host_running(RUNNER_HOST) && self.restart_at.is_none() {
            return Some("the runner is not running".into());
        }
        self.outputs.update(self.world.trace());
        let stale =
            self.outputs
                .stale_jobs(&self.config_snapshot(), self.scenario.world.start, now);
        if stale.is_empty() {
            None
        } else {
            Some(format!("no output from {}", stale.join(", ")))
        }
    }

    fn config_snapshot(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Token servers whose refresh token the runner reported rejected since `cursor`.
    fn rejected_credentials(&mut self) -> Vec<String> {
        let events = self.world.trace().since(self.trace_cursor);
        self.trace_cursor += events.len();
        let mut names: Vec<String> = events
            .iter()
            .filter(|e| e.event == steadfast_core::event::EventKind::TokenRefreshFailed)
            .filter(|e| {
                e.detail
                    .as_deref()
                    .is_some_and(|d| d.contains("invalid_grant"))
            })
            .filter_map(|e| e.service.clone())
            .filter_map(|cred| {
                let config = self.config.lock().unwrap_or_else(|p| p.into_inner());
                let host = config.credentials.get(&cred)?.token_url.host.clone();
                Some(host.trim_end_matches(".sim").to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// A manual fix: free disk, re-authorise rejected credentials, restart the runner.
    fn intervene(&mut self, sim: &mut turmoil::Sim<'_>, now: DateTime<Utc>, reason: String) {
        self.world.fs().set_full(false);
        self.world.db().set_full(false);
        let mut reauthorise = std::mem::take(&mut self.revoked);
        reauthorise.extend(self.rejected_credentials());
        reauthorise.sort();
        reauthorise.dedup();
        for name in reauthorise {
            let Some(server) = self.oauth.get(&name) else {
                continue;
            };
            let host = host(&name);
            let mut config = self.config.lock().unwrap_or_else(|p| p.into_inner());
            for cred in config.credentials.values_mut() {
                if cred.token_url.host == host {
                    let fresh = server.issue_refresh_token(&cred.client_id);
                    cred.refresh_token = fresh.into();
                }
            }
        }
        if sim.is_host_running(RUNNER_HOST) {
            self.world.crash(sim, RUNNER_HOST);
        }
        sim.bounce(RUNNER_HOST);
        self.world.host_away().up(self.world_time(now));
        self.was_running = true;
        self.restart_at = None;
        self.operator.clear_pending();
        let mut recent = std::mem::take(&mut self.faults_since_fix);
        recent.sort();
        recent.dedup();
        self.log(now, "intervention", reason.clone());
        self.interventions.push(Intervention {
            at: now,
            reason,
            recent_faults: recent,
        });
    }

    /// Before a step: a supervisor's restart that is due, then a human's fix that is due
    /// (a problem that already healed needs no fix: the alert was noise, and is not an
    /// intervention).
    fn restart_and_fix(&mut self, sim: &mut turmoil::Sim<'_>, now: DateTime<Utc>) {
        if let Some(at) = self.restart_at
            && at <= now
        {
            self.restart_at = None;
            if !sim.is_host_running(RUNNER_HOST) {
                sim.bounce(RUNNER_HOST);
                self.world.host_away().up(self.world_time(now));
                self.log(now, "restart", "the runner started again".into());
            }
            self.was_running = true;
        }
        if let Some(reason) = self.operator.due_fix(now) {
            match self.visible_problem(sim, now) {
                Some(problem) => self.intervene(sim, now, format!("{reason}; {problem}")),
                None => self.log(
                    now,
                    "alert_dismissed",
                    format!("{reason}; already recovered"),
                ),
            }
        }
    }

    /// After a step: the kernel's OOM kill past the memory limit, or a process that
    /// ended on its own (a fatal stop, a memory restart request).
    fn notice_death(&mut self, sim: &mut turmoil::Sim<'_>, now: DateTime<Utc>) {
        let running = sim.is_host_running(RUNNER_HOST);
        if running && self.world.faults().memory_at(now) > self.scenario.world.memory_limit_bytes {
            self.world.crash(sim, RUNNER_HOST);
            self.log(
                now,
                "oom_kill",
                "the kernel killed the runner (out of memory)".into(),
            );
            self.was_running = false;
            self.on_dead(now);
        } else if !running && self.was_running {
            self.was_running = false;
            self.log(now, "exit", "the runner process exited".into());
            self.on_dead(now);
        }
    }
}

/// The world's OAuth servers (knowing the refresh tokens `config` starts with) and APIs.
fn add_services(
    world: &World,
    scenario: &Scenario,
    config: &Config,
) -> (BTreeMap<String, OAuthServer>, BTreeMap<String, ApiService>) {
    let mut oauth = BTreeMap::new();
    for (name, o) in &scenario.oauth {
        let server = world.add_oauth(
            &host(name),
            OAuthConfig {
                expires_in: o.expires_in,
                rotate_refresh_tokens: o.rotate,
                reuse_grace: o.reuse_grace,
            },
        );
        for cred in config.credentials.values() {
            if cred.token_url.host == host(name) {
                server.add_refresh_token(&cred.client_id, cred.refresh_token.expose_secret());
            }
        }
        oauth.insert(name.clone(), server);
    }
    let mut apis = BTreeMap::new();
    for (name, a) in &scenario.apis {
        let mut cfg = world.api_config(&host(name));
        cfg.rate_limit_per_minute = a.rate_per_minute;
        cfg.daily_quota = a.daily_quota;
        cfg.latency = a.latency;
        cfg.path_latency = a.path_latency.clone();
        cfg.auth = a.auth.as_ref().and_then(|n| oauth.get(n).cloned());
        apis.insert(name.clone(), world.add_api(cfg));
    }
    (oauth, apis)
}

/// The runner's host: at every boot, the core with the current config, its alerts to
/// the operator, and (for worlds with crashes inside ticks) a reaper beside it.
fn add_runner_host(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    shared_config: &Arc<Mutex<Config>>,
    operator: &OperatorSink,
    reaper: bool,
) {
    let world = world.clone();
    let config = shared_config.clone();
    let sink = operator.clone();
    sim.host(RUNNER_HOST, move || {
        let world = world.clone();
        let config = config.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sink = sink.clone();
        async move {
            if reaper {
                tokio::spawn(world.clone().reaper());
            }
            let env = world.env();
            match Runner::new(env, config, sink).await {
                Ok(runner) => {
                    let (_keep, rx) = tokio::sync::watch::channel(false);
                    let _exit = runner.run(rx).await;
                }
                Err(e) => {
                    // A config the runner refuses is the scenario's problem; the
                    // process ends as the daemon would (exit 2).
                    tracing::error!("runner failed to start: {e}");
                }
            }
            Ok(())
        }
    });
}

/// Runs `scenario` with `seed` and `profile`. `progress` is called with the share done.
pub fn simulate(
    scenario: &Scenario,
    seed: u64,
    profile: Profile,
    progress: &mut dyn FnMut(f64),
) -> Result<SimRun, SimError> {
    let config = scenario.runner_config(&profile);
    simulate_with_config(scenario, seed, profile, config, progress)
}

/// Runs `scenario` with the runner given `config` instead of the one the scenario and
/// `profile` make (a deliberately broken runner: the judge still measures against the
/// scenario's intended configuration).
pub fn simulate_with_config(
    scenario: &Scenario,
    seed: u64,
    profile: Profile,
    config: Config,
    progress: &mut dyn FnMut(f64),
) -> Result<SimRun, SimError> {
    let spec = &scenario.world;
    let world = World::new(seed, spec.start).with_zone(spec.zone);
    let (oauth, apis) = add_services(&world, scenario, &config);
    world.faults().set_memory(MemoryModel {
        base_bytes: spec.memory_base_bytes,
        leak_bytes_per_hour: 0,
        leak_since: spec.start,
    });
    let operator = OperatorSink::new(profile.alerts_delivered(), scenario.operator.alert_response);
    let shared_config = Arc::new(Mutex::new(config.clone()));
    // A day of slack so turmoil's own duration limit never cuts the world short.
    let mut sim = world
        .turmoil_builder(spec.tick, spec.duration + Duration::from_secs(86_400))
        .build();
    // Only worlds with crashes inside ticks run a reaper beside the runner, so every
    // other world's tasks (and traces) stay exactly as they were.
    let reaper = timeline(scenario)
        .iter()
        .any(|t| matches!(t.action, Action::KillAt { .. } | Action::ArmCrash { .. }));
    add_runner_host(&mut sim, &world, &shared_config, &operator, reaper);
    let mut driver = Driver {
        scenario,
        profile,
        world: world.clone(),
        oauth: oauth.clone(),
        apis: apis.clone(),
        config: shared_config,
        operator: operator.clone(),
        interventions: Vec::new(),
        timeline: Vec::new(),
        silent_deaths: Vec::new(),
        supervisor_restarts: Vec::new(),
        restart_at: None,
        was_running: true,
        revoked: Vec::new(),
        trace_cursor: 0,
        outputs: OutputTimes::default(),
        faults_since_fix: Vec::new(),
        pending_crash: None,
    };
    // Fault switches and access-token revocations are handed over a tick ahead (they
    // take effect at their own instant); every other action waits for the tick
    // boundary at or after its instant.
    let (switches, actions): (Vec<Timed>, Vec<Timed>) =
        timeline(scenario).into_iter().partition(|t| {
            matches!(
                t.action,
                Action::Set(..) | Action::Clear(..) | Action::RevokeAccess(..)
            )
        });
    let tick = chrono::Duration::from_std(spec.tick).unwrap_or(chrono::Duration::MAX);
    let mut next_switch = 0usize;
    let mut next = 0usize;
    let end = after(spec.start, spec.duration);
    let total = spec.duration.as_secs_f64().max(1.0);
    let mut last_report = 0.0;
    loop {
        let now = after(spec.start, sim.elapsed());
        if now >= end {
            break;
        }
        world.faults().settle(now);
        let tick_end = now
            .checked_add_signed(tick)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        while next_switch < switches.len() && switches[next_switch].at < tick_end {
            let t = switches[next_switch].clone();
            next_switch += 1;
            driver.apply(&mut sim, now, t);
        }
        while next < actions.len() && actions[next].at <= now {
            let t = actions[next].clone();
            next += 1;
            driver.apply(&mut sim, now, t);
        }
        driver.restart_and_fix(&mut sim, now);
        sim.step().map_err(|e| SimError::Turmoil(e.to_string()))?;
        let now = after(spec.start, sim.elapsed());
        driver.reap(&mut sim, now);
        driver.notice_death(&mut sim, now);
        let done = (now - spec.start).num_seconds() as f64 / total;
        if done - last_report >= 0.01 {
            last_report = done;
            progress(done.min(1.0));
        }
    }
    progress(1.0);
    // In world time: a sleep moved the world's clock on without the turmoil steps.
    let world_end = end + world.time().jumped();
    Ok(SimRun {
        seed,
        profile,
        config,
        world,
        apis,
        oauth,
        operator,
        interventions: driver.interventions,
        timeline: driver.timeline,
        silent_deaths: driver.silent_deaths,
        supervisor_restarts: driver.supervisor_restarts,
        start: spec.start,
        end: world_end,
        simulated_seconds: spec.duration.as_secs_f64(),
    })
}
