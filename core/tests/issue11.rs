//! Issue 11: what the world does that the runner got wrong, each case run against a fake
//! service that judges from what it saw (never from the runner's events), once with
//! the pattern on and once with it off (the naive habit, which must show the fault).
//!
//! - case 1: a Retry-After (or a spent quota) holds every job's calls to the service;
//!   a run whose deadline ends first is deferred without calling; later slots wait.
//! - case 2: a run waits for a breaker's cooldown that ends within its deadline, and
//!   the probe goes out when the cooldown ends.
//! - case 3: a 200 without what the step extracts is a failure, retried.
//! - case 4: a step whose prerequisite was skipped is skipped; the run fails.
//! - the property: for random fault schedules, no call lands inside a Retry-After the
//!   service advertised, and none reaches an open breaker but its one probe.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use proptest::prelude::*;
use steadfast_core::alert::CollectAlerts;
use steadfast_core::breaker::BreakerState;
use steadfast_core::config::{Config, NoSecretSources, parse_config};
use steadfast_core::env::Env;
use steadfast_core::event::{Event, EventKind, Outcome, StateName};
use steadfast_core::job::RunOutcome;
use steadfast_core::scheduler::Runner;
use steadfast_testkit::{TestEnv, serve};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

/// One answer of the fake service.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn ok(body: &str) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }
    fn too_many(retry_after_s: u64) -> Self {
        Self {
            status: 429,
            headers: vec![("retry-after", retry_after_s.to_string())],
            body: String::new(),
        }
    }
}

/// Decides the answer to a call: (time, path, calls so far) -> reply.
type Script = Box<dyn FnMut(DateTime<Utc>, &str, usize) -> Reply + Send>;

/// What the fake service saw and told.
#[derive(Default)]
struct Seen {
    /// Every call: when, and its path.
    calls: Vec<(DateTime<Utc>, String)>,
    /// For each call, how many events the runner had emitted when it arrived: the
    /// order of calls and transitions that share one instant under a paused clock.
    after_events: Vec<usize>,
    /// Windows it advertised (Retry-After, spent quota): `[from, until)`.
    advertised: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Calls that arrived inside a window it had advertised to anyone.
    inside: usize,
}

impl Seen {
    fn paths(&self, path: &str) -> usize {
        self.calls.iter().filter(|(_, p)| p == path).count()
    }
}

/// Serves `host` with `script`, recording what it sees in the returned [`Seen`].
fn service(env: &TestEnv, host: &str, script: Script) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let script = Arc::new(Mutex::new(script));
    let (seen2, env2) = (seen.clone(), env.clone());
    env.parts().net.route(
        host,
        Arc::new(move |stream| {
            let (seen, script, env) = (seen2.clone(), script.clone(), env2.clone());
            serve(
                stream,
                service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, script, env) = (seen.clone(), script.clone(), env.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        let now = env.now();
                        let mut s = seen.lock().unwrap();
                        // A call at the very instant of the advertisement was sent before anyone
                        // could know of it; after that instant, it was not.
                        if s.advertised
                            .iter()
                            .any(|(from, until)| *from < now && now < *until)
                        {
                            s.inside += 1;
                        }
                        let n = s.calls.len();
                        s.calls.push((now, path.clone()));
                        s.after_events
                            .push(env.events().with_events(<[Event]>::len));
                        let reply = (script.lock().unwrap())(now, &path, n);
                        let mut hold = None;
                        for (name, value) in &reply.headers {
                            if *name == "retry-after" || *name == "x-ratelimit-reset" {
                                hold = value.parse::<i64>().ok();
                            }
                        }
                        if let Some(secs) = hold {
                            s.advertised
                                .push((now, now + chrono::Duration::seconds(secs)));
                        }
                        let mut resp = hyper::Response::builder().status(reply.status);
                        for (name, value) in &reply.headers {
                            resp = resp.header(*name, value.as_str());
                        }
                        let resp = resp.body(Full::new(Bytes::from(reply.body))).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                }),
            );
        }),
    );
    seen
}

