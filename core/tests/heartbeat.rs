//! Heartbeat store and monitor tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::Full;
use hyper::service::service_fn;
use proptest::prelude::*;

use steadfast_core::alert::{Alert, AlertKind, CollectAlerts};
use steadfast_core::config::Url;
use steadfast_core::env::{Env, FileSystem};
use steadfast_core::event::EventKind;
use steadfast_core::heartbeat::{Finding, HealthProbe, HeartbeatState, Heartbeats, Monitor};
use steadfast_core::store::StoreError;
use steadfast_testkit::{TestEnv, serve};

const STATE_DIR: &str = "/state";
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 25, 16, 0, 0)
        .single()
        .unwrap()
}

fn state_file() -> PathBuf {
    PathBuf::from("/state/heartbeat-state.json")
}

/// The field report's jobs: each threshold is 2x the job's interval.
fn thresholds() -> Vec<(String, Duration)> {
    vec![
        ("youtube-engine".to_string(), 2 * 30 * MINUTE),
        ("blog-publisher".to_string(), 24 * HOUR),
        ("email-monitor".to_string(), 2 * 15 * MINUTE),
    ]
}

async fn open(env: &TestEnv) -> (Heartbeats<TestEnv>, Option<StoreError>) {
    Heartbeats::open(env.clone(), Path::new(STATE_DIR), &thresholds()).await
}

fn alerts(sink: &CollectAlerts) -> Vec<Alert> {
    sink.0.lock().unwrap().clone()
}

