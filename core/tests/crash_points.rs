//! Issue 10's crash-point test: the runner crashed at every durable operation of whole
//! runs (steps, finishing runs, token refreshes with rotation, a catch-up after
//! downtime), then restarted on the same disk and store.
//!
//! The world runs one script (two jobs, a rotating token provider, a kill and 40 minutes
//! of downtime, a restart that catches up, a clean shutdown). Run once unarmed it makes
//! `N` durable operations (store commits and file operations, counted by the shared
//! [`CrashPoints`]). Then for every `k` in `1..=N`, before and after the operation, the
//! script runs again on fresh fakes with the crash armed: when it hits, the runner is
//! dropped, the disk crashes (unsynced data and names are lost), and a new runner starts
//! on the same disk and store at once and carries on with the script. Each time:
//!
//! - **no completed step is repeated**: the API checks, for every request, whether the
//!   journal already holds that step as done (its idempotency key); it must not;
//! - **no run is lost**: every slot of every job from its registration to the end is in
//!   the journal, run (done) or missed with a reason; none is left running;
//! - **every rotated refresh token is kept**: the provider never sees a spent one.
//!
//! One window no client can close is counted apart: a crash after the provider rotated
//! the refresh token and answered, before the answer's commit (the process died holding
//! the only copy). The test checks these are exactly the crashes just before a refresh's
//! commit, one per refresh, and that the restarted runner says so.
//!
//! A dead process sends nothing: both servers ignore requests once a crash point has hit
//! and until the harness has restarted the runner (the fakes' tasks die a moment later
//! than the crash itself).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use secrecy::SecretString;

use steadfast_core::alert::CollectAlerts;
use steadfast_core::config::{
    CatchUp, Config, CredentialConfig, HttpStep, JobConfig, Overlap, Patterns, RetryPolicy,
    RunnerSettings, Schedule, ScheduleConfig, ServiceConfig, StepConfig, StepKind, Template, Url,
};
use steadfast_core::db::{Db, SlotState};
use steadfast_core::env::Env;
use steadfast_core::event::{EventKind, Outcome};
use steadfast_core::job::RunId;
use steadfast_core::scheduler::Runner;
use steadfast_core::scheduler::catch_up::slots_between;
use steadfast_testkit::{CrashAt, CrashPoints, TestEnv, serve};

const STATE_DIR: &str = "/state";
const CREDENTIAL: &str = "acme";
const INITIAL_REFRESH: &str = "rt-0";

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
}

/// The world's services, outside the runner: they survive its crashes.
#[derive(Debug, Default)]
struct World {
    /// The refresh token the provider accepts (`None`: the family was revoked).
    valid_refresh: Option<String>,
    /// Refresh tokens a rotation spent.
    spent: Vec<String>,
    /// Refresh grants answered with a token.
    refreshes: u32,
    /// Spent refresh tokens presented (reuse: the family is revoked).
    spent_presented: u32,
    /// Access tokens issued, with their expiry.
    access: Vec<(String, DateTime<Utc>)>,
    /// Requests for a step the journal already held as done.
    repeats: Vec<String>,
    /// POSTs received, by idempotency key (the API applies each key once; a step whose
    /// completion a crash kept from the journal is sent again with its key).
    effects: BTreeMap<String, u32>,
    /// API calls with a bad or expired token.
    unauthorized: u32,
}

fn lock(world: &Arc<Mutex<World>>) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

fn json(status: u16, body: String) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Whether the runner is dead (a crash point hit, the harness has not restarted it yet).
fn dead(env: &TestEnv) -> bool {
    env.parts().fs.crash_points().hit().is_some()
}

/// A strict rotating provider: every refresh spends the presented refresh token.
fn token_answer(
    env: &TestEnv,
    world: &Arc<Mutex<World>>,
    form: &[(String, String)],
) -> (u16, String) {
    let mut w = lock(world);
    let presented = form
        .iter()
        .find(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if w.valid_refresh.as_deref() != Some(presented.as_str()) {
        if w.spent.contains(&presented) {
            w.spent_presented += 1;
            w.valid_refresh = None;
        }
        return (400, r#"{"error":"invalid_grant"}"#.to_string());
    }
    w.refreshes += 1;
    let n = w.refreshes;
    let refresh = format!("rt-{n}");
    w.spent.push(presented);
    w.valid_refresh = Some(refresh.clone());
    let access = format!("at-{n}");
    w.access
        .push((access.clone(), env.now() + chrono::Duration::minutes(30)));
    let body = serde_json::json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 1800, "refresh_token": refresh,
    });
    (200, body.to_string())
}

