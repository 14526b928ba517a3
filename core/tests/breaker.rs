//! Circuit breaker tests (pattern 7) on the test environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use steadfast_core::breaker::*;
use steadfast_core::config::{BreakerConfig, ServiceConfig};
use steadfast_core::db::{BreakerRow, Db};
use steadfast_core::env::Env;
use steadfast_core::event::{EventKind, StateName};
use steadfast_testkit::TestEnv;

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

/// The store, as a (re)started runner opens it.
async fn store(env: &TestEnv) -> Arc<Db<TestEnv>> {
    Arc::new(Db::open(env.clone(), &dir()).await.unwrap())
}

async fn setup(cfg: BreakerConfig, enabled: bool) -> (TestEnv, Breakers<TestEnv>) {
    let env = TestEnv::new(t0(), 17);
    let db = store(&env).await;
    let breakers = if enabled {
        Breakers::new(env.clone(), db, &services(cfg))
    } else {
        Breakers::none(env.clone(), db)
    };
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
        .filter(|e| {
            e.event == EventKind::BreakerTransition
                && e.to == Some(StateName::Breaker(BreakerState::Open))
        })
        .filter(|e| e.service.as_deref() == Some(service))
        .map(|e| Duration::from_millis(e.delay_ms.unwrap()))
        .collect()
}

fn transitions(env: &TestEnv) -> Vec<(&'static str, &'static str)> {
    env.events_so_far()
        .into_iter()
        .filter(|e| e.event == EventKind::BreakerTransition)
        .map(|e| (e.from.unwrap().as_str(), e.to.unwrap().as_str()))
        .collect()
}

fn state(b: &Breakers<TestEnv>, service: &str) -> BreakerState {
    b.states()[service]
}

#[tokio::test(start_paused = true)]
async fn opens_after_three_consecutive_failures() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
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
    // Equal jitter: half the 5-minute cooldown plus a random share of the other half.
    assert!((5 * MIN / 2..=5 * MIN).contains(&period), "{period:?}");
    assert_eq!(open_periods(&env, "youtube"), vec![period]);
    assert_eq!(transitions(&env), vec![("closed", "open")]);
    assert!(b.try_acquire("blog").is_ok());
}

