//! The world's fault switches: what the network, the services and the machine do wrong.
//!
//! The scenario driver hands each switch over before the simulation step it falls in,
//! with its instant ([`FaultState::set_at`], [`FaultState::clear_at`]); the table takes
//! it on at that instant, read from turmoil's clock on the next connect or request, so a
//! fault starts and ends at any simulated instant, not only on tick boundaries. The
//! connector (through [`ConnectRule`]), the service wrapper and the memory probe read
//! the switches on every connect, request and probe. The disk-full switch is the testkit disk's own.
//! The state lives outside the turmoil host (behind an `Arc`), so a crash of the runner
//! does not heal the world. Every probabilistic verdict comes from the world's own
//! seeded generator, never from `thread_rng`, so a seed reproduces the same faults.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use steadfast_core::env::{NetErrorKind, Rng, SeededRng, Target};
use steadfast_testkit::{ConnectRule, ConnectVerdict};

/// One fault switch for one host. Setting a fault replaces the previous one of its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The name does not resolve: connects fail with `NetErrorKind::Dns`.
    DnsFailure,
    /// The host is down: connects are refused at once.
    Down,
    /// The host is unreachable: connects hang (see [`PARTITION_CONNECT_TIMEOUT`]).
    Partition,
    /// With this probability the server drops the connection right after reading the
    /// request, before handling it (no side effect; the client sees a reset).
    Reset {
        /// 0.0 to 1.0; 1.0 resets every request.
        probability: f64,
    },
    /// With this probability the server handles the request, then sends nothing for
    /// `duration` before answering: the side effect happened, the answer is late.
    Stall {
        /// How long the answer is held back.
        duration: Duration,
        /// 0.0 to 1.0.
        probability: f64,
    },
    /// Every answer takes this much longer (on top of the service's base latency).
    Latency(Duration),
    /// With this probability a request is answered with `status` without being handled.
    ServerError {
        /// The 5xx status to answer with.
        status: u16,
        /// 0.0 to 1.0.
        probability: f64,
    },
    /// Every request is answered 429 with this `Retry-After`, without being handled.
    RateLimitStorm {
        /// The advertised wait.
        retry_after: Duration,
        /// Advertise it as an HTTP date (`Retry-After: Tue, 03 Mar 2026 07:00:00 GMT`,
        /// rounded up to the second) instead of delta-seconds.
        http_date: bool,
    },
    /// With this probability a request is handled (its side effect happens) and then
    /// answered 200 with a spoiled body, optionally after a stall.
    BadAnswer {
        /// What is wrong with the body.
        shape: BadShape,
        /// 0.0 to 1.0.
        probability: f64,
        /// Held back this long first (zero: at once).
        stall: Duration,
    },
}

/// What is wrong with a [`Fault::BadAnswer`] body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadShape {
    /// No body at all.
    Empty,
    /// The first half of the body (a connection cut by a proxy that still said 200).
    Truncated,
    /// An HTML page (a captive portal or a proxy's error page with status 200).
    NotJson,
    /// Valid JSON of another shape: the real answer moved under `"data"`, so every
    /// field a later step extracts is missing at the top.
    WrongShape,
}

impl BadShape {
    /// Every shape by its scenario name.
    pub const ALL: [(&'static str, Self); 4] = [
        ("empty", Self::Empty),
        ("truncated", Self::Truncated),
        ("not_json", Self::NotJson),
        ("wrong_shape", Self::WrongShape),
    ];

    /// The scenario name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("empty", |(n, _)| *n)
    }
}

/// The kind of a [`Fault`], used to clear one switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// [`Fault::DnsFailure`].
    DnsFailure,
    /// [`Fault::Down`].
    Down,
    /// [`Fault::Partition`].
    Partition,
    /// [`Fault::Reset`].
    Reset,
    /// [`Fault::Stall`].
    Stall,
    /// [`Fault::Latency`].
    Latency,
    /// [`Fault::ServerError`].
    ServerError,
    /// [`Fault::RateLimitStorm`].
    RateLimitStorm,
    /// [`Fault::BadAnswer`].
    BadAnswer,
}