/// The API: every request is checked against the journal, POSTs applied once per key.
fn api_answer(
    env: &TestEnv,
    world: &Arc<Mutex<World>>,
    post: bool,
    path: &str,
    auth: Option<&str>,
    key: Option<&str>,
) -> (u16, String) {
    let mut w = lock(world);
    let now = env.now();
    let authorised = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| w.access.iter().any(|(tok, exp)| tok == t && now < *exp));
    if !authorised {
        w.unauthorized += 1;
        return (401, "{}".to_string());
    }
    if let Some(key) = key {
        let done: i64 = env
            .parts()
            .db
            .with(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM steps WHERE idempotency_key = ?1",
                    [key],
                    |r| r.get(0),
                )
            })
            .unwrap_or(0);
        if done > 0 {
            w.repeats.push(format!("{path} {key}"));
        }
        if post {
            *w.effects.entry(key.to_string()).or_default() += 1;
        }
    }
    (200, format!("{{\"id\": \"{}\"}}", w.effects.len()))
}

fn install(env: &TestEnv, world: &Arc<Mutex<World>>) {
    for host in ["auth.test", "api.test"] {
        let (env, world) = (env.clone(), world.clone());
        env.parts().net.route(
            host,
            Arc::new({
                let env = env.clone();
                move |stream| {
                    let (env, world) = (env.clone(), world.clone());
                    serve(
                        stream,
                        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (env, world) = (env.clone(), world.clone());
                            async move {
                                let path = req.uri().path().to_string();
                                let post = req.method() == hyper::Method::POST;
                                let header = |name: &str| {
                                    req.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_string)
                                };
                                let (auth, key) =
                                    (header("authorization"), header("idempotency-key"));
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                // A moment of latency, so crashes land mid-call too.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                if dead(&env) {
                                    return Ok::<_, Infallible>(json(503, "{}".into()));
                                }
                                let (status, body) = if path == "/token" {
                                    let form: Vec<(String, String)> =
                                        form_urlencoded::parse(&body).into_owned().collect();
                                    token_answer(&env, &world, &form)
                                } else {
                                    api_answer(
                                        &env,
                                        &world,
                                        post,
                                        &path,
                                        auth.as_deref(),
                                        key.as_deref(),
                                    )
                                };
                                Ok(json(status, body))
                            }
                        }),
                    );
                }
            }),
        );
    }
}

fn step(name: &str, method: &str, url: &str) -> StepConfig {
    StepConfig {
        needs: None,
        name: name.to_string(),
        action: None,
        kind: StepKind::Http(HttpStep {
            method: method.parse().unwrap(),
            url: Template::parse(url).unwrap(),
            headers: Vec::new(),
            body: None,
            service: "api".into(),
            credential: Some(CREDENTIAL.into()),
            extract: BTreeMap::from([("id".to_string(), "/id".to_string())]),
            expect: Default::default(),
        }),
    }
}

fn job(name: &str, every_min: u64, steps: Vec<StepConfig>) -> JobConfig {
    JobConfig {
        name: name.to_string(),
        schedule: Schedule::new(
            &ScheduleConfig::Every(Duration::from_secs(every_min * 60)),
            chrono_tz::UTC,
        )
        .unwrap(),
        start_jitter: Duration::ZERO,
        overlap: Overlap::Skip,
        catch_up: CatchUp::Latest,
        catch_up_window: Duration::from_secs(6 * 3600),
        alert_missed: true,
        deadline: Duration::from_secs(600),
        heartbeat_threshold: Duration::from_secs(2 * 3600),
        retry: None,
        steps,
    }
}

fn config() -> Config {
    let credential = CredentialConfig {
        name: CREDENTIAL.to_string(),
        token_url: Url::parse("http://auth.test/token").unwrap(),
        client_id: "steadfast".to_string(),
        client_secret: None,
        refresh_token: SecretString::from(INITIAL_REFRESH.to_string()),
        skew: Duration::from_secs(300),
        refresh_timeout: Duration::from_secs(30),
        scope: None,
    };
    let publish = job(
        "publish",
        15,
        vec![
            step("draft", "POST", "http://api.test/drafts"),
            step("render", "GET", "http://api.test/render/{{draft.id}}"),
            step("post", "POST", "http://api.test/posts/{{draft.id}}"),
        ],
    );
    let poll = job(
        "poll",
        30,
        vec![step("inbox", "GET", "http://api.test/inbox")],
    );
    Config {
        runner: RunnerSettings {
            state_dir: STATE_DIR.into(),
            time_zone: chrono_tz::UTC,
            monitor_interval: Duration::from_secs(300),
            memory_warn_bytes: 1 << 30,
            memory_fatal_bytes: 2 << 30,
            shutdown_grace: Duration::from_secs(5),
            breaker_alert_after: Duration::from_secs(3600),
        },
        patterns: Patterns::ALL,
        retry: RetryPolicy::default(),
        windows: BTreeMap::new(),
        services: BTreeMap::from([(
            "api".to_string(),
            ServiceConfig {
                name: "api".to_string(),
                health_url: None,
                call_timeout: Duration::from_secs(10),
                breaker: Default::default(),
            },
        )]),
        credentials: BTreeMap::from([(CREDENTIAL.to_string(), credential)]),
        jobs: vec![publish, poll],
    }
}

