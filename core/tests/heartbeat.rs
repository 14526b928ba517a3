//! Heartbeat store and monitor tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
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
use steadfast_core::db::{Db, MissReason};
use steadfast_core::env::Env;
use steadfast_core::event::{EventKind, Outcome};
use steadfast_core::heartbeat::{Finding, HealthProbe, HeartbeatState, Heartbeats, Monitor};
use steadfast_core::job::RunId;
use steadfast_core::scheduler::StatusBoard;
use steadfast_testkit::{TestEnv, serve};

const STATE_DIR: &str = "/state";
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 25, 16, 0, 0)
        .single()
        .unwrap()
}

/// The field report's jobs: each threshold is 2x the job's interval.
fn thresholds() -> Vec<(String, Duration)> {
    vec![
        ("youtube-engine".to_string(), 2 * 30 * MINUTE),
        ("blog-publisher".to_string(), 24 * HOUR),
        ("email-monitor".to_string(), 2 * 15 * MINUTE),
    ]
}

/// Heartbeats over a journal the test writes runs into, as the scheduler would.
#[derive(Clone)]
struct Hb {
    beats: Arc<Heartbeats<TestEnv>>,
    db: Arc<Db<TestEnv>>,
}

impl std::ops::Deref for Hb {
    type Target = Heartbeats<TestEnv>;
    fn deref(&self) -> &Self::Target {
        &self.beats
    }
}

impl Hb {
    /// A run of `job` due and finished at `at` with `outcome`.
    async fn record(&self, job: &str, at: DateTime<Utc>, outcome: Outcome) {
        self.db.register_job(job, at).await.unwrap();
        let run = RunId::new(job, at);
        self.db.start_run(&run, at).await.unwrap();
        self.db.finish_run(&run, outcome, None, at).await.unwrap();
    }

    async fn record_success(&self, job: &str, at: DateTime<Utc>) {
        self.record(job, at, Outcome::Succeeded).await;
    }
}

/// Heartbeats of [`thresholds`]'s jobs, each registered now.
async fn open(env: &TestEnv) -> Hb {
    open_jobs(env, &thresholds()).await
}