impl Fault {
    /// Which switch this fault sets.
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::DnsFailure => FaultKind::DnsFailure,
            Self::Down => FaultKind::Down,
            Self::Partition => FaultKind::Partition,
            Self::Reset { .. } => FaultKind::Reset,
            Self::Stall { .. } => FaultKind::Stall,
            Self::Latency(_) => FaultKind::Latency,
            Self::ServerError { .. } => FaultKind::ServerError,
            Self::RateLimitStorm { .. } => FaultKind::RateLimitStorm,
            Self::BadAnswer { .. } => FaultKind::BadAnswer,
        }
    }
}

/// How long a connect to a partitioned host hangs before it fails with `TimedOut`.
///
/// Linux gives up on an unanswered SYN after about 127 s (6 retries). The caller's own
/// call deadline is normally far shorter and fires first, which is the behaviour under
/// test; the bound only keeps a caller without a deadline from hanging forever.
pub const PARTITION_CONNECT_TIMEOUT: Duration = Duration::from_secs(127);

/// What the service wrapper does with one request that reached the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestVerdict {
    /// Drop the connection after reading the request.
    pub reset: bool,
    /// Answer with this status instead of handling the request (a 5xx or a storm 429).
    pub injected_status: Option<u16>,
    /// `Retry-After` for an injected 429.
    pub retry_after: Option<Duration>,
    /// Extra delay before the answer (fault latency plus any stall).
    pub delay: Duration,
    /// The delay includes a stall.
    pub stalled: bool,
    /// Give `Retry-After` of an injected 429 as an HTTP date.
    pub retry_after_date: bool,
    /// Spoil the body of a 2xx answer this way.
    pub bad_answer: Option<BadShape>,
}

/// Memory the runner process appears to use: a base plus a steady leak since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryModel {
    /// Resident bytes right after a start.
    pub base_bytes: u64,
    /// Bytes leaked per hour of uptime.
    pub leak_bytes_per_hour: u64,
    /// When the leak started counting (the last process start, or when it was set).
    pub leak_since: DateTime<Utc>,
}

impl MemoryModel {
    /// Resident bytes at `now` (computed from the clock, so exact at any tick size).
    pub fn resident_at(&self, now: DateTime<Utc>) -> u64 {
        let secs = u64::try_from((now - self.leak_since).num_seconds()).unwrap_or(0);
        let leaked = u128::from(self.leak_bytes_per_hour) * u128::from(secs) / 3600;
        self.base_bytes
            .saturating_add(u64::try_from(leaked).unwrap_or(u64::MAX))
    }
}

/// A switch handed over ahead of its instant.
#[derive(Debug, Clone)]
enum Switch {
    Set(String, Fault),
    Clear(String, FaultKind),
}

/// At most this many switches wait for their instant. The driver hands over only the
/// switches of the coming step, so a handful at a time; past the bound the earliest is
/// taken on at once rather than growing the queue.
pub const MAX_PENDING_SWITCHES: usize = 4_096;

#[derive(Debug, Default)]
struct Table {
    /// Host name -> active faults, one per kind.
    hosts: BTreeMap<String, BTreeMap<FaultKind, Fault>>,
    memory: Option<MemoryModel>,
    /// Switches waiting for their instant (turmoil time), in instant order, ties in the
    /// order they were handed over.
    pending: VecDeque<(DateTime<Utc>, Switch)>,
}

impl Table {
    fn apply(&mut self, switch: Switch) {
        match switch {
            Switch::Set(host, fault) => {
                self.hosts
                    .entry(host)
                    .or_default()
                    .insert(fault.kind(), fault);
            }
            Switch::Clear(host, kind) => {
                if let Some(faults) = self.hosts.get_mut(&host) {
                    faults.remove(&kind);
                    if faults.is_empty() {
                        self.hosts.remove(&host);
                    }
                }
            }
        }
    }

    /// Takes on every waiting switch whose instant is at or before `now`.
    fn settle(&mut self, now: Option<DateTime<Utc>>) {
        let Some(now) = now else { return };
        while self.pending.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, switch)) = self.pending.pop_front() {
                self.apply(switch);
            }
        }
    }

    fn schedule(&mut self, at: DateTime<Utc>, switch: Switch) {
        if self.pending.len() >= MAX_PENDING_SWITCHES
            && let Some((_, first)) = self.pending.pop_front()
        {
            self.apply(first);
        }
        let place = self.pending.partition_point(|(t, _)| *t <= at);
        self.pending.insert(place, (at, switch));
    }
}