/// How one run of the script went.
#[derive(Debug, Default)]
struct ScriptRun {
    /// Durable operations counted.
    ops: u64,
    /// Crashes that hit.
    crashes: u32,
    /// The crash landed after the provider rotated and answered, before the answer was
    /// committed: the rotated refresh token died with the process.
    answer_lost: bool,
}

/// The refresh token the store holds (a committed read, as the next process would see).
fn stored_refresh(env: &TestEnv) -> Option<String> {
    env.parts()
        .db
        .with(|c| {
            c.query_row(
                "SELECT refresh_token FROM tokens WHERE credential = ?1",
                [CREDENTIAL],
                |r| r.get::<_, String>(0),
            )
        })
        .ok()
}

/// Runs the runner until `until` (then kills it, or shuts it down when `clean`),
/// restarting it at once whenever a crash point hits. Returns false when the script
/// must stop: a rotated refresh token died with the process.
async fn phase(
    env: &TestEnv,
    world: &Arc<Mutex<World>>,
    until: DateTime<Utc>,
    clean: bool,
    out: &mut ScriptRun,
) -> bool {
    let points: Arc<CrashPoints> = env.parts().fs.crash_points().clone();
    loop {
        // Tasks alive before this boot (earlier worlds of this test) are not the runner's.
        let base = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let handle = {
            let env = env.clone();
            tokio::spawn(async move {
                let runner = Runner::new(env, config(), CollectAlerts::default())
                    .await
                    .expect("the runner starts");
                runner.run(rx).await
            })
        };
        let left = (until - env.now()).to_std().unwrap_or_default();
        tokio::select! {
            biased;
            _ = points.crashed() => {
                handle.abort();
                let _ = handle.await;
                // Let every task of the dead runner go (they are aborted, not yet dropped).
                for _ in 0..64 {
                    tokio::task::yield_now().await;
                }
                // A dead process runs nothing: no task of the dead runner may go on (and
                // act once the crash point is disarmed).
                let left = tokio::runtime::Handle::current().metrics().num_alive_tasks().saturating_sub(base);
                assert_eq!(left, 0, "{left} task(s) of the crashed runner are still alive");
                env.parts().fs.crash();
                out.crashes += 1;
                let server = lock(world).valid_refresh.clone();
                let stored = stored_refresh(env).unwrap_or_else(|| INITIAL_REFRESH.to_string());
                if server.as_deref() != Some(stored.as_str()) {
                    out.answer_lost = true;
                    points.disarm();
                    return false;
                }
                points.disarm();
            }
            _ = tokio::time::sleep(left) => {
                if clean {
                    let _ = tx.send(true);
                    let _ = handle.await;
                } else {
                    handle.abort();
                    let _ = handle.await;
                    for _ in 0..64 {
                        tokio::task::yield_now().await;
                    }
                    env.parts().fs.crash();
                }
                return true;
            }
        }
    }
}

/// The script: up from 10:00 to a kill at 11:10, down for 40 minutes (three slots of one
/// job, one of the other), up again at 11:50 (catching up), a clean stop at 12:20.
async fn script(arm: Option<CrashAt>) -> (TestEnv, Arc<Mutex<World>>, ScriptRun) {
    let env = TestEnv::new(at(10, 0), 11);
    let world = Arc::new(Mutex::new(World {
        valid_refresh: Some(INITIAL_REFRESH.to_string()),
        ..World::default()
    }));
    install(&env, &world);
    let points = env.parts().fs.crash_points().clone();
    let first = points.seen();
    if let Some(at) = arm {
        points.arm(at);
    }
    let mut out = ScriptRun::default();
    if phase(&env, &world, at(11, 10), false, &mut out).await {
        tokio::time::sleep(Duration::from_secs(40 * 60)).await;
        phase(&env, &world, at(12, 20), true, &mut out).await;
    }
    out.ops = points.seen() - first;
    (env, world, out)
}

/// The invariants of a script that ran to its end.
async fn check(env: &TestEnv, world: &Arc<Mutex<World>>, label: &str) {
    check_world(env, world, label);
    let db = Db::open(env.clone(), Path::new(STATE_DIR)).await.unwrap();
    check_journal(&db, label);
}