/// A configuration from TOML (the reader's path), with `patterns` appended.
fn config(jobs_and_services: &str, patterns: &str) -> Config {
    let text = format!(
        "[runner]\nstate_dir = \"/state\"\ntime_zone = \"UTC\"\n\n{patterns}\n\n{jobs_and_services}"
    );
    parse_config(
        &text,
        Path::new("/etc/steadfast/runner.toml"),
        &NoSecretSources,
    )
    .unwrap_or_else(|d| panic!("{d}"))
}

const OURS: &str = "";

async fn runner(env: &TestEnv, cfg: Config) -> Runner<TestEnv> {
    Runner::new(env.clone(), cfg, Arc::new(CollectAlerts::default()))
        .await
        .unwrap()
}

fn outcome(o: &Option<RunOutcome>) -> Outcome {
    o.as_ref().expect("known job").kind()
}

// ---------------------------------------------------------------------------------
// Case 1: a Retry-After holds every job.

/// Two jobs on one rate-limited service.
const TWO_JOBS: &str = r#"
[services.rl]
[[jobs]]
name = "a"
every = "15m"
deadline = "10m"
[[jobs.steps]]
name = "get"
url = "http://rl.test/a"
service = "rl"
[[jobs]]
name = "b"
every = "15m"
deadline = "10m"
[[jobs.steps]]
name = "get"
url = "http://rl.test/b"
service = "rl"
"#;

/// The first call gets a 429 with `Retry-After: secs`; the service answers 429
/// again inside that window, 200 after it.
fn storm(secs: u64) -> Script {
    let mut until: Option<DateTime<Utc>> = None;
    Box::new(move |now, _, n| {
        if n == 0 {
            until = Some(now + chrono::Duration::seconds(secs as i64));
            return Reply::too_many(secs);
        }
        match until {
            Some(u) if now < u => Reply::too_many(((u - now).num_seconds()).max(1) as u64),
            _ => Reply::ok("{}"),
        }
    })
}

/// Job `a` gets the 429; job `b` starts 5 ms later.
async fn two_jobs_in_a_storm(patterns: &str, secs: u64) -> (Arc<Mutex<Seen>>, Outcome, Outcome) {
    let env = TestEnv::new(start(), 1);
    let seen = service(&env, "rl.test", storm(secs));
    let r = runner(&env, config(TWO_JOBS, patterns)).await;
    let (a, b) = tokio::join!(r.run_once("a"), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        r.run_once("b").await
    });
    (seen, outcome(&a), outcome(&b))
}

#[tokio::test(start_paused = true)]
async fn case1_a_retry_after_holds_the_other_job_too() {
    let (seen, a, b) = two_jobs_in_a_storm(OURS, 60).await;
    let (inside, calls) = {
        let seen = seen.lock().unwrap();
        (seen.inside, seen.calls.clone())
    };
    assert_eq!(inside, 0, "calls inside the advertised window");
    assert_eq!((a, b), (Outcome::Succeeded, Outcome::Succeeded));
    assert_eq!(calls.len(), 3, "{calls:?}");

    // The naive habit: only the step that got the 429 waits.
    let (seen, _, _) = two_jobs_in_a_storm("[patterns]\ngates = false", 60).await;
    assert!(seen.lock().unwrap().inside >= 1);
}

#[tokio::test(start_paused = true)]
async fn case1_a_retry_after_past_the_deadline_defers_and_later_slots_do_not_call_early() {
    let env = TestEnv::new(start(), 2);
    let seen = service(&env, "rl.test", storm(3600));
    let r = runner(&env, config(TWO_JOBS, OURS)).await;
    let a = r.run_once("a").await;
    assert_eq!(outcome(&a), Outcome::Deferred, "not failed: {a:?}");
    // Job b's slot a quarter of an hour later: deferred without a call.
    tokio::time::sleep(Duration::from_secs(15 * 60)).await;
    assert_eq!(outcome(&r.run_once("b").await), Outcome::Deferred);
    // The gate is in the store: a restarted runner does not call early either.
    drop(r);
    let r = runner(&env, config(TWO_JOBS, OURS)).await;
    tokio::time::sleep(Duration::from_secs(15 * 60)).await;
    assert_eq!(outcome(&r.run_once("a").await), Outcome::Deferred);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.calls.len(), 1, "{:?}", seen.calls);
        assert_eq!(seen.inside, 0);
    }
    let held = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::GateWait)
        .count();
    assert!(held >= 2);
    // After the hour the next slot calls and succeeds.
    tokio::time::sleep(Duration::from_secs(31 * 60)).await;
    assert_eq!(outcome(&r.run_once("b").await), Outcome::Succeeded);
    assert_eq!(seen.lock().unwrap().inside, 0);

    // The naive habit: the run gives up and the next slot calls inside the window.
    let env = TestEnv::new(start(), 2);
    let seen = service(&env, "rl.test", storm(3600));
    let r = runner(&env, config(TWO_JOBS, "[patterns]\ngates = false")).await;
    assert_ne!(outcome(&r.run_once("a").await), Outcome::Deferred);
    tokio::time::sleep(Duration::from_secs(15 * 60)).await;
    let _ = r.run_once("b").await;
    assert!(seen.lock().unwrap().inside >= 1);
}