#[tokio::test(start_paused = true)]
async fn open_since_spans_failed_probes_and_ends_when_a_probe_succeeds() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
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
        store(&env).await,
        &services(BreakerConfig::default()),
    );
    restored.restore().unwrap();
    assert_eq!(restored.open_since()["youtube"], opened);
    tokio::time::advance(Duration::from_secs(7200)).await;
    assert!(call(&b, "youtube", true).await.unwrap(), "the probe");
    assert!(b.open_since().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let (_env, b) = setup(BreakerConfig::default(), true).await;
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
    let (_env, b) = setup(cfg, true).await;
    for i in 0..50 {
        call(&b, "youtube", i % 5 >= 2).await.unwrap();
    }
    assert_eq!(state(&b, "youtube"), BreakerState::Closed);
    // Alternating: the 10th call fills the window at 5 of 10.
    let (env, b) = setup(cfg, true).await;
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
    let (env, b) = setup(BreakerConfig::default(), true).await;
    fail_probes(&env, &b, 6).await;
    let periods = open_periods(&env, "youtube");
    let expected = [5, 10, 20, 40, 60, 60, 60].map(|m| m * MIN);
    assert_eq!(periods.len(), expected.len());
    for (got, want) in periods.iter().zip(expected) {
        assert!(*got >= want / 2 && *got <= want, "{got:?} vs {want:?}");
    }
    // Jitter: repeated capped periods differ.
    assert_ne!(periods[4], periods[5]);
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_closes_and_resets_the_cooldown() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
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
    let (env, b) = setup(BreakerConfig::default(), true).await;
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
    let (env, b) = setup(BreakerConfig::default(), true).await;
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
    let (env, b) = setup(BreakerConfig::default(), true).await;
    let mut in_flight: Vec<Permit> = (0..7).map(|_| b.try_acquire("youtube").unwrap()).collect();
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
    let (env, b) = setup(BreakerConfig::default(), true).await;
    fail_probes(&env, &b, 1).await;
    let until = b.try_acquire("youtube").unwrap_err().until;
    drop(b);
    env.parts().fs.crash();

    let restarted = Breakers::new(
        env.clone(),
        store(&env).await,
        &services(BreakerConfig::default()),
    );
    assert_eq!(state(&restarted, "youtube"), BreakerState::Closed);
    restarted.restore().unwrap();
    assert_eq!(state(&restarted, "youtube"), BreakerState::Open);
    assert_eq!(state(&restarted, "blog"), BreakerState::Closed);
    assert_eq!(restarted.try_acquire("youtube").unwrap_err().until, until);
    // The trip count survived too: the next failed probe opens for the third period.
    tokio::time::advance((until - env.now()).to_std().unwrap()).await;
    assert!(call(&restarted, "youtube", false).await.unwrap());
    let last = *open_periods(&env, "youtube").last().unwrap();
    assert!(last >= 10 * MIN && last <= 20 * MIN, "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_restarts_open_and_probes_again() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
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
        store(&env).await,
        &services(BreakerConfig::default()),
    );
    restarted.restore().unwrap();
    assert_eq!(state(&restarted, "youtube"), BreakerState::Open);
    assert!(restarted.try_acquire("youtube").unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn a_far_future_until_is_pulled_back_on_restore() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
    // The row as an earlier process (or a hand edit) left it: "open until" a year away.
    let saved = BreakerRow {
        service: "youtube".to_string(),
        state: BreakerState::Open,
        until: t0() + chrono::Duration::days(365),
        trips: 3,
        opened_at: None,
    };
    store(&env).await.save_breakers(vec![saved]).await.unwrap();
    b.restore().unwrap();
    let until = b.try_acquire("youtube").unwrap_err().until;
    assert!(
        until <= env.now() + chrono::Duration::minutes(66),
        "{until}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_row_is_an_error_and_the_breakers_start_closed() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
    fail_probes(&env, &b, 0).await;
    assert_eq!(state(&b, "youtube"), BreakerState::Open);
    store(&env)
        .await
        .write("damage a row", |c| {
            c.execute(
                "UPDATE breakers SET state = 'ajar' WHERE service = 'youtube'",
                [],
            )
            .map(|_| ())
        })
        .await
        .unwrap();
    let err = b.restore().unwrap_err();
    assert!(err.to_string().contains("ajar"), "{err}");
    assert_eq!(state(&b, "youtube"), BreakerState::Closed);
    assert!(b.try_acquire("youtube").is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_empty_store_is_a_first_start() {
    let (_env, b) = setup(BreakerConfig::default(), true).await;
    b.restore().unwrap();
    assert!(b.states().values().all(|s| *s == BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn without_breakers_everything_is_allowed_and_nothing_recorded() {
    let (env, b) = setup(BreakerConfig::default(), false).await;
    for _ in 0..20 {
        assert!(!call(&b, "youtube", false).await.unwrap());
    }
    assert!(b.states().is_empty(), "no breaker guards anything");
    assert!(env.events_so_far().is_empty());
    assert!(env.parts().fs.paths().is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_services_are_unmanaged() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
    for _ in 0..20 {
        call(&b, "not-configured", false).await.unwrap();
    }
    assert!(!b.states().contains_key("not-configured"));
    assert!(env.events_so_far().is_empty());
}

#[tokio::test(start_paused = true)]
async fn permits_do_not_leak_secrets_or_internals_in_debug() {
    let (_env, b) = setup(BreakerConfig::default(), true).await;
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
    let (_env, b) = setup(BreakerConfig::default(), enabled).await;
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

/// Issue 13: the wall clock steps back three days while a breaker is open (NTP fixing
/// a bad RTC after a sleep). Its open period is also kept on the monotonic clock, so
/// the service gets its probe when the cooldown is over, not three days later.
#[tokio::test(start_paused = true)]
async fn a_backward_clock_step_does_not_keep_a_breaker_open_for_days() {
    let (env, b) = setup(BreakerConfig::default(), true).await;
    for _ in 0..3 {
        call(&b, "youtube", false).await.unwrap();
    }
    assert_eq!(state(&b, "youtube"), BreakerState::Open);
    env.parts().clock.step_wall(chrono::Duration::days(-3));
    // The first cooldown of the defaults: 5 minutes plus up to 10 % of jitter.
    tokio::time::advance(6 * MIN).await;
    assert!(
        call(&b, "youtube", true).await.expect("no longer refused"),
        "the first call after the cap is the probe"
    );
    assert_eq!(state(&b, "youtube"), BreakerState::Closed);
}
