//! Issue 11: the heartbeat monitor's own health checks consult the service's gate.
//!
//! A service that advertised a `Retry-After` (or a quota reset), or whose breaker is
//! open, asked every caller to stay away until a given instant. The monitor checked
//! `health_url` every interval regardless: calls inside the window the service had
//! advertised, each one a 429 that could extend it. Now a held service is not checked
//! until its gate opens, and its unhealthy episode neither grows nor clears meanwhile.
//!
//! And a job deferred behind a gate for longer than its threshold is reported (an
//! overdue alert naming the service and until when), where before a deferred run
//! excused the job from being overdue however long it waited.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use steadfast_core::alert::{Alert, AlertKind, CollectAlerts};
use steadfast_core::config::{NoSecretSources, Url, parse_config};
use steadfast_core::db::Db;
use steadfast_core::env::Env;
use steadfast_core::heartbeat::{Finding, HealthProbe, Heartbeats, Monitor};
use steadfast_core::scheduler::{Runner, StatusBoard};
use steadfast_testkit::{TestEnv, serve};

const MINUTE: Duration = Duration::from_secs(60);

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

/// What a fake service saw: every call (when, path) and the windows it advertised.
#[derive(Default)]
struct Seen {
    calls: Vec<(DateTime<Utc>, String)>,
    advertised: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Seen {
    /// Calls that arrived after a window was advertised and before it ended.
    fn inside(&self) -> Vec<(DateTime<Utc>, String)> {
        self.calls
            .iter()
            .filter(|(t, _)| self.advertised.iter().any(|(a, b)| a < t && t < b))
            .cloned()
            .collect()
    }
}

/// Serves `host`: answers `status` (a 429 with `Retry-After: retry_after_s` while a
/// window it advertised runs, and to the first call of `limited_path`), else 200.
fn service(
    env: &TestEnv,
    host: &str,
    limited_path: &'static str,
    retry_after_s: i64,
    status: Arc<AtomicU16>,
) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (seen2, env2) = (seen.clone(), env.clone());
    env.parts().net.route(
        host,
        Arc::new(move |stream| {
            let (seen, env, status) = (seen2.clone(), env2.clone(), status.clone());
            serve(
                stream,
                service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, env, status) = (seen.clone(), env.clone(), status.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        let now = env.now();
                        let mut s = seen.lock().unwrap();
                        let running = s.advertised.iter().any(|(_, until)| now < *until);
                        let first =
                            path == limited_path && !s.calls.iter().any(|(_, p)| p == limited_path);
                        s.calls.push((now, path));
                        let mut resp = hyper::Response::builder();
                        if running || first {
                            let until = now + chrono::Duration::seconds(retry_after_s);
                            s.advertised.push((now, until));
                            resp = resp
                                .status(429)
                                .header("retry-after", retry_after_s.to_string());
                        } else {
                            resp = resp.status(status.load(Ordering::SeqCst));
                        }
                        let resp = resp.body(Full::new(Bytes::from_static(b"{}"))).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                }),
            );
        }),
    );
    seen
}