#[tokio::test(start_paused = true)]
async fn case1_a_spent_quota_holds_until_its_reset() {
    let env = TestEnv::new(start(), 3);
    // Every answer is a 200 that says the quota is spent for the next two hours.
    let seen = service(
        &env,
        "rl.test",
        Box::new(|_, _, _| Reply {
            status: 200,
            headers: vec![
                ("x-ratelimit-remaining", "0".into()),
                ("x-ratelimit-reset", "7200".into()),
            ],
            body: "{}".into(),
        }),
    );
    let r = runner(&env, config(TWO_JOBS, OURS)).await;
    assert_eq!(outcome(&r.run_once("a").await), Outcome::Succeeded);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(outcome(&r.run_once("b").await), Outcome::Deferred);
    assert_eq!(seen.lock().unwrap().calls.len(), 1);
    assert_eq!(seen.lock().unwrap().inside, 0);
}

// ---------------------------------------------------------------------------------
// Case 2: probes on their own clock.

const FLAKY: &str = r#"
[services.flaky]
breaker = { failure_threshold = 3, cooldown = "30s", max_cooldown = "2m" }
[[jobs]]
name = "sync"
every = "15m"
deadline = "10m"
[[jobs.steps]]
name = "push"
url = "http://flaky.test/push"
service = "flaky"
"#;

/// 503 until `heal_s` seconds after the start, 200 after.
fn down_until(heal_s: i64) -> Script {
    Box::new(move |now, _, _| {
        if now < start() + chrono::Duration::seconds(heal_s) {
            Reply::status(503)
        } else {
            Reply::ok("{}")
        }
    })
}

/// `(at, until)` of every transition to open, and `at` of every transition to
/// half-open and out of it.
fn open_periods(events: &[Event]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    events
        .iter()
        .filter(|e| e.event == EventKind::BreakerTransition)
        .filter(|e| e.detail.as_deref() != Some("restored from the store"))
        .filter(|e| e.to_breaker() == Some(BreakerState::Open))
        .map(|e| {
            let period = e.delay_ms.unwrap_or(0);
            (e.at, e.at + chrono::Duration::milliseconds(period as i64))
        })
        .collect()
}

trait BreakerTo {
    fn to_breaker(&self) -> Option<BreakerState>;
}