/// Turmoil's simulated time (the world's wall clock minus every sleep of the runner
/// host), or `None` outside a simulation step.
fn turmoil_now() -> Option<DateTime<Utc>> {
    let since = turmoil::since_epoch()?;
    let nanos = i64::try_from(since.as_nanos()).unwrap_or(i64::MAX);
    Some(DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::nanoseconds(nanos))
}

/// The world's fault switches. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct FaultState {
    table: Arc<Mutex<Table>>,
    rng: Arc<SeededRng>,
}

impl FaultState {
    /// No faults; probabilistic verdicts drawn from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            table: Arc::default(),
            rng: Arc::new(SeededRng::from_seed(seed)),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table with every switch due by `now` taken on.
    fn settled(&self, now: Option<DateTime<Utc>>) -> MutexGuard<'_, Table> {
        let mut table = self.table();
        table.settle(now);
        table
    }

    /// Turns `fault` on for `host` now (replacing one of the same kind).
    pub fn set(&self, host: &str, fault: Fault) {
        self.table().apply(Switch::Set(host.to_string(), fault));
    }

    /// Turns the fault of `kind` off for `host` now.
    pub fn clear(&self, host: &str, kind: FaultKind) {
        self.table().apply(Switch::Clear(host.to_string(), kind));
    }

    /// Turns `fault` on for `host` at `at` (turmoil time), which may fall inside the
    /// coming simulation step: the first connect or request at or after `at` sees it.
    pub fn set_at(&self, at: DateTime<Utc>, host: &str, fault: Fault) {
        self.table()
            .schedule(at, Switch::Set(host.to_string(), fault));
    }

    /// Turns the fault of `kind` off for `host` at `at` (turmoil time).
    pub fn clear_at(&self, at: DateTime<Utc>, host: &str, kind: FaultKind) {
        self.table()
            .schedule(at, Switch::Clear(host.to_string(), kind));
    }

    /// Takes on every switch due by `now` (turmoil time); the driver calls it on each
    /// tick boundary, connects and requests take them on by themselves.
    pub fn settle(&self, now: DateTime<Utc>) {
        self.table().settle(Some(now));
    }

    /// Heals `host` entirely (switches still waiting for their instant stay).
    pub fn clear_host(&self, host: &str) {
        self.table().hosts.remove(host);
    }

    /// Heals every host (the liveness phase), dropping the switches still waiting.
    /// Disk and memory are left as they are.
    pub fn clear_all_hosts(&self) {
        let mut table = self.table();
        table.hosts.clear();
        table.pending.clear();
    }

    /// The faults active on `host` now (turmoil's clock), in kind order.
    pub fn active(&self, host: &str) -> Vec<Fault> {
        self.active_at(host, turmoil_now())
    }

    /// The faults active on `host` at `now`, in kind order.
    fn active_at(&self, host: &str, now: Option<DateTime<Utc>>) -> Vec<Fault> {
        self.settled(now)
            .hosts
            .get(host)
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Sets the memory model (base plus leak counted from `model.leak_since`).
    pub fn set_memory(&self, model: MemoryModel) {
        self.table().memory = Some(model);
    }

    /// A process restart frees leaked memory: the leak counts again from `at`.
    pub fn restart_memory(&self, at: DateTime<Utc>) {
        if let Some(m) = self.table().memory.as_mut() {
            m.leak_since = at;
        }
    }

    /// The runner's resident bytes at `now` (0 when no model is set).
    pub fn memory_at(&self, now: DateTime<Utc>) -> u64 {
        self.table().memory.map_or(0, |m| m.resident_at(now))
    }

    /// Decides the fate of one connect to `host`: DNS failure wins over down, down
    /// over partition.
    pub fn connect_verdict(&self, host: &str) -> ConnectVerdict {
        self.connect_verdict_at(host, turmoil_now())
    }

    fn connect_verdict_at(&self, host: &str, now: Option<DateTime<Utc>>) -> ConnectVerdict {
        let table = self.settled(now);
        let Some(faults) = table.hosts.get(host) else {
            return ConnectVerdict::Accept;
        };
        if faults.contains_key(&FaultKind::DnsFailure) {
            ConnectVerdict::Fail(NetErrorKind::Dns)
        } else if faults.contains_key(&FaultKind::Down) {
            ConnectVerdict::Fail(NetErrorKind::Refused)
        } else if faults.contains_key(&FaultKind::Partition) {
            ConnectVerdict::Hang(PARTITION_CONNECT_TIMEOUT)
        } else {
            ConnectVerdict::Accept
        }
    }

    /// Decides the fate of one request that reached `host`.
    ///
    /// Draws happen in a fixed order (reset, error, stall) and only for active
    /// probabilistic faults, so a seed replays the same verdicts.
    pub fn on_request(&self, host: &str) -> RequestVerdict {
        self.on_request_at(host, turmoil_now())
    }

    fn on_request_at(&self, host: &str, now: Option<DateTime<Utc>>) -> RequestVerdict {
        let faults: Vec<Fault> = self.active_at(host, now);
        let mut verdict = RequestVerdict {
            reset: false,
            injected_status: None,
            retry_after: None,
            delay: Duration::ZERO,
            stalled: false,
            retry_after_date: false,
            bad_answer: None,
        };
        for fault in &faults {
            match fault {
                Fault::Reset { probability } => verdict.reset |= self.roll(*probability),
                Fault::ServerError {
                    status,
                    probability,
                } => {
                    if verdict.injected_status.is_none() && self.roll(*probability) {
                        verdict.injected_status = Some(*status);
                    }
                }
                Fault::RateLimitStorm {
                    retry_after,
                    http_date,
                } => {
                    verdict.injected_status = Some(429);
                    verdict.retry_after = Some(*retry_after);
                    verdict.retry_after_date = *http_date;
                }
                Fault::BadAnswer {
                    shape,
                    probability,
                    stall,
                } => {
                    if self.roll(*probability) {
                        verdict.bad_answer = Some(*shape);
                        if !stall.is_zero() {
                            verdict.delay += *stall;
                            verdict.stalled = true;
                        }
                    }
                }
                Fault::Stall {
                    duration,
                    probability,
                } => {
                    if self.roll(*probability) {
                        verdict.delay += *duration;
                        verdict.stalled = true;
                    }
                }
                Fault::Latency(extra) => verdict.delay += *extra,
                Fault::DnsFailure | Fault::Down | Fault::Partition => {}
            }
        }
        verdict
    }

    /// True with `probability` (clamped to `[0, 1]`); draws nothing for 0 or 1.
    pub fn roll(&self, probability: f64) -> bool {
        if probability <= 0.0 {
            false
        } else if probability >= 1.0 {
            true
        } else {
            self.rng.unit() < probability
        }
    }
}