async fn open_jobs(env: &TestEnv, jobs: &[(String, Duration)]) -> Hb {
    let db = Arc::new(Db::open(env.clone(), Path::new(STATE_DIR)).await.unwrap());
    for (job, _) in jobs {
        db.register_job(job, env.now()).await.unwrap();
    }
    let beats = Arc::new(Heartbeats::new(
        db.clone(),
        jobs,
        Arc::new(StatusBoard::default()),
    ));
    Hb { beats, db }
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
    let hb = open(&env).await;
    for job in ["youtube-engine", "email-monitor"] {
        hb.record_success(job, env.now()).await;
    }
    // The youtube engine (every 30 min) dies silently; the email monitor keeps going.
    for _ in 0..8 {
        tokio::time::sleep(15 * MINUTE).await;
        hb.record_success("email-monitor", env.now()).await;
        let silent = env.now() - hb.last_success("youtube-engine").unwrap();
        let flagged = overdue_jobs(&hb.overdue(env.now()));
        if silent > chrono::Duration::hours(1) {
            assert_eq!(flagged, ["youtube-engine"], "after {silent}");
        } else {
            assert!(flagged.is_empty(), "after {silent}: {flagged:?}");
        }
    }
    let findings = hb.overdue(env.now());
    assert_eq!(
        findings,
        [Finding::Overdue {
            job: "youtube-engine".to_string(),
            last_success: Some(start()),
            known_since: start(),
            threshold: HOUR,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_that_never_succeeded_is_measured_from_its_registration_across_restarts() {
    let env = TestEnv::new(start(), 1);
    let hb = open(&env).await;
    tokio::time::sleep(30 * MINUTE).await;
    assert!(hb.overdue(env.now()).is_empty());
    // The runner crashes and restarts: the journal, not the process, remembers when
    // the job was first known (the old heartbeat file counted from each start, so a
    // crash loop never raised the alarm).
    let hb = open(&env).await;
    tokio::time::sleep(MINUTE).await;
    assert_eq!(
        hb.overdue(env.now()),
        [Finding::Overdue {
            job: "email-monitor".to_string(),
            last_success: None,
            known_since: start(),
            threshold: 30 * MINUTE,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn downtime_alone_does_not_page_but_a_failed_run_does() {
    let env = TestEnv::new(start(), 1);
    let jobs = vec![("mail".to_string(), 30 * MINUTE)];
    let hb = open_jobs(&env, &jobs).await;
    hb.record_success("mail", env.now()).await;
    // Down for two hours: the restart records the slots it missed as downtime.
    tokio::time::sleep(2 * HOUR).await;
    let first = start() + chrono::Duration::minutes(15);
    hb.db
        .record_missed("mail", first, env.now(), 8, MissReason::Downtime, env.now())
        .await
        .unwrap();
    assert!(
        hb.overdue(env.now()).is_empty(),
        "the missed-slot policy speaks for downtime, not the heartbeat"
    );
    // The catch-up run fails: now something went wrong while the runner was up.
    let at = env.now() + chrono::Duration::seconds(1);
    hb.record("mail", at, Outcome::Failed).await;
    assert_eq!(overdue_jobs(&hb.overdue(at)), ["mail"]);
}

#[tokio::test(start_paused = true)]
async fn the_state_has_the_field_reports_shape() {
    let env = TestEnv::new(start(), 1);
    let hb = open(&env).await;
    hb.record_success("youtube-engine", start()).await;
    let value = serde_json::to_value(hb.state()).unwrap();
    let expected = serde_json::json!({
        "lastChecks": { "youtube-engine": 1_711_382_400 },
        "thresholds": {
            "blog-publisher": 86_400,
            "email-monitor": 1800,
            "youtube-engine": 3600,
        },
    });
    assert_eq!(value, expected);
    // The field report's own file still parses into the same shape.
    let report = r#"{
        "lastChecks": {"youtube-engine": 1711382400, "blog-publisher": 1711380600, "email-monitor": 1711382100},
        "thresholds": {"youtube-engine": 3600, "blog-publisher": 86400, "email-monitor": 1800}
    }"#;
    let state: HeartbeatState = serde_json::from_str(report).unwrap();
    assert_eq!(state.last_checks["blog-publisher"], 1_711_380_600);
    assert_eq!(
        serde_json::to_value(&state).unwrap()["thresholds"],
        expected["thresholds"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_recorded_success_survives_a_restart() {
    let env = TestEnv::new(start(), 1);
    let hb = open(&env).await;
    tokio::time::sleep(MINUTE).await;
    let at = env.now();
    hb.record_success("blog-publisher", at).await;
    drop(hb);
    let reopened = open(&env).await;
    assert_eq!(reopened.last_success("blog-publisher"), Some(at));
}

proptest! {
    /// Overdue exactly when the silence after the last good run is longer than the
    /// threshold (with no run since, nothing excuses it).
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
            let hb = open_jobs(&env, &job).await;
            let last = start() + chrono::Duration::seconds(last_offset);
            hb.record_success("j", last).await;
            let now = start() + chrono::Duration::seconds(now_offset);
            let flagged = !hb.overdue(now).is_empty();
            let reference = if last_offset >= 0 { last_offset } else { 0 };
            prop_assert_eq!(flagged, now_offset - reference > threshold_secs as i64);
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
) -> (Hb, Arc<CollectAlerts>, Monitor<TestEnv, Arc<CollectAlerts>>) {
    let hb = open(env).await;
    let sink = Arc::new(CollectAlerts::default());
    let mon = Monitor::new(
        env.clone(),
        hb.beats.clone(),
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
        hb.record_success(job, env.now()).await;
    }
    // The email monitor dies; the others keep succeeding.
    let mut checks_flagging = 0;
    for _ in 0..6 {
        tokio::time::sleep(15 * MINUTE).await;
        for job in ["youtube-engine", "blog-publisher"] {
            hb.record_success(job, env.now()).await;
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
    hb.record_success("email-monitor", env.now()).await;
    assert!(mon.check_once().await.is_empty());
    assert_eq!(alerts(&sink).len(), 1);
    // It dies again: a new episode, a new alert.
    tokio::time::sleep(31 * MINUTE).await;
    for job in ["youtube-engine", "blog-publisher"] {
        hb.record_success(job, env.now()).await;
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
    hb.record_success("youtube-engine", env.now()).await;
    tokio::time::sleep(3 * threshold).await;
    assert!(alerts(&sink).is_empty(), "the silent death goes unnoticed");

    // With the monitor running every minute.
    let env = TestEnv::new(start(), 1);
    let (hb, sink, mon) = monitor(&env, Vec::new()).await;
    let died_at = env.now();
    hb.record_success("youtube-engine", died_at).await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(mon.run(interval, shutdown));
    // The others stay healthy.
    let keep_alive = {
        let hb = hb.clone();
        let env = env.clone();
        tokio::spawn(async move {
            loop {
                for job in ["blog-publisher", "email-monitor"] {
                    hb.record_success(job, env.now()).await;
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

/// Issue 10: every restart repeated alerts already sent and forgot episodes building up.
/// The episodes live in the store now.
#[tokio::test(start_paused = true)]
async fn a_restart_neither_repeats_an_alert_nor_forgets_an_open_episode() {
    let env = TestEnv::new(start(), 1);
    let youtube = health_server(&env, "youtube.test");
    let probes = || vec![probe("youtube", "http://youtube.test/health")];
    let (hb, sink, mon) = monitor(&env, probes()).await;
    for job in ["youtube-engine", "blog-publisher", "email-monitor"] {
        hb.record_success(job, env.now()).await;
    }
    // The email monitor dies; an hour later it is overdue and a human hears of it once.
    tokio::time::sleep(45 * MINUTE).await;
    for job in ["youtube-engine", "blog-publisher"] {
        hb.record_success(job, env.now()).await;
    }
    assert_eq!(overdue_jobs(&mon.check_once().await), ["email-monitor"]);
    assert_eq!(alerts(&sink).len(), 1);
    // The health endpoint starts failing: two looks, not yet an alert.
    youtube.store(503, Ordering::SeqCst);
    mon.check_once().await;
    mon.check_once().await;
    assert_eq!(alerts(&sink).len(), 1);
    let findings_before = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::HeartbeatFinding)
        .count();

    // Restart: a new process, a new monitor over the same store.
    drop(mon);
    let (_hb, sink, mon) = monitor(&env, probes()).await;
    let findings = mon.check_once().await;
    assert_eq!(findings.len(), 2, "{findings:?}");
    let raised = alerts(&sink);
    // The overdue job was alerted before the restart: not again. The service's third
    // failed look in a row is its alert, the restart notwithstanding.
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind, AlertKind::ServiceUnhealthy);
    let findings_after = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::HeartbeatFinding)
        .count();
    assert_eq!(findings_after, findings_before, "no finding event repeated");

    // The service recovers, the episode closes, in the store too: a restart and a new
    // outage start a new episode.
    youtube.store(200, Ordering::SeqCst);
    assert_eq!(mon.check_once().await.len(), 1);
    drop(mon);
    youtube.store(503, Ordering::SeqCst);
    let (_hb, sink, mon) = monitor(&env, probes()).await;
    for _ in 0..steadfast_core::heartbeat::monitor::UNHEALTHY_LOOKS_BEFORE_ALERT {
        mon.check_once().await;
    }
    let raised = alerts(&sink);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind, AlertKind::ServiceUnhealthy);
}

/// A job overdue and failing: each of its runs is in progress for a moment, and a look
/// in that moment used to close the episode, so the next look alerted again.
#[tokio::test(start_paused = true)]
async fn a_run_in_progress_does_not_close_an_overdue_episode() {
    use steadfast_core::scheduler::JobStatus;
    use steadfast_core::state_machine::TaskState;
    let env = TestEnv::new(start(), 1);
    let jobs = thresholds();
    let db = Arc::new(Db::open(env.clone(), Path::new(STATE_DIR)).await.unwrap());
    for (job, _) in &jobs {
        db.register_job(job, env.now()).await.unwrap();
    }
    let idle = JobStatus {
        state: TaskState::Idle,
        last_outcome: None,
        last_success: None,
        next_run: None,
        consecutive_failures: 0,
    };
    let board = Arc::new(StatusBoard::new(
        jobs.iter()
            .map(|(j, _)| (j.clone(), idle.clone()))
            .collect(),
    ));
    let beats = Arc::new(Heartbeats::new(db.clone(), &jobs, board.clone()));
    let hb = Hb {
        beats: beats.clone(),
        db,
    };
    let sink = Arc::new(CollectAlerts::default());
    let mon = Monitor::new(
        env.clone(),
        beats,
        Vec::new(),
        1 << 30,
        sink.clone(),
        env.now(),
    );
    for job in ["youtube-engine", "blog-publisher"] {
        hb.record_success(job, env.now()).await;
    }
    tokio::time::sleep(45 * MINUTE).await;
    for job in ["youtube-engine", "blog-publisher"] {
        hb.record_success(job, env.now()).await;
    }
    hb.record("email-monitor", env.now(), Outcome::Failed).await;
    assert_eq!(overdue_jobs(&mon.check_once().await), ["email-monitor"]);
    assert_eq!(alerts(&sink).len(), 1);
    // A run starts (and fails again): a look during it, then one after it. The failed
    // slot still stands during the run (a run in progress excuses a job only when
    // nothing went wrong before it), and the episode goes on without a second alert.
    board.update("email-monitor", |s| s.state = TaskState::Running);
    assert_eq!(overdue_jobs(&mon.check_once().await), ["email-monitor"]);
    assert_eq!(alerts(&sink).len(), 1);
    tokio::time::sleep(MINUTE).await;
    board.update("email-monitor", |s| s.state = TaskState::Idle);
    hb.record("email-monitor", env.now(), Outcome::Failed).await;
    assert_eq!(overdue_jobs(&mon.check_once().await), ["email-monitor"]);
    assert_eq!(alerts(&sink).len(), 1, "{:?}", alerts(&sink));
}