impl BreakerTo for Event {
    fn to_breaker(&self) -> Option<BreakerState> {
        match self.to? {
            StateName::Breaker(s) => Some(s),
            StateName::Task(_) => None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn case2_a_run_waits_for_the_cooldown_and_probes_when_it_ends() {
    let env = TestEnv::new(start(), 4);
    let seen = service(&env, "flaky.test", down_until(60));
    let r = runner(&env, config(FLAKY, OURS)).await;
    let o = r.run_once("sync").await;
    assert_eq!(outcome(&o), Outcome::Succeeded, "{o:?}");
    let events = env.events_so_far();
    let periods = open_periods(&events);
    assert!(!periods.is_empty(), "the breaker never opened");
    let calls = seen.lock().unwrap().calls.clone();
    for (opened, until) in &periods {
        // Nothing while open; the first call after is at the end of the cooldown.
        assert!(
            !calls.iter().any(|(t, _)| opened < t && t < until),
            "a call inside the open period {opened}..{until}: {calls:?}"
        );
        let next = calls.iter().map(|(t, _)| *t).find(|t| t >= until);
        assert_eq!(next, Some(*until), "the probe did not go out at {until}");
    }

    // Today's habit: the run ends at the first open-breaker rejection.
    let env = TestEnv::new(start(), 4);
    let _seen = service(&env, "flaky.test", down_until(60));
    let r = runner(&env, config(FLAKY, "[patterns]\ngates = false")).await;
    assert_ne!(outcome(&r.run_once("sync").await), Outcome::Succeeded);
}

// ---------------------------------------------------------------------------------
// Case 3: output contracts.

const FETCH_PUBLISH: &str = r#"
[services.api]
[[jobs]]
name = "blog"
every = "15m"
deadline = "10m"
[[jobs.steps]]
name = "fetch"
url = "http://api.test/items"
service = "api"
extract = { id = "/id" }
[[jobs.steps]]
name = "publish"
method = "POST"
url = "http://api.test/items/{{fetch.id}}"
service = "api"
"#;

/// The first `empty` answers to /items are 200 with a body that lacks `/id` (empty,
/// truncated, not JSON); then `{"id": "7"}`.
fn hollow_first(empty: usize) -> Script {
    let hollow = ["", "{\"id\": \"", "<html>ok</html>", "{\"other\": 1}"];
    let mut served = 0;
    Box::new(move |_, path, _| {
        if path == "/items" {
            served += 1;
            if served <= empty {
                return Reply::ok(hollow[(served - 1) % hollow.len()]);
            }
            return Reply::ok("{\"id\": \"7\"}");
        }
        Reply::ok("{}")
    })
}

#[tokio::test(start_paused = true)]
async fn case3_a_200_without_the_extracted_field_is_retried_not_done() {
    let env = TestEnv::new(start(), 5);
    let seen = service(&env, "api.test", hollow_first(2));
    let r = runner(&env, config(FETCH_PUBLISH, OURS)).await;
    let o = r.run_once("blog").await;
    assert_eq!(outcome(&o), Outcome::Succeeded, "{o:?}");
    let (items, published) = {
        let seen = seen.lock().unwrap();
        (seen.paths("/items"), seen.paths("/items/7"))
    };
    assert_eq!((items, published), (3, 1));
    let failures: Vec<String> = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::AttemptFailed)
        .filter_map(|e| e.detail.clone())
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures.iter().all(|d| d.starts_with("bad_answer")),
        "{failures:?}"
    );

    // Never good: not a success of any kind (the bad answers open the breaker, so the
    // run is deferred past its cooldown), and publish never runs.
    let env = TestEnv::new(start(), 5);
    let seen = service(&env, "api.test", hollow_first(usize::MAX));
    let r = runner(&env, config(FETCH_PUBLISH, OURS)).await;
    let o = outcome(&r.run_once("blog").await);
    assert!(
        !matches!(o, Outcome::Succeeded | Outcome::Degraded),
        "{o:?}"
    );
    assert_eq!(
        seen.lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(_, p)| p.starts_with("/items/"))
            .count(),
        0
    );

    // The naive habit: the empty 200 is a success and the run counts as output.
    let env = TestEnv::new(start(), 5);
    let _seen = service(&env, "api.test", hollow_first(2));
    let naive = "[patterns]\ncontracts = false\nneeds = false";
    let r = runner(&env, config(FETCH_PUBLISH, naive)).await;
    assert_eq!(outcome(&r.run_once("blog").await), Outcome::Degraded);
}

// ---------------------------------------------------------------------------------
// Case 4: step dependencies.

fn upload_publish(needs: &str) -> String {
    format!(
        r#"
[services.video]
[services.blog]
[[jobs]]
name = "release"
every = "1h"
deadline = "10m"
[[jobs.steps]]
name = "upload"
method = "POST"
url = "http://video.test/upload"
service = "video"
[[jobs.steps]]
name = "publish"
method = "POST"
url = "http://blog.test/publish"
service = "blog"
{needs}
"#
    )
}