/// The runner, for real, for `minutes`: a job every 15 minutes whose first call is
/// answered `Retry-After: retry_after_s`, and a heartbeat monitor that looks every
/// minute at the same service's `health_url`. What the service saw, and the alerts.
async fn world(retry_after_s: i64, minutes: u32) -> (Seen, Vec<Alert>) {
    let env = TestEnv::new(start(), 11);
    let seen = service(
        &env,
        "rl.test",
        "/push",
        retry_after_s,
        Arc::new(AtomicU16::new(200)),
    );
    let text = r#"
[runner]
state_dir = "/state"
time_zone = "UTC"
monitor_interval = "1m"

[services.rl]
health_url = "http://rl.test/health"

[[jobs]]
name = "push"
every = "15m"
deadline = "10m"

[[jobs.steps]]
name = "push"
url = "http://rl.test/push"
service = "rl"
"#;
    let cfg = parse_config(
        text,
        Path::new("/etc/steadfast/runner.toml"),
        &NoSecretSources,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let sink = Arc::new(CollectAlerts::default());
    let r = Runner::new(env.clone(), cfg, sink.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(r.run(rx));
    tokio::time::sleep(minutes * MINUTE).await;
    let _ = tx.send(true);
    let _ = handle.await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let alerts = sink.0.lock().unwrap().clone();
    (seen, alerts)
}

#[tokio::test(start_paused = true)]
async fn the_monitor_does_not_health_check_inside_an_advertised_retry_after() {
    let (seen, _) = world(1800, 45).await;
    assert!(
        !seen.advertised.is_empty(),
        "the service never advertised a wait: {:?}",
        seen.calls
    );
    assert_eq!(seen.inside(), Vec::new(), "calls inside the Retry-After");
    // The monitor looks again once the window has passed.
    let (_, until) = seen.advertised[0];
    assert!(
        seen.calls
            .iter()
            .any(|(t, p)| p == "/health" && *t >= until),
        "no health check after the window: {:?}",
        seen.calls
    );
}

/// A job deferred behind a two-hour `Retry-After` produces nothing: once nothing has come
/// out for its threshold (30 min, twice its interval) a human hears why (the service and
/// until when), once.
#[tokio::test(start_paused = true)]
async fn a_job_deferred_behind_a_gate_past_its_threshold_is_reported_once() {
    let (seen, alerts) = world(7200, 90).await;
    assert_eq!(seen.inside(), Vec::new(), "calls inside the Retry-After");
    let overdue: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::Overdue)
        .collect();
    assert_eq!(overdue.len(), 1, "{alerts:?}");
    let alert = overdue[0];
    assert_eq!(alert.job.as_deref(), Some("push"));
    assert_eq!(alert.service.as_deref(), Some("rl"));
    assert!(
        alert.message.contains("takes no calls before"),
        "{}",
        alert.message
    );
    // The 10:15 run was deferred and held the 10:30 slot too (a gate wait is not a
    // heartbeat): nothing came out for the threshold since the job was first known
    // (10:00), so the next look after 10:30 says why.
    let at = start() + chrono::Duration::minutes(30);
    assert!(
        alert.at > at && alert.at <= at + chrono::Duration::minutes(2),
        "{alert:?}"
    );
}

fn probe() -> HealthProbe {
    HealthProbe {
        service: "rl".to_string(),
        url: Url::parse("http://rl.test/health").unwrap(),
        timeout: Duration::from_secs(5),
    }
}

/// The monitor alone: three failed looks make an alert; looks while the gate holds
/// do not call and do not count, either way.
async fn looks(gated: bool) -> (usize, Vec<DateTime<Utc>>, Vec<usize>) {
    let env = TestEnv::new(start(), 12);
    let status = Arc::new(AtomicU16::new(503));
    let seen = service(&env, "rl.test", "/never", 60, status);
    let db = Arc::new(Db::open(env.clone(), Path::new("/state")).await.unwrap());
    let beats = Arc::new(Heartbeats::new(db, &[], Arc::new(StatusBoard::default())));
    let sink = Arc::new(CollectAlerts::default());
    let mut mon = Monitor::new(
        env.clone(),
        beats,
        vec![probe()],
        u64::MAX,
        sink.clone(),
        env.now(),
    );
    // The gate: held from the third look until 10 minutes after it.
    let hold: Arc<Mutex<Option<DateTime<Utc>>>> = Arc::default();
    if gated {
        let reader = hold.clone();
        mon = mon.watch_gates(
            Box::new(move |service, now| {
                (*reader.lock().unwrap()).filter(|until| service == "rl" && now < *until)
            }),
            BTreeMap::new(),
        );
    }
    let mut unhealthy = Vec::new();
    for look in 0..4 {
        if look == 2 {
            *hold.lock().unwrap() = Some(env.now() + chrono::Duration::minutes(10));
        }
        if look == 3 {
            tokio::time::sleep(11 * MINUTE).await;
        }
        let findings = mon.check_once().await;
        unhealthy.push(
            findings
                .iter()
                .filter(|f| matches!(f, Finding::ServiceUnhealthy { .. }))
                .count(),
        );
        if look < 2 {
            tokio::time::sleep(MINUTE).await;
        }
    }
    let calls = seen.lock().unwrap().calls.len();
    let alerts = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.kind == AlertKind::ServiceUnhealthy)
        .map(|a| a.at)
        .collect();
    (calls, alerts, unhealthy)
}

#[tokio::test(start_paused = true)]
async fn a_held_service_is_not_checked_and_its_episode_waits_for_the_gate() {
    // Gated: the held look calls nothing and finds nothing; the look after the gate
    // opens is the episode's third failure, and the one alert.
    // Looks at 10:00, 10:01, 10:02 (held until 10:12) and 10:13.
    let after_hold = start() + chrono::Duration::minutes(13);
    let (calls, alerts, unhealthy) = looks(true).await;
    assert_eq!(calls, 3, "no health check while held");
    assert_eq!(unhealthy, [1, 1, 0, 1]);
    assert_eq!(alerts, [after_hold]);
    // Without the gate the monitor checks, and alerts, inside the hold.
    let (calls, alerts, unhealthy) = looks(false).await;
    assert_eq!(calls, 4);
    assert_eq!(unhealthy, [1, 1, 1, 1]);
    assert_eq!(alerts, [start() + chrono::Duration::minutes(2)]);
}