fn overdue_jobs(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter_map(|f| match f {
            Finding::Overdue { job, .. } => Some(job.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_job_silent_for_twice_its_interval_is_flagged_and_a_healthy_one_is_not() {
    let env = TestEnv::new(start(), 1);
    let (hb, problem) = open(&env).await;
    assert!(problem.is_none());
    let since = env.now();
    for job in ["youtube-engine", "email-monitor"] {
        hb.record_success(job, env.now()).await.unwrap();
    }
    // The youtube engine (every 30 min) dies silently; the email monitor keeps going.
    for _ in 0..8 {
        tokio::time::sleep(15 * MINUTE).await;
        hb.record_success("email-monitor", env.now()).await.unwrap();
        let silent = env.now() - hb.last_success("youtube-engine").unwrap();
        let flagged = overdue_jobs(&hb.overdue(env.now(), since));
        if silent > chrono::Duration::hours(1) {
            assert_eq!(flagged, ["youtube-engine"], "after {silent}");
        } else {
            assert!(flagged.is_empty(), "after {silent}: {flagged:?}");
        }
    }
    let findings = hb.overdue(env.now(), since);
    assert_eq!(
        findings,
        [Finding::Overdue {
            job: "youtube-engine".to_string(),
            last_success: Some(start()),
            threshold: HOUR,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_never_seen_is_measured_from_the_runner_start() {
    let env = TestEnv::new(start(), 1);
    let (hb, _) = open(&env).await;
    let since = env.now();
    tokio::time::sleep(30 * MINUTE).await;
    assert!(hb.overdue(env.now(), since).is_empty());
    tokio::time::sleep(MINUTE).await;
    // Only the 30-minute email monitor is overdue; none has ever succeeded.
    assert_eq!(
        hb.overdue(env.now(), since),
        [Finding::Overdue {
            job: "email-monitor".to_string(),
            last_success: None,
            threshold: 30 * MINUTE,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn the_state_file_has_the_field_reports_shape_and_round_trips() {
    let env = TestEnv::new(start(), 1);
    let (hb, _) = open(&env).await;
    hb.record_success("youtube-engine", start()).await.unwrap();
    let raw = env.parts().fs.contents(&state_file()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let expected = serde_json::json!({
        "lastChecks": { "youtube-engine": 1_711_382_400 },
        "thresholds": {
            "blog-publisher": 86_400,
            "email-monitor": 1800,
            "youtube-engine": 3600,
        },
    });
    assert_eq!(value, expected);

    // The field report's own file loads as is.
    let report = r#"{
        "lastChecks": {"youtube-engine": 1711382400, "blog-publisher": 1711380600, "email-monitor": 1711382100},
        "thresholds": {"youtube-engine": 3600, "blog-publisher": 86400, "email-monitor": 1800}
    }"#;
    env.fs()
        .write(&state_file(), report.as_bytes())
        .await
        .unwrap();
    let (reopened, problem) = open(&env).await;
    assert!(problem.is_none());
    let state = reopened.state();
    assert_eq!(state.last_checks["blog-publisher"], 1_711_380_600);
    assert_eq!(
        reopened.last_success("email-monitor"),
        DateTime::from_timestamp(1_711_382_100, 0)
    );
    assert_eq!(
        serde_json::to_value(&state).unwrap()["thresholds"],
        expected["thresholds"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_recorded_success_survives_a_crash() {
    let env = TestEnv::new(start(), 1);
    let (hb, _) = open(&env).await;
    tokio::time::sleep(MINUTE).await;
    let at = env.now();
    hb.record_success("blog-publisher", at).await.unwrap();
    env.parts().fs.crash();
    let (reopened, problem) = open(&env).await;
    assert!(problem.is_none());
    assert_eq!(reopened.last_success("blog-publisher"), Some(at));
    assert_eq!(reopened.state(), hb.state());
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_file_is_reported_and_the_state_starts_fresh() {
    let env = TestEnv::new(start(), 1);
    env.fs().create_dir_all(Path::new("/state")).await.unwrap();
    env.fs()
        .write(&state_file(), b"{\"lastChecks\": {\"youtube-en")
        .await
        .unwrap();
    let (hb, problem) = open(&env).await;
    assert!(
        matches!(problem, Some(StoreError::Corrupt { .. })),
        "{problem:?}"
    );
    assert!(hb.state().last_checks.is_empty());
    assert_eq!(hb.state().thresholds.len(), 3);
    // Still usable: the next success writes a good file.
    hb.record_success("email-monitor", start()).await.unwrap();
    let (again, problem) = open(&env).await;
    assert!(problem.is_none());
    assert_eq!(again.last_success("email-monitor"), Some(start()));
}

#[tokio::test(start_paused = true)]
async fn a_full_disk_fails_the_write_but_the_success_still_counts_in_memory() {
    let env = TestEnv::new(start(), 1);
    let (hb, _) = open(&env).await;
    hb.record_success("email-monitor", start()).await.unwrap();
    env.parts().fs.set_full(true);
    tokio::time::sleep(MINUTE).await;
    let err = hb
        .record_success("email-monitor", env.now())
        .await
        .unwrap_err();
    assert_eq!(
        err.io_error()
            .map(steadfast_core::taxonomy::FailureKind::from),
        Some(steadfast_core::taxonomy::FailureKind::DiskFull)
    );
    assert_eq!(hb.last_success("email-monitor"), Some(env.now()));
    let on_disk: HeartbeatState =
        serde_json::from_slice(&env.parts().fs.contents(&state_file()).unwrap()).unwrap();
    assert_eq!(on_disk.last_checks["email-monitor"], start().timestamp());
}

proptest! {
    /// Overdue exactly when the silence is longer than the threshold.
    #[test]
    fn overdue_iff_silence_exceeds_threshold(
        threshold_secs in 1u64..100_000,
        last_offset in 0i64..200_000,
        now_offset in 0i64..400_000,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let env = TestEnv::new(start(), 1);
            let job = vec![("j".to_string(), Duration::from_secs(threshold_secs))];
            let (hb, _) = Heartbeats::open(env.clone(), Path::new(STATE_DIR), &job).await;
            let last = start() + chrono::Duration::seconds(last_offset);
            hb.record_success("j", last).await.unwrap();
            let now = start() + chrono::Duration::seconds(now_offset);
            let flagged = !hb.overdue(now, start()).is_empty();
            prop_assert_eq!(flagged, now_offset - last_offset > threshold_secs as i64);
            Ok(())
        })?;
    }
}

/// A health endpoint answering whatever status the test sets.
fn health_server(env: &TestEnv, host: &str) -> Arc<AtomicU16> {
    let status = Arc::new(AtomicU16::new(200));
    let shared = status.clone();
    env.parts().net.route(
        host,
        Arc::new(move |stream| {
            let status = shared.clone();
            serve(
                stream,
                service_fn(move |_req| {
                    let code = status.load(Ordering::SeqCst);
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                }),
            );
        }),
    );
    status
}

fn probe(service: &str, url: &str) -> HealthProbe {
    HealthProbe {
        service: service.to_string(),
        url: Url::parse(url).unwrap(),
        timeout: Duration::from_secs(5),
    }
}

async fn monitor(
    env: &TestEnv,
    probes: Vec<HealthProbe>,
) -> (
    Arc<Heartbeats<TestEnv>>,
    Arc<CollectAlerts>,
    Monitor<TestEnv, Arc<CollectAlerts>>,
) {
    let (hb, _) = open(env).await;
    let hb = Arc::new(hb);
    let sink = Arc::new(CollectAlerts::default());
    let mon = Monitor::new(
        env.clone(),
        hb.clone(),
        probes,
        1 << 30,
        sink.clone(),
        env.now(),
    );
    (hb, sink, mon)
}

#[tokio::test(start_paused = true)]
async fn alerts_are_raised_once_per_episode_and_again_after_recovery() {
    let env = TestEnv::new(start(), 1);
    let (hb, sink, mon) = monitor(&env, Vec::new()).await;
    for job in ["youtube-engine", "blog-publisher", "email-monitor"] {
        hb.record_success(job, env.now()).await.unwrap();
    }
    // The email monitor dies; the others keep succeeding.
    let mut checks_flagging = 0;
    for _ in 0..6 {
        tokio::time::sleep(15 * MINUTE).await;
        for job in ["youtube-engine", "blog-publisher"] {
            hb.record_success(job, env.now()).await.unwrap();
        }
        if !mon.check_once().await.is_empty() {
            checks_flagging += 1;
        }
    }
    assert_eq!(checks_flagging, 4, "flagged at 45, 60, 75 and 90 min");
    let raised = alerts(&sink);
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].kind, AlertKind::Overdue);
    assert_eq!(raised[0].job.as_deref(), Some("email-monitor"));
    let findings = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::HeartbeatFinding)
        .count();
    assert_eq!(
        findings, 1,
        "one finding event per episode: a dead job must not write a line per look"
    );

    // It recovers: the episode closes, no alert.
    hb.record_success("email-monitor", env.now()).await.unwrap();
    assert!(mon.check_once().await.is_empty());
    assert_eq!(alerts(&sink).len(), 1);
    // It dies again: a new episode, a new alert.
    tokio::time::sleep(31 * MINUTE).await;
    for job in ["youtube-engine", "blog-publisher"] {
        hb.record_success(job, env.now()).await.unwrap();
    }
    assert_eq!(overdue_jobs(&mon.check_once().await), ["email-monitor"]);
    mon.check_once().await;
    assert_eq!(alerts(&sink).len(), 2);
    let alert_events = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::Alert)
        .count();
    assert_eq!(alert_events, 2);
}

#[tokio::test(start_paused = true)]
async fn memory_over_the_threshold_is_a_finding() {
    let env = TestEnv::new(start(), 1);
    let (_hb, sink, mon) = monitor(&env, Vec::new()).await;
    env.parts().memory.set(1 << 30);
    assert!(
        mon.check_once().await.is_empty(),
        "at the threshold is fine"
    );
    env.parts().memory.set((1 << 30) + 1);
    assert_eq!(
        mon.check_once().await,
        [Finding::MemoryHigh {
            bytes: (1 << 30) + 1,
            limit: 1 << 30
        }]
    );
    mon.check_once().await;
    let raised = alerts(&sink);
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].kind, AlertKind::Memory);
    env.parts().memory.set(1 << 20);
    assert!(mon.check_once().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_service_answering_503_is_unhealthy_and_a_200_one_is_not() {
    let env = TestEnv::new(start(), 1);
    let youtube = health_server(&env, "youtube.test");
    let _blog = health_server(&env, "blog.test");
    youtube.store(503, Ordering::SeqCst);
    let probes = vec![
        probe("youtube", "http://youtube.test/health"),
        probe("blog", "http://blog.test/health"),
        probe("mail", "http://mail.test/health"),
    ];
    let (_hb, sink, mon) = monitor(&env, probes).await;
    let findings = mon.check_once().await;
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert_eq!(
        findings[0],
        Finding::ServiceUnhealthy {
            service: "youtube".to_string(),
            detail: "health probe answered http 503".to_string(),
        }
    );
    // An unresolvable host is unhealthy too.
    assert!(matches!(&findings[1], Finding::ServiceUnhealthy { service, .. } if service == "mail"));
    // One failed probe is a blip: no alert until it has failed three looks in a row.
    assert!(alerts(&sink).is_empty());
    for _ in 1..steadfast_core::heartbeat::monitor::UNHEALTHY_LOOKS_BEFORE_ALERT {
        assert_eq!(mon.check_once().await.len(), 2);
    }
    let raised = alerts(&sink);
    assert_eq!(raised.len(), 2);
    assert!(raised.iter().all(|a| a.kind == AlertKind::ServiceUnhealthy));
    assert_eq!(raised[0].service.as_deref(), Some("youtube"));
    let event = env
        .events_so_far()
        .into_iter()
        .find(|e| e.event == EventKind::HeartbeatFinding)
        .unwrap();
    assert_eq!(event.service.as_deref(), Some("youtube"));

    // Still down: no second alert for the same episode.
    mon.check_once().await;
    assert_eq!(alerts(&sink).len(), 2);
    let finding_events = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::HeartbeatFinding)
        .count();
    assert_eq!(
        finding_events, 2,
        "one finding event per episode, not per look"
    );

    youtube.store(204, Ordering::SeqCst);
    let findings = mon.check_once().await;
    assert_eq!(findings.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_fails_one_probe_in_a_few_never_alerts() {
    let env = TestEnv::new(start(), 1);
    let flaky = health_server(&env, "flaky.test");
    let (_hb, sink, mon) = monitor(&env, vec![probe("flaky", "http://flaky.test/health")]).await;
    // Fails two looks, recovers, fails two more: never three in a row.
    for status in [503, 503, 200, 503, 503, 200, 503] {
        flaky.store(status, Ordering::SeqCst);
        mon.check_once().await;
    }
    assert!(alerts(&sink).is_empty(), "{:?}", alerts(&sink));
    flaky.store(503, Ordering::SeqCst);
    mon.check_once().await;
    mon.check_once().await;
    assert_eq!(alerts(&sink).len(), 1, "three in a row is an outage");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_health_endpoint_times_out_as_unhealthy() {
    let env = TestEnv::new(start(), 1);
    // Accepts the connection and never answers.
    env.parts().net.route(
        "stuck.test",
        Arc::new(|stream| {
            tokio::spawn(async move {
                let _hold = stream;
                std::future::pending::<()>().await;
            });
        }),
    );
    let (_hb, _sink, mon) = monitor(&env, vec![probe("stuck", "http://stuck.test/")]).await;
    let began = tokio::time::Instant::now();
    let findings = mon.check_once().await;
    assert_eq!(began.elapsed(), Duration::from_secs(5));
    assert!(
        matches!(&findings[..], [Finding::ServiceUnhealthy { detail, .. }] if detail.contains("5s"))
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_monitor_a_silent_death_raises_nothing_with_it_an_alert_within_one_interval() {
    let interval = MINUTE;
    let threshold = HOUR; // youtube-engine: 2x 30 min

    // Naive: successes are recorded, but nobody looks.
    let env = TestEnv::new(start(), 1);
    let (hb, sink, _unused) = monitor(&env, Vec::new()).await;
    hb.record_success("youtube-engine", env.now())
        .await
        .unwrap();
    tokio::time::sleep(3 * threshold).await;
    assert!(alerts(&sink).is_empty(), "the silent death goes unnoticed");

    // With the monitor running every minute.
    let env = TestEnv::new(start(), 1);
    let (hb, sink, mon) = monitor(&env, Vec::new()).await;
    let died_at = env.now();
    hb.record_success("youtube-engine", died_at).await.unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(mon.run(interval, shutdown));
    // The others stay healthy.
    let keep_alive = {
        let hb = hb.clone();
        let env = env.clone();
        tokio::spawn(async move {
            loop {
                for job in ["blog-publisher", "email-monitor"] {
                    hb.record_success(job, env.now()).await.unwrap();
                }
                tokio::time::sleep(10 * MINUTE).await;
            }
        })
    };
    tokio::time::sleep(threshold).await;
    assert!(
        alerts(&sink).is_empty(),
        "not overdue at the threshold itself"
    );
    tokio::time::sleep(interval + Duration::from_secs(1)).await;
    let raised = alerts(&sink);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind, AlertKind::Overdue);
    assert_eq!(raised[0].job.as_deref(), Some("youtube-engine"));
    let late = raised[0].at - (died_at + chrono::Duration::from_std(threshold).unwrap());
    assert!(
        late > chrono::Duration::zero() && late <= chrono::Duration::from_std(interval).unwrap()
    );

    // Still dead an hour later: still one alert.
    tokio::time::sleep(threshold).await;
    assert_eq!(alerts(&sink).len(), 1);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the monitor stops on shutdown")
        .unwrap();
    keep_alive.abort();
}

#[tokio::test(start_paused = true)]
async fn run_stops_when_the_shutdown_sender_is_dropped_even_mid_check() {
    let env = TestEnv::new(start(), 1);
    env.parts().net.route(
        "stuck.test",
        Arc::new(|stream| {
            tokio::spawn(async move {
                let _hold = stream;
                std::future::pending::<()>().await;
            });
        }),
    );
    let mut slow = probe("stuck", "http://stuck.test/");
    slow.timeout = HOUR;
    let (_hb, _sink, mon) = monitor(&env, vec![slow]).await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(mon.run(Duration::ZERO, shutdown));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished());
    drop(stop);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the monitor stops when its shutdown sender is gone")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_breaker_open_past_the_limit_alerts_once_per_episode() {
    let env = TestEnv::new(start(), 1);
    let (_hb, sink, mon) = monitor(&env, Vec::new()).await;
    // What the breakers report: the youtube breaker opened at the start.
    let open: Arc<std::sync::Mutex<BTreeMap<String, DateTime<Utc>>>> = Arc::default();
    open.lock()
        .unwrap()
        .insert("youtube".to_string(), env.now());
    let reader = open.clone();
    let mon = mon.watch_breakers(
        Box::new(move || reader.lock().unwrap().clone()),
        Duration::from_secs(3600),
    );
    let stuck = |findings: &[Finding]| {
        findings
            .iter()
            .filter(|f| matches!(f, Finding::BreakerStuck { service, .. } if service == "youtube"))
            .count()
    };
    let breaker_alerts = |sink: &CollectAlerts| {
        alerts(sink)
            .iter()
            .filter(|a| a.kind == AlertKind::BreakerStuck)
            .count()
    };
    tokio::time::sleep(30 * MINUTE).await;
    assert_eq!(stuck(&mon.check_once().await), 0, "under the limit");
    for _ in 0..4 {
        tokio::time::sleep(30 * MINUTE).await;
        assert_eq!(stuck(&mon.check_once().await), 1);
    }
    assert_eq!(breaker_alerts(&sink), 1, "one alert for one episode");
    let alert = alerts(&sink)
        .into_iter()
        .find(|a| a.kind == AlertKind::BreakerStuck)
        .unwrap();
    assert_eq!(alert.service.as_deref(), Some("youtube"));
    assert!(alert.message.contains("limit 3600s"), "{}", alert.message);
    // It closes; a later episode that lasts is a new alert.
    open.lock().unwrap().clear();
    assert_eq!(stuck(&mon.check_once().await), 0);
    open.lock()
        .unwrap()
        .insert("youtube".to_string(), env.now());
    tokio::time::sleep(2 * HOUR).await;
    assert_eq!(stuck(&mon.check_once().await), 1);
    assert_eq!(breaker_alerts(&sink), 2);
}