#[tokio::test(start_paused = true)]
async fn case4_a_skipped_prerequisite_skips_its_dependents_and_fails_the_run() {
    let run = |patterns: &'static str, needs: &'static str| async move {
        let env = TestEnv::new(start(), 6);
        // The upload is refused for good (a 4xx skips the step at once).
        let _video = service(&env, "video.test", Box::new(|_, _, _| Reply::status(404)));
        let blog = service(&env, "blog.test", Box::new(|_, _, _| Reply::ok("{}")));
        let r = runner(&env, config(&upload_publish(needs), patterns)).await;
        let o = r.run_once("release").await.unwrap();
        let publishes = blog.lock().unwrap().paths("/publish");
        (o, publishes, env.events_so_far())
    };
    // Ours: publish needs upload (by default, every step before it).
    let (o, publishes, events) = run(OURS, "").await;
    assert_eq!(publishes, 0);
    let RunOutcome::Failed(err) = &o else {
        panic!("{o:?}")
    };
    assert!(err.detail.contains("`upload`"), "{}", err.detail);
    let skipped: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::StepSkipped && e.step.as_deref() == Some("publish"))
        .filter_map(|e| e.detail.clone())
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("needs step `upload`"), "{skipped:?}");
    // A step that needs nothing still runs; the run is degraded.
    let (o, publishes, _) = run(OURS, "needs = []").await;
    assert_eq!((o.kind(), publishes), (Outcome::Degraded, 1));
    // The naive habit: publish runs after the skipped upload.
    let (o, publishes, _) = run("[patterns]\nneeds = false", "").await;
    assert_eq!((o.kind(), publishes), (Outcome::Degraded, 1));
}

// ---------------------------------------------------------------------------------
// The property: no call inside an advertised Retry-After; none at an open breaker but
// its probe.

const SHARED: &str = r#"
[services.api]
breaker = { failure_threshold = 2, cooldown = "20s", max_cooldown = "2m" }
[[jobs]]
name = "one"
every = "1m"
deadline = "50s"
[[jobs.steps]]
name = "call"
url = "http://api.test/one"
service = "api"
[[jobs]]
name = "two"
every = "1m"
deadline = "50s"
[[jobs.steps]]
name = "call"
url = "http://api.test/two"
service = "api"
[[jobs]]
name = "three"
every = "2m"
deadline = "90s"
[[jobs.steps]]
name = "call"
url = "http://api.test/three"
service = "api"
"#;

/// What the service does to call `n` (cycling): 0 = 200, 1 = 503, 2+ = 429 with a
/// Retry-After of that many seconds.
fn scheduled(faults: Vec<u64>) -> Script {
    Box::new(move |_, _, n| match faults[n % faults.len()] {
        0 => Reply::ok("{}"),
        1 => Reply::status(503),
        secs => Reply::too_many(secs),
    })
}