/// The world's connect faults, as the testkit's connector asks for them.
impl ConnectRule for FaultState {
    fn on_connect(&self, target: &Target) -> ConnectVerdict {
        self.connect_verdict(&target.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_clear_switches() {
        let f = FaultState::new(1);
        assert_eq!(f.connect_verdict("a"), ConnectVerdict::Accept);
        f.set("a", Fault::Partition);
        assert_eq!(
            f.connect_verdict("a"),
            ConnectVerdict::Hang(PARTITION_CONNECT_TIMEOUT)
        );
        f.set("a", Fault::Down);
        assert_eq!(
            f.connect_verdict("a"),
            ConnectVerdict::Fail(NetErrorKind::Refused)
        );
        f.set("a", Fault::DnsFailure);
        assert_eq!(
            f.connect_verdict("a"),
            ConnectVerdict::Fail(NetErrorKind::Dns),
            "dns wins over down"
        );
        f.clear("a", FaultKind::DnsFailure);
        assert_eq!(
            f.connect_verdict("a"),
            ConnectVerdict::Fail(NetErrorKind::Refused)
        );
        f.clear_host("a");
        assert_eq!(f.connect_verdict("a"), ConnectVerdict::Accept);
        assert!(f.active("a").is_empty());
    }

    #[test]
    fn a_switch_handed_over_ahead_takes_effect_at_its_own_instant() {
        let f = FaultState::new(1);
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let s = |secs| Some(t0 + chrono::Duration::milliseconds(secs));
        // Both inside one 60 s step: on at +10.5 s, off at +50 s.
        f.set_at(
            t0 + chrono::Duration::milliseconds(10_500),
            "a",
            Fault::DnsFailure,
        );
        f.clear_at(
            t0 + chrono::Duration::seconds(50),
            "a",
            FaultKind::DnsFailure,
        );
        assert_eq!(f.connect_verdict_at("a", s(0)), ConnectVerdict::Accept);
        assert_eq!(f.connect_verdict_at("a", s(10_499)), ConnectVerdict::Accept);
        assert_eq!(
            f.connect_verdict_at("a", s(10_500)),
            ConnectVerdict::Fail(NetErrorKind::Dns)
        );
        assert_eq!(
            f.connect_verdict_at("a", s(49_999)),
            ConnectVerdict::Fail(NetErrorKind::Dns)
        );
        assert_eq!(f.connect_verdict_at("a", s(50_000)), ConnectVerdict::Accept);
        // Outside a simulation nothing waiting is taken on.
        f.set_at(t0 + chrono::Duration::seconds(70), "a", Fault::Down);
        assert_eq!(f.connect_verdict_at("a", None), ConnectVerdict::Accept);
        f.settle(t0 + chrono::Duration::seconds(70));
        assert_eq!(
            f.connect_verdict("a"),
            ConnectVerdict::Fail(NetErrorKind::Refused)
        );
    }

    #[test]
    fn switches_of_one_instant_apply_in_the_order_handed_over() {
        let f = FaultState::new(1);
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let at = t0 + chrono::Duration::seconds(5);
        f.set_at(at, "a", Fault::Down);
        f.clear_at(at, "a", FaultKind::Down);
        f.set_at(t0 + chrono::Duration::seconds(9), "a", Fault::Partition);
        f.set_at(at, "a", Fault::DnsFailure);
        assert_eq!(
            f.connect_verdict_at("a", Some(at)),
            ConnectVerdict::Fail(NetErrorKind::Dns),
            "down came and went; dns stays"
        );
        assert_eq!(f.active_at("a", Some(at)), vec![Fault::DnsFailure]);
    }

    #[test]
    fn probabilistic_verdicts_replay_from_the_seed() {
        let draw = |seed| {
            let f = FaultState::new(seed);
            f.set("a", Fault::Reset { probability: 0.5 });
            (0..64).map(|_| f.on_request("a").reset).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let resets = draw(3).iter().filter(|r| **r).count();
        assert!((16..=48).contains(&resets), "about half reset: {resets}");
    }

    #[test]
    fn memory_leaks_per_hour_and_restart_frees_it() {
        let f = FaultState::new(1);
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        f.set_memory(MemoryModel {
            base_bytes: 100,
            leak_bytes_per_hour: 3600,
            leak_since: t0,
        });
        let later = t0 + chrono::Duration::minutes(30);
        assert_eq!(f.memory_at(later), 100 + 1800);
        f.restart_memory(later);
        assert_eq!(f.memory_at(later), 100);
    }

    #[test]
    fn storm_and_latency_stack() {
        let f = FaultState::new(1);
        f.set(
            "a",
            Fault::RateLimitStorm {
                retry_after: Duration::from_secs(60),
                http_date: false,
            },
        );
        f.set("a", Fault::Latency(Duration::from_secs(2)));
        let v = f.on_request("a");
        assert_eq!(v.injected_status, Some(429));
        assert_eq!(v.retry_after, Some(Duration::from_secs(60)));
        assert_eq!(v.delay, Duration::from_secs(2));
        assert!(!v.reset && !v.stalled);
    }

    #[test]
    fn bad_answers_come_with_their_probability_and_stall() {
        let f = FaultState::new(5);
        f.set(
            "a",
            Fault::BadAnswer {
                shape: BadShape::Truncated,
                probability: 0.5,
                stall: Duration::from_secs(20),
            },
        );
        let verdicts: Vec<RequestVerdict> = (0..64).map(|_| f.on_request("a")).collect();
        let bad = verdicts.iter().filter(|v| v.bad_answer.is_some()).count();
        assert!((16..=48).contains(&bad), "about half: {bad}");
        for v in &verdicts {
            assert_eq!(v.bad_answer.is_some(), v.stalled);
            assert_eq!(v.injected_status, None, "a bad answer is still a 200");
            if v.stalled {
                assert_eq!(v.delay, Duration::from_secs(20));
            }
        }
    }
}