/// What the services saw: no repeat, no spent token, the chain kept.
fn check_world(env: &TestEnv, world: &Arc<Mutex<World>>, label: &str) {
    let w = lock(world);
    assert!(
        w.repeats.is_empty(),
        "{label}: completed steps repeated: {:?}",
        w.repeats
    );
    assert_eq!(
        w.spent_presented, 0,
        "{label}: a spent refresh token was presented"
    );
    assert_eq!(
        stored_refresh(env).as_deref(),
        w.valid_refresh.as_deref(),
        "{label}: the store does not hold the provider's refresh token"
    );
}

/// What the journal says: every slot of every job run or missed, none left running.
fn check_journal(db: &Db<TestEnv>, label: &str) {
    for job in config().jobs {
        let registered = db
            .job(&job.name)
            .unwrap()
            .expect("registered")
            .registered_at;
        for due in slots_between(&job.schedule, registered, at(12, 20)) {
            let run = RunId::new(&job.name, due);
            let slot = db.slot(&run).unwrap();
            let Some(slot) = slot else {
                panic!("{label}: slot {run} is not in the journal");
            };
            match slot.state {
                SlotState::Done => assert_eq!(
                    slot.outcome,
                    Some(Outcome::Succeeded),
                    "{label}: {run}: {slot:?}"
                ),
                SlotState::Missed => assert!(slot.missed.is_some(), "{label}: {run}"),
                SlotState::Running => panic!("{label}: {run} was left running: {slot:?}"),
            }
        }
        assert!(db.unfinished(&job.name).unwrap().is_empty(), "{label}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_unarmed_script_keeps_every_invariant() {
    let (env, world, out) = script(None).await;
    check(&env, &world, "unarmed").await;
    {
        let w = lock(&world);
        // 10:15 (initial), 10:45, 11:50 (after the downtime: the token expired), 12:15.
        assert_eq!(w.refreshes, 4, "{w:?}");
        // publish ran 10:15 .. 11:00, 11:45 (caught up), 12:00 and 12:15: two POSTs each.
        assert_eq!(w.effects.len(), 2 * 7, "{:?}", w.effects);
        assert_eq!(w.unauthorized, 0);
    }
    let missed = Db::open(env.clone(), Path::new(STATE_DIR))
        .await
        .unwrap()
        .missed_counts("publish", at(10, 0))
        .unwrap();
    assert_eq!(
        missed.values().sum::<u64>(),
        2,
        "11:15 and 11:30: {missed:?}"
    );
    assert!(out.ops > 40, "{} durable operations", out.ops);
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_any_durable_operation_repeats_no_step_loses_no_run_and_keeps_every_token() {
    let (_, world, unarmed) = script(None).await;
    let refreshes = lock(&world).refreshes;
    let n = unarmed.ops;
    let mut lost_before = Vec::new();
    for k in 1..=n {
        for at in [CrashAt::Before(k), CrashAt::After(k)] {
            let label = format!("{at:?} of {n}");
            let (env, world, out) = script(Some(at)).await;
            assert_eq!(out.crashes, 1, "{label}: the crash point was reached once");
            if out.answer_lost {
                assert!(
                    matches!(at, CrashAt::Before(_)),
                    "{label}: after a commit nothing is lost"
                );
                lost_before.push(k);
                // Everything else still holds up to the crash.
                assert!(lock(&world).repeats.is_empty(), "{label}");
                assert_eq!(lock(&world).spent_presented, 0, "{label}");
                // The next start says the answer was lost, before anything is presented.
                let env2 = env.clone();
                let db = Arc::new(Db::open(env2.clone(), Path::new(STATE_DIR)).await.unwrap());
                let manager = steadfast_core::token::TokenManager::new(
                    env2,
                    config().credentials[CREDENTIAL].clone(),
                    db,
                    true,
                );
                let _ = manager.access_token().await;
                assert!(
                    env.events_so_far()
                        .iter()
                        .any(|e| e.event == EventKind::TokenRefreshFailed
                            && e.detail
                                .as_deref()
                                .is_some_and(|d| d.contains("never kept"))),
                    "{label}: the lost answer was not reported"
                );
                continue;
            }
            check(&env, &world, &label).await;
        }
    }
    // The one window no client can close: one per refresh, just before its commit.
    assert_eq!(
        lost_before.len() as u32,
        refreshes,
        "answers lost at {lost_before:?}"
    );
    eprintln!(
        "crash points: {n} durable operations x before/after = {} crashes; {} lost an answer in flight ({lost_before:?})",
        2 * n,
        lost_before.len()
    );
}