fn check_world(seed: u64, faults: Vec<u64>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (seen, events) = rt.block_on(async {
        let env = TestEnv::new(start(), seed);
        let seen = service(&env, "api.test", scheduled(faults));
        let r = runner(&env, config(SHARED, OURS)).await;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(r.run(rx));
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        let _ = tx.send(true);
        let _ = handle.await;
        (seen, env.events_so_far())
    });
    let seen = seen.lock().unwrap();
    prop_assert_eq!(
        seen.inside,
        0,
        "calls inside a Retry-After: {:?}",
        seen.calls
    );
    for (opened, until) in open_periods(&events) {
        let during = seen
            .calls
            .iter()
            .filter(|(t, _)| opened < *t && *t < until)
            .count();
        prop_assert_eq!(during, 0, "calls while open {}..{}", opened, until);
    }
    // Between a half-open transition and the next transition: one call, the probe.
    // Compared in the order things happened, not by instant: under a paused clock a
    // probe, the transition its success causes and the next caller's call (through the
    // closed breaker) share one instant.
    let transitions: Vec<(usize, Option<BreakerState>)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event == EventKind::BreakerTransition)
        .map(|(i, e)| (i, e.to_breaker()))
        .collect();
    for (k, (at, to)) in transitions.iter().enumerate() {
        if *to != Some(BreakerState::HalfOpen) {
            continue;
        }
        let end = transitions.get(k + 1).map(|(i, _)| *i);
        let probes = seen
            .after_events
            .iter()
            .filter(|seen_after| **seen_after > *at && end.is_none_or(|e| **seen_after <= e))
            .count();
        prop_assert!(
            probes <= 1,
            "{} calls while half-open from {}",
            probes,
            events[*at].at
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_call_inside_an_advertised_retry_after_or_at_an_open_breaker(
        seed in any::<u64>(),
        faults in prop::collection::vec(prop_oneof![3 => Just(0u64), 2 => Just(1u64), 2 => 2u64..120], 1..12),
    ) {
        check_world(seed, faults)?;
    }
}

// ---------------------------------------------------------------------------------
// Case 2, no run waiting: the health probe goes out when the cooldown ends.

const FLAKY_WITH_HEALTH: &str = r#"
[services.flaky]
health_url = "http://flaky.test/health"
breaker = { failure_threshold = 3, cooldown = "30s", max_cooldown = "2m" }
[[jobs]]
name = "sync"
every = "15m"
deadline = "20s"
[[jobs.steps]]
name = "push"
url = "http://flaky.test/push"
service = "flaky"
"#;

#[tokio::test(start_paused = true)]
async fn case2_with_no_run_waiting_a_health_probe_goes_out_when_the_cooldown_ends() {
    async fn world(patterns: &str) -> (Vec<(DateTime<Utc>, String)>, Vec<Event>) {
        let env = TestEnv::new(start(), 7);
        // Down until 10:15:45, while the first run (10:15, deadline 20 s) is deferred.
        let seen = service(&env, "flaky.test", down_until(15 * 60 + 45));
        // The heartbeat monitor's own health checks are out of this picture.
        let text = format!(
            "[runner]\nstate_dir = \"/state\"\ntime_zone = \"UTC\"\nmonitor_interval = \"1h\"\n\n{patterns}\n\n{FLAKY_WITH_HEALTH}"
        );
        let cfg = parse_config(
            &text,
            Path::new("/etc/steadfast/runner.toml"),
            &NoSecretSources,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let r = runner(&env, cfg).await;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(r.run(rx));
        tokio::time::sleep(Duration::from_secs(25 * 60)).await;
        let _ = tx.send(true);
        let _ = handle.await;
        let calls = seen.lock().unwrap().calls.clone();
        (calls, env.events_so_far())
    }
    let (calls, events) = world(OURS).await;
    let periods = open_periods(&events);
    assert!(!periods.is_empty(), "the breaker never opened");
    for (opened, until) in &periods {
        assert!(
            !calls.iter().any(|(t, _)| opened < t && t < until),
            "{calls:?}"
        );
        let next = calls.iter().find(|(t, _)| t >= until);
        assert_eq!(
            next.map(|(t, p)| (*t, p.as_str())),
            Some((*until, "/health")),
            "no health probe at the cooldown's end {until}: {calls:?}"
        );
    }
    // The breaker closed on a probe long before the next slot (10:30).
    let closed = events.iter().find(|e| {
        e.event == EventKind::BreakerTransition
            && e.to == Some(StateName::Breaker(BreakerState::Closed))
    });
    assert!(closed.is_some_and(|e| e.at < start() + chrono::Duration::minutes(30)));

    // Before: nothing probes until the next scheduled start.
    // (The heartbeat monitor's first look at 10:00 checks health on its own.)
    let (calls, _) = world("[patterns]\nprobes = false").await;
    let first_slot = start() + chrono::Duration::minutes(15);
    assert!(
        !calls.iter().any(|(t, p)| p == "/health" && *t > first_slot),
        "{calls:?}"
    );
}

/// A fatal answer stops the job even when it also closes the service's gate past the
/// deadline: a human is needed, not a later run.
#[tokio::test(start_paused = true)]
async fn a_fatal_answer_is_not_deferred_by_its_own_retry_after() {
    let env = TestEnv::new(start(), 8);
    let _seen = service(
        &env,
        "rl.test",
        Box::new(|_, _, _| Reply {
            status: 501,
            headers: vec![("retry-after", "3600".into())],
            body: String::new(),
        }),
    );
    let r = runner(&env, config(TWO_JOBS, OURS)).await;
    assert_eq!(outcome(&r.run_once("a").await), Outcome::Fatal);
}
