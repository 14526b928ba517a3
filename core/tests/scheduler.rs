//! The runner core end to end on the in-process test environment: jobs run through the
//! state machine, patterns hold together, and the same seed gives the same events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use steadfast_core::alert::{AlertKind, CollectAlerts};
use steadfast_core::config::{
    CatchUp, Config, HttpStep, JobConfig, Overlap, Patterns, RetryPolicy, RunnerSettings, Schedule,
    ScheduleConfig, ServiceConfig, StepConfig, StepKind, Template,
};
use steadfast_core::event::{Event, EventKind, Outcome, StateName};
use steadfast_core::scheduler::{Exit, Runner};
use steadfast_testkit::{TestEnv, serve};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

/// What the fake API saw.
#[derive(Debug, Default)]
struct Api {
    /// (path, idempotency key) of every request, in order.
    requests: Vec<(String, Option<String>)>,
    /// Side effects applied, by idempotency key (or path when there is none).
    effects: BTreeMap<String, u32>,
    /// Respond 503 to this many requests first.
    fail_first: u32,
    /// Hold every answer back this long.
    delay: Duration,
}

fn api(env: &TestEnv, host: &str, state: Arc<Mutex<Api>>) {
    env.parts().net.route(
        host,
        Arc::new(move |stream| {
            let state = state.clone();
            serve(
                stream,
                service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let post = req.method() == hyper::Method::POST;
                        let _ = req.into_body().collect().await;
                        let delay = state.lock().unwrap().delay;
                        tokio::time::sleep(delay).await;
                        let mut s = state.lock().unwrap();
                        s.requests.push((path.clone(), key.clone()));
                        if s.fail_first > 0 {
                            s.fail_first -= 1;
                            let resp = hyper::Response::builder()
                                .status(503)
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            return Ok::<_, Infallible>(resp);
                        }
                        if post {
                            let id = key.unwrap_or(path);
                            *s.effects.entry(id).or_default() += 1;
                        }
                        let body = Bytes::from(format!("{{\"id\": \"{}\"}}", s.requests.len()));
                        Ok(hyper::Response::new(Full::new(body)))
                    }
                }),
            );
        }),
    );
}

fn http_step(name: &str, method: &str, url: &str, service: &str) -> StepConfig {
    StepConfig {
        needs: None,
        name: name.to_string(),
        action: None,
        kind: StepKind::Http(HttpStep {
            method: method.parse().unwrap(),
            url: Template::parse(url).unwrap(),
            headers: Vec::new(),
            body: None,
            service: service.into(),
            credential: None,
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
        heartbeat_threshold: Duration::from_secs(every_min * 120),
        retry: None,
        steps,
    }
}

fn service(name: &str) -> (String, ServiceConfig) {
    (
        name.to_string(),
        ServiceConfig {
            name: name.to_string(),
            health_url: None,
            call_timeout: Duration::from_secs(10),
            breaker: Default::default(),
        },
    )
}

fn config(patterns: Patterns, jobs: Vec<JobConfig>, services: &[&str]) -> Config {
    Config {
        runner: RunnerSettings {
            state_dir: PathBuf::from("/state"),
            time_zone: chrono_tz::UTC,
            monitor_interval: Duration::from_secs(60),
            memory_warn_bytes: 1 << 30,
            memory_fatal_bytes: 2 << 30,
            shutdown_grace: Duration::from_secs(5),
            breaker_alert_after: Duration::from_secs(3600),
        },
        patterns,
        retry: RetryPolicy::default(),
        windows: BTreeMap::new(),
        services: services.iter().map(|s| service(s)).collect(),
        credentials: BTreeMap::new(),
        jobs,
    }
}

/// Runs the runner for `for_how_long` of paused time, then shuts it down.
async fn run_for(env: &TestEnv, cfg: Config, for_how_long: Duration) -> (Exit, Arc<CollectAlerts>) {
    let alerts = Arc::new(CollectAlerts::default());
    let runner = Runner::new(env.clone(), cfg, alerts.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(runner.run(rx));
    tokio::time::sleep(for_how_long).await;
    let _ = tx.send(true);
    (handle.await.unwrap(), alerts)
}

fn kinds(events: &[Event], job: &str, kind: EventKind) -> usize {
    events
        .iter()
        .filter(|e| e.event == kind && e.job.as_deref() == Some(job))
        .count()
}

fn transitions(events: &[Event], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == EventKind::Transition && e.job.as_deref() == Some(job))
        .map(|e| {
            format!(
                "{}->{}",
                e.from.map_or("?", StateName::as_str),
                e.to.map_or("?", StateName::as_str)
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_on_schedule_through_the_state_machine() {
    let env = TestEnv::new(start(), 1);
    let state = Arc::new(Mutex::new(Api::default()));
    api(&env, "api.test", state.clone());
    let steps = vec![
        http_step("fetch", "GET", "http://api.test/items", "api"),
        http_step(
            "publish",
            "POST",
            "http://api.test/items/{{fetch.id}}",
            "api",
        ),
    ];
    let cfg = config(Patterns::ALL, vec![job("blog", 15, steps)], &["api"]);
    let (exit, alerts) = run_for(&env, cfg, Duration::from_secs(3600 + 60)).await;
    assert_eq!(exit, Exit::Shutdown);
    let events = env.events_so_far();
    // Due at 10:15, 10:30, 10:45, 11:00 within the hour and a minute.
    assert_eq!(kinds(&events, "blog", EventKind::RunFinished), 4);
    let t = transitions(&events, "blog");
    assert_eq!(
        &t[..4],
        [
            "idle->running",
            "running->success",
            "success->cooldown",
            "cooldown->idle"
        ]
    );
    let s = state.lock().unwrap();
    assert_eq!(s.requests.len(), 8);
    // The second step used the first step's output.
    assert_eq!(s.requests[1].0, "/items/1");
    assert!(alerts.0.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_events() {
    async fn once(seed: u64) -> Vec<String> {
        let env = TestEnv::new(start(), seed);
        let state = Arc::new(Mutex::new(Api {
            fail_first: 3,
            ..Api::default()
        }));
        api(&env, "api.test", state);
        let steps = vec![http_step("fetch", "GET", "http://api.test/x", "api")];
        let cfg = config(
            Patterns::ALL,
            vec![job("a", 15, steps.clone()), job("b", 30, steps)],
            &["api"],
        );
        run_for(&env, cfg, Duration::from_secs(7200)).await;
        env.events_so_far()
            .iter()
            .map(Event::to_json_line)
            .collect()
    }
    let a = once(7).await;
    let b = once(7).await;
    assert!(a.len() > 10);
    assert_eq!(a, b);
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_turn_transient_failures_into_success() {
    let env = TestEnv::new(start(), 3);
    let state = Arc::new(Mutex::new(Api {
        fail_first: 2,
        ..Api::default()
    }));
    api(&env, "api.test", state.clone());
    let steps = vec![http_step("fetch", "GET", "http://api.test/x", "api")];
    let cfg = config(Patterns::ALL, vec![job("poll", 15, steps)], &["api"]);
    run_for(&env, cfg, Duration::from_secs(16 * 60)).await;
    let events = env.events_so_far();
    assert_eq!(kinds(&events, "poll", EventKind::RetryScheduled), 2);
    let finished: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::RunFinished)
        .map(|e| e.outcome.map_or("none", Outcome::as_str))
        .collect();
    assert_eq!(finished, ["succeeded"]);
    // Every retry carries its chosen delay.
    assert!(
        events
            .iter()
            .filter(|e| e.event == EventKind::RetryScheduled)
            .all(|e| e.delay_ms.is_some() && e.attempt.is_some())
    );
}

#[tokio::test(start_paused = true)]
async fn a_down_service_degrades_the_run_and_other_steps_continue() {
    let env = TestEnv::new(start(), 4);
    let good = Arc::new(Mutex::new(Api::default()));
    api(&env, "good.test", good.clone());
    // `down.test` has no route: every call fails DNS. The email step does not need
    // the social one (`needs = []`).
    let mut email = http_step("email", "GET", "http://good.test/inbox", "good");
    email.needs = Some(Vec::new());
    let steps = vec![
        http_step("social", "POST", "http://down.test/post", "down"),
        email,
    ];
    let cfg = config(
        Patterns::ALL,
        vec![job("daily", 15, steps)],
        &["down", "good"],
    );
    run_for(&env, cfg, Duration::from_secs(26 * 60)).await;
    let events = env.events_so_far();
    let outcome: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::RunFinished)
        .map(|e| e.outcome.map_or("none", Outcome::as_str))
        .collect();
    // The run waits out the breaker's first cooldown within its deadline; the probe
    // fails and the next cooldown ends after the deadline, so the social step is
    // deferred to a later run (the breaker's gate) and the email step runs meanwhile.
    assert_eq!(outcome, ["deferred"]);
    assert_eq!(good.lock().unwrap().requests.len(), 1);

    // Naive: the same failure fails the whole run and the good step never runs.
    let env = TestEnv::new(start(), 4);
    let good = Arc::new(Mutex::new(Api::default()));
    api(&env, "good.test", good.clone());
    let steps = vec![
        http_step("social", "POST", "http://down.test/post", "down"),
        http_step("email", "GET", "http://good.test/inbox", "good"),
    ];
    let cfg = config(
        Patterns::NAIVE,
        vec![job("daily", 15, steps)],
        &["down", "good"],
    );
    run_for(&env, cfg, Duration::from_secs(16 * 60)).await;
    let outcome: Vec<_> = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::RunFinished)
        .map(|e| e.outcome.map_or("none", Outcome::as_str))
        .collect();
    assert_eq!(outcome, ["failed"]);
    assert_eq!(good.lock().unwrap().requests.len(), 0);
}

/// A service down for hours keeps its breaker open through failed probes; past
/// `breaker_alert_after` a human hears of it once, while the other services' work goes
/// on. Without the breaker pattern there is no breaker to be stuck and no alert.
#[tokio::test(start_paused = true)]
async fn a_breaker_stuck_open_past_the_limit_raises_one_alert() {
    async fn scenario(patterns: Patterns) -> Vec<AlertKind> {
        let env = TestEnv::new(start(), 5);
        let good = Arc::new(Mutex::new(Api::default()));
        api(&env, "good.test", good);
        let steps = vec![
            http_step("social", "POST", "http://down.test/post", "down"),
            http_step("email", "GET", "http://good.test/inbox", "good"),
        ];
        let cfg = config(patterns, vec![job("daily", 15, steps)], &["down", "good"]);
        let (_, alerts) = run_for(&env, cfg, Duration::from_secs(4 * 3600)).await;
        alerts.0.lock().unwrap().iter().map(|a| a.kind).collect()
    }
    let kinds = scenario(Patterns::ALL).await;
    let stuck = kinds
        .iter()
        .filter(|k| **k == AlertKind::BreakerStuck)
        .count();
    assert_eq!(stuck, 1, "{kinds:?}");
    let without = scenario(Patterns {
        breakers: false,
        ..Patterns::ALL
    })
    .await;
    assert!(!without.contains(&AlertKind::BreakerStuck), "{without:?}");
}

#[tokio::test(start_paused = true)]
async fn a_fatal_error_stops_only_its_job_with_isolation_and_everything_without() {
    async fn scenario(patterns: Patterns) -> (Exit, usize, Vec<AlertKind>) {
        let env = TestEnv::new(start(), 5);
        let state = Arc::new(Mutex::new(Api::default()));
        api(&env, "api.test", state.clone());
        // The disk fills up after the runner started: the first journal write of a run
        // fails, which is fatal.
        let disk = env.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            disk.parts().fs.set_full(true);
            disk.parts().db.set_full(true);
        });
        let mut writer = job(
            "writer",
            15,
            vec![http_step("w", "POST", "http://api.test/w", "api")],
        );
        // The reader's step writes no checkpoint when checkpoints are off, so give the
        // naive profile a heartbeat write to fail on too: both touch the disk.
        writer.deadline = Duration::from_secs(300);
        let reader = job(
            "reader",
            15,
            vec![http_step("r", "GET", "http://api.test/r", "api")],
        );
        let cfg = config(patterns, vec![writer, reader], &["api"]);
        let (exit, alerts) = run_for(&env, cfg, Duration::from_secs(3600)).await;
        let reader_calls = state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(p, _)| p == "/r")
            .count();
        let kinds = alerts.0.lock().unwrap().iter().map(|a| a.kind).collect();
        (exit, reader_calls, kinds)
    }
    let (exit, _reader_calls, alerts) = scenario(Patterns::ALL).await;
    assert_eq!(exit, Exit::Shutdown);
    assert!(alerts.contains(&AlertKind::Fatal), "{alerts:?}");
    let (exit, reader_calls, _) = scenario(Patterns::NAIVE).await;
    assert!(matches!(exit, Exit::FatalStop { .. }), "{exit:?}");
    assert!(
        reader_calls <= 1,
        "the naive runner kept going: {reader_calls}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_run_resumes_from_the_checkpoint_without_repeating_side_effects() {
    let env = TestEnv::new(start(), 6);
    let state = Arc::new(Mutex::new(Api::default()));
    api(&env, "api.test", state.clone());
    // `slow.test` answers after 5 minutes: the crash lands while step 2 waits.
    let slow = Arc::new(Mutex::new(Api::default()));
    api(&env, "slow.test", slow.clone());
    let steps = vec![
        http_step("draft", "POST", "http://api.test/draft", "api"),
        http_step("render", "GET", "http://slow.test/render", "slow"),
        http_step(
            "publish",
            "POST",
            "http://api.test/publish/{{draft.id}}",
            "api",
        ),
    ];
    let mut cfg = config(
        Patterns::ALL,
        vec![job("blog", 30, steps)],
        &["api", "slow"],
    );
    if let Some(s) = cfg.services.get_mut("slow") {
        s.call_timeout = Duration::from_secs(600);
    }
    slow.lock().unwrap().delay = Duration::from_secs(300);
    // Run until the first run has done `draft` and waits on `render`, then "crash".
    let alerts = Arc::new(CollectAlerts::default());
    let runner = Runner::new(env.clone(), cfg.clone(), alerts.clone())
        .await
        .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(runner.run(rx));
    tokio::time::sleep(Duration::from_secs(31 * 60)).await;
    handle.abort();
    let _ = handle.await;
    env.parts().fs.crash();
    slow.lock().unwrap().delay = Duration::ZERO;
    let drafts_before = state.lock().unwrap().effects.len();
    assert_eq!(drafts_before, 1, "draft applied once before the crash");
    // Restart: the run resumes after `draft` and finishes.
    let (exit, _) = run_for(&env, cfg, Duration::from_secs(60)).await;
    assert_eq!(exit, Exit::Shutdown);
    let events = env.events_so_far();
    assert!(kinds(&events, "blog", EventKind::CheckpointResumed) >= 1);
    assert!(kinds(&events, "blog", EventKind::StepReplayed) >= 1);
    let s = state.lock().unwrap();
    // Draft once, publish once: no side effect repeated.
    assert_eq!(s.effects.len(), 2, "{:?}", s.effects);
    assert!(s.effects.values().all(|n| *n == 1));
    assert!(s.requests.iter().any(|(p, _)| p == "/publish/1"));
}

#[tokio::test(start_paused = true)]
async fn command_steps_get_their_environment_and_their_outputs_feed_later_steps() {
    use steadfast_core::config::CommandStep;
    use steadfast_core::env::CommandOutput;
    let env = TestEnv::new(start(), 9);
    let out = |code: i32, stdout: &str| CommandOutput {
        code: Some(code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
        timed_out: false,
    };
    env.parts()
        .spawner
        .script("render", out(0, "rendering\n{\"file\": \"v42.mp4\"}\n"));
    env.parts().spawner.script("upload", out(0, ""));
    let command = |name: &str, argv: &[&str]| StepConfig {
        needs: None,
        name: name.to_string(),
        action: None,
        kind: StepKind::Command(CommandStep {
            argv: argv.iter().map(|a| Template::parse(a).unwrap()).collect(),
            cwd: None,
            env: vec![("MODE".into(), "test".into())],
            timeout: Duration::from_secs(60),
            credentials: Vec::new(),
        }),
    };
    let steps = vec![
        command("render", &["render"]),
        command("upload", &["upload", "{{render.file}}"]),
    ];
    let cfg = config(Patterns::ALL, vec![job("video", 15, steps)], &[]);
    run_for(&env, cfg, Duration::from_secs(16 * 60)).await;
    let runs = env.parts().spawner.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[1].argv,
        ["upload", "v42.mp4"],
        "the output fed the next step"
    );
    let vars: BTreeMap<&str, &str> = runs[0]
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(vars["MODE"], "test");
    assert_eq!(vars["STEADFAST_JOB"], "video");
    assert_eq!(vars["STEADFAST_RUN_ID"], "video-20260302T101500Z");
    assert_eq!(vars["STEADFAST_IDEMPOTENCY_KEY"].len(), 32);
    assert!(vars["STEADFAST_CHECKPOINT"].starts_with("/state/checkpoints/video.render."));
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_catches_up_the_latest_slot_instead_of_a_burst() {
    let env = TestEnv::new(start(), 3);
    let state = Arc::new(Mutex::new(Api::default()));
    api(&env, "api.test", state.clone());
    let steps = vec![http_step("poll", "GET", "http://api.test/poll", "api")];
    let cfg = config(Patterns::ALL, vec![job("mail", 15, steps)], &["api"]);
    // The machine sleeps 3 hours at 10:20: the wall clock jumps, monotonic time does
    // not (a Mac's sleep, seen from the process).
    let sleeper = env.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        sleeper.parts().clock.step_wall(chrono::Duration::hours(3));
    });
    run_for(&env, cfg, Duration::from_secs(30 * 60)).await;
    let events = env.events_so_far();
    let started: Vec<String> = events
        .iter()
        .filter(|e| e.event == EventKind::RunStarted)
        .filter_map(|e| e.run_id.as_ref().map(ToString::to_string))
        .collect();
    // 10:15 before the sleep; on waking at 13:20 the latest passed slot (13:15) once,
    // not the eleven in between back to back; then 13:30 on time.
    assert_eq!(
        started,
        [
            "mail-20260302T101500Z",
            "mail-20260302T131500Z",
            "mail-20260302T133000Z"
        ],
    );
    let db = steadfast_core::db::Db::open(env.clone(), std::path::Path::new("/state"))
        .await
        .unwrap();
    let missed = db.missed_counts("mail", start()).unwrap();
    assert_eq!(
        missed.get(&steadfast_core::db::MissReason::Asleep),
        Some(&11),
        "10:30 .. 13:00 recorded missed: {missed:?}"
    );
}

/// Issue 10: the dedup window of alerts lived in memory, so a restart loop paged a human
/// once per restart for the same stop. With a window (the daemon's `dedup_window`) the
/// store remembers what was sent.
#[tokio::test(start_paused = true)]
async fn a_restart_loop_does_not_repeat_a_fatal_alert_within_the_dedup_window() {
    async fn three_boots(window: Option<Duration>) -> Vec<AlertKind> {
        let env = TestEnv::new(start(), 8);
        // 501: the server does not implement the call, which no retry fixes (fatal).
        env.parts().net.route(
            "broken.test",
            Arc::new(|stream| {
                serve(
                    stream,
                    service_fn(|_req| async {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(501)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }),
                );
            }),
        );
        let steps = vec![http_step("get", "GET", "http://broken.test/x", "broken")];
        let mut sync = job("sync", 15, steps);
        // Only the stops alert here (overdue has its own episodes).
        sync.heartbeat_threshold = Duration::from_secs(24 * 3600);
        let cfg = config(Patterns::ALL, vec![sync], &["broken"]);
        let alerts = Arc::new(CollectAlerts::default());
        // Three processes of 20 minutes each; each one's first slot stops the job.
        for _ in 0..3 {
            let mut runner = Runner::new(env.clone(), cfg.clone(), alerts.clone())
                .await
                .unwrap();
            if let Some(window) = window {
                runner = runner.dedup_alerts(window);
            }
            let (tx, rx) = tokio::sync::watch::channel(false);
            let handle = tokio::spawn(runner.run(rx));
            tokio::time::sleep(Duration::from_secs(20 * 60)).await;
            let _ = tx.send(true);
            handle.await.unwrap();
        }
        alerts.0.lock().unwrap().iter().map(|a| a.kind).collect()
    }
    let without = three_boots(None).await;
    assert_eq!(without, [AlertKind::Fatal; 3], "every stop alerts");
    let with = three_boots(Some(Duration::from_secs(3600))).await;
    assert_eq!(
        with,
        [AlertKind::Fatal],
        "once within the hour, across restarts"
    );
}

/// Issue 10: `kill -9` left step processes running and the restarted runner started the
/// same step beside its orphan. A command step's process group is journaled before its
/// program runs; the next start stops it (with the step's marker, so a reused group id
/// is left alone) before any step runs, then forgets it; a finished run's progress
/// files are swept.
#[tokio::test(start_paused = true)]
async fn a_crash_mid_command_leaves_a_journaled_group_the_next_start_stops_first() {
    use steadfast_core::config::CommandStep;
    use steadfast_core::env::FileSystem as _;
    use steadfast_testkit::ScriptedCommand;
    let env = TestEnv::new(start(), 12);
    env.parts().spawner.script(
        "render",
        ScriptedCommand::exits(0, "").taking(Duration::from_secs(5 * 60)),
    );
    let steps = vec![StepConfig {
        name: "render".to_string(),
        action: None,
        kind: StepKind::Command(CommandStep {
            argv: vec![Template::parse("render").unwrap()],
            cwd: None,
            env: Vec::new(),
            timeout: Duration::from_secs(600),
            credentials: Vec::new(),
        }),
        needs: None,
    }];
    let cfg = config(Patterns::ALL, vec![job("video", 30, steps)], &[]);
    let runner = Runner::new(env.clone(), cfg.clone(), Arc::new(CollectAlerts::default()))
        .await
        .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(runner.run(rx));
    // The 10:30 run is inside `render` at 10:32.
    tokio::time::sleep(Duration::from_secs(32 * 60)).await;
    handle.abort();
    let _ = handle.await;
    let run = "video-20260302T103000Z";
    let progress = PathBuf::from(format!("/state/checkpoints/video.render.{run}.script"));
    // The script kept its progress (durably, as a careful script does).
    let fs = &env.parts().fs;
    fs.create_dir_all(std::path::Path::new("/state/checkpoints"))
        .await
        .unwrap();
    fs.write(&progress, b"frame 120").await.unwrap();
    fs.sync(&progress).await.unwrap();
    fs.sync_dir(std::path::Path::new("/state/checkpoints"))
        .await
        .unwrap();
    env.parts().fs.crash();
    let db = steadfast_core::db::Db::open(env.clone(), std::path::Path::new("/state"))
        .await
        .unwrap();
    let left = db.processes().unwrap();
    assert_eq!(
        left.len(),
        1,
        "the running step's group is journaled: {left:?}"
    );
    assert_eq!(left[0].run.to_string(), run);
    let pgid = left[0].pgid;
    drop(db);
    assert!(env.parts().spawner.stopped_groups().is_empty());

    run_for(&env, cfg, Duration::from_secs(10 * 60)).await;
    let stopped = env.parts().spawner.stopped_groups();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].pgid, pgid);
    assert_eq!(stopped[0].marker, format!("STEADFAST_RUN_ID={run}"));
    let events = env.events_so_far();
    let reaped = events
        .iter()
        .position(|e| e.event == EventKind::ProcessReaped);
    let resumed = events.iter().rposition(|e| {
        e.event == EventKind::RunStarted
            && e.run_id.as_ref().map(ToString::to_string).as_deref() == Some(run)
    });
    assert!(
        matches!((reaped, resumed), (Some(r), Some(s)) if r < s),
        "the left group is stopped before the run resumes: {reaped:?} {resumed:?}"
    );
    assert_eq!(kinds(&events, "video", EventKind::RunFinished), 1);
    let db = steadfast_core::db::Db::open(env.clone(), std::path::Path::new("/state"))
        .await
        .unwrap();
    assert!(
        db.processes().unwrap().is_empty(),
        "ended groups are forgotten"
    );
    let swept = env.parts().fs.read(&progress).await;
    assert!(swept.is_err(), "the finished run's progress file is swept");
}

/// Issue 13: a Mac sleeps; the same process wakes with its wall clock hours ahead and
/// its monotonic clock where it was.
mod sleep_and_wake {
    use super::*;
    use steadfast_core::config::ClockMode;
    use steadfast_core::db::{Db, MissReason};
    use steadfast_testkit::TestEnv;

    /// The wall clock of `env` jumps by `by` after `after` of monotonic time.
    fn jump_at(env: &TestEnv, after: Duration, by: chrono::Duration) {
        let clock = env.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            clock.parts().clock.step_wall(by);
        });
    }

    fn started(events: &[Event], job: &str) -> Vec<(String, DateTime<Utc>)> {
        events
            .iter()
            .filter(|e| e.event == EventKind::RunStarted && e.job.as_deref() == Some(job))
            .filter_map(|e| Some((format!("{}#{}", e.run_id.as_ref()?, e.attempt?), e.at)))
            .collect()
    }

    fn wakes(events: &[Event]) -> Vec<i64> {
        events
            .iter()
            .filter(|e| e.event == EventKind::Wake)
            .filter_map(|e| e.jump_ms)
            .collect()
    }

    async fn missed(env: &TestEnv, job: &str) -> BTreeMap<MissReason, u64> {
        let db = Db::open(env.clone(), std::path::Path::new("/state"))
            .await
            .unwrap();
        db.missed_counts(job, start() - chrono::Duration::days(1))
            .unwrap()
    }

    /// A 3-hour sleep at 10:20 of a 15-minute job, with `catch_up` and `clock`.
    async fn slept(catch_up: CatchUp, clock: ClockMode) -> (TestEnv, Vec<Event>) {
        slept_telling(catch_up, clock, true).await
    }

    /// [`slept`], with the job's `alert_missed`.
    async fn slept_telling(
        catch_up: CatchUp,
        clock: ClockMode,
        alert_missed: bool,
    ) -> (TestEnv, Vec<Event>) {
        let env = TestEnv::new(start(), 13);
        let state = Arc::new(Mutex::new(Api::default()));
        api(&env, "api.test", state);
        let mut mail = job(
            "mail",
            15,
            vec![http_step("poll", "GET", "http://api.test/poll", "api")],
        );
        mail.catch_up = catch_up;
        mail.alert_missed = alert_missed;
        let patterns = Patterns {
            clock,
            ..Patterns::ALL
        };
        let cfg = config(patterns, vec![mail], &["api"]);
        jump_at(
            &env,
            Duration::from_secs(20 * 60),
            chrono::Duration::hours(3),
        );
        run_for(&env, cfg, Duration::from_secs(35 * 60)).await;
        let events = env.events_so_far();
        (env, events)
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_logs_one_wake_and_sends_the_slots_it_slept_through_to_the_policy() {
        // latest: one catch-up (13:15), eleven journaled missed, then 13:30 on time.
        let (env, events) = slept(CatchUp::Latest, ClockMode::Wall).await;
        assert_eq!(wakes(&events), [3 * 3600 * 1000], "exactly one wake event");
        let ids: Vec<String> = started(&events, "mail").into_iter().map(|s| s.0).collect();
        assert_eq!(
            ids,
            [
                "mail-20260302T101500Z#1",
                "mail-20260302T131500Z#1",
                "mail-20260302T133000Z#1"
            ]
        );
        assert_eq!(missed(&env, "mail").await[&MissReason::Asleep], 11);

        // all: every slot inside the window runs, each once, oldest first.
        let (env, events) = slept(CatchUp::All, ClockMode::Wall).await;
        let ids: Vec<String> = started(&events, "mail").into_iter().map(|s| s.0).collect();
        assert_eq!(ids.len(), 1 + 12 + 1, "{ids:?}");
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique, ids);
        assert!(missed(&env, "mail").await.is_empty());

        // none: nothing runs until 13:30; the twelve are journaled missed.
        let (env, events) = slept(CatchUp::None, ClockMode::Wall).await;
        let ids: Vec<String> = started(&events, "mail").into_iter().map(|s| s.0).collect();
        assert_eq!(ids, ["mail-20260302T101500Z#1", "mail-20260302T133000Z#1"]);
        assert_eq!(missed(&env, "mail").await[&MissReason::Asleep], 12);
    }

    /// The slots a wake leaves unrun are said once (`slots_missed`), unless the job
    /// turned that off.
    #[tokio::test(start_paused = true)]
    async fn the_slots_a_wake_leaves_unrun_raise_one_alert() {
        let told = |events: &[Event]| -> Vec<String> {
            events
                .iter()
                .filter(|e| e.event == EventKind::Alert && e.job.as_deref() == Some("mail"))
                .filter_map(|e| e.detail.clone())
                .collect()
        };
        let (_, events) = slept_telling(CatchUp::Latest, ClockMode::Wall, true).await;
        let alerts = told(&events);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(
            alerts[0].starts_with("11 slot(s) from 2026-03-02T10:30:00Z to 2026-03-02T13:00:00Z missed while the machine slept"),
            "{alerts:?}"
        );
        let (_, events) = slept_telling(CatchUp::Latest, ClockMode::Wall, false).await;
        assert_eq!(told(&events), Vec::<String>::new());
    }

    /// The naive runner waits on the monotonic clock: on wake it runs the slot it was
    /// waiting for three hours late, then every slot it slept through back to back.
    #[tokio::test(start_paused = true)]
    async fn a_runner_that_keeps_its_schedule_in_monotonic_time_bursts_on_wake() {
        let (env, events) = slept(CatchUp::Latest, ClockMode::Monotonic).await;
        assert!(wakes(&events).is_empty(), "the naive runner sees no wake");
        let runs = started(&events, "mail");
        let burst = runs
            .iter()
            .filter(|(_, at)| *at >= start() + chrono::Duration::hours(3))
            .filter(|(_, at)| *at < start() + chrono::Duration::minutes(3 * 60 + 31))
            .count();
        // 10:30 .. 13:30: thirteen runs within a minute of waking.
        assert!(burst >= 13, "{runs:?}");
        assert!(missed(&env, "mail").await.is_empty());
    }

    /// The wall clock steps back an hour (NTP correcting a clock that ran ahead) right
    /// after the 10:15 run, and again after a restart: no slot ever runs twice.
    #[tokio::test(start_paused = true)]
    async fn a_backward_clock_step_never_runs_a_slot_twice() {
        let env = TestEnv::new(start(), 14);
        let state = Arc::new(Mutex::new(Api::default()));
        api(&env, "api.test", state.clone());
        let steps = vec![http_step("poll", "POST", "http://api.test/poll", "api")];
        let cfg = config(Patterns::ALL, vec![job("mail", 15, steps)], &["api"]);
        jump_at(
            &env,
            Duration::from_secs(16 * 60),
            chrono::Duration::hours(-1),
        );
        run_for(&env, cfg.clone(), Duration::from_secs(2 * 3600)).await;
        // A restart after a second step back.
        env.parts().clock.step_wall(chrono::Duration::hours(-1));
        run_for(&env, cfg, Duration::from_secs(3 * 3600)).await;
        let events = env.events_so_far();
        let ids: Vec<String> = started(&events, "mail").into_iter().map(|s| s.0).collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "a slot ran twice: {ids:?}");
        assert!(ids.len() >= 4, "{ids:?}");
        let effects = &state.lock().unwrap().effects;
        assert!(effects.values().all(|n| *n == 1), "{effects:?}");
        let jumps = wakes(&events);
        assert_eq!(jumps, [-3600 * 1000], "the step in the running process");
    }

    /// A run in progress when the machine sleeps: its deadline is a monotonic budget,
    /// so the retry it needs on wake is not refused as past the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_sleep_during_a_run_does_not_spend_its_deadline() {
        async fn scenario(clock: ClockMode) -> Vec<String> {
            let env = TestEnv::new(start(), 15);
            let slow = Arc::new(Mutex::new(Api {
                delay: Duration::from_secs(300),
                ..Api::default()
            }));
            api(&env, "slow.test", slow);
            let flaky = Arc::new(Mutex::new(Api {
                fail_first: 1,
                ..Api::default()
            }));
            api(&env, "api.test", flaky);
            let steps = vec![
                http_step("render", "GET", "http://slow.test/render", "slow"),
                http_step("publish", "GET", "http://api.test/publish", "api"),
            ];
            let mut cfg = config(
                Patterns {
                    clock,
                    ..Patterns::ALL
                },
                vec![job("video", 30, steps)],
                &["slow", "api"],
            );
            if let Some(s) = cfg.services.get_mut("slow") {
                s.call_timeout = Duration::from_secs(600);
            }
            // Asleep for two hours at 10:32, while `render` waits for its answer.
            jump_at(
                &env,
                Duration::from_secs(32 * 60),
                chrono::Duration::hours(2),
            );
            run_for(&env, cfg, Duration::from_secs(40 * 60)).await;
            env.events_so_far()
                .iter()
                .filter(|e| e.event == EventKind::RunFinished)
                .filter(|e| {
                    e.run_id
                        .as_ref()
                        .is_some_and(|r| r.to_string().ends_with("T103000Z"))
                })
                .map(|e| e.outcome.map_or("none", Outcome::as_str).to_string())
                .collect()
        }
        assert_eq!(scenario(ClockMode::Wall).await, ["succeeded"]);
        assert_eq!(
            scenario(ClockMode::Monotonic).await,
            ["degraded"],
            "a wall-clock deadline is spent by the sleep: the retry is refused, the step skipped"
        );
    }

    /// After a 3-hour sleep only the job that really missed something is overdue: the
    /// healthy one catches up before the monitor judges it.
    #[tokio::test(start_paused = true)]
    async fn on_wake_only_a_job_that_really_missed_something_is_alerted_overdue() {
        async fn scenario(clock: ClockMode) -> Vec<(AlertKind, Option<String>)> {
            let env = TestEnv::new(start(), 16);
            let good = Arc::new(Mutex::new(Api::default()));
            api(&env, "good.test", good);
            let bad = Arc::new(Mutex::new(Api::default()));
            api(&env, "bad.test", bad.clone());
            let healthy = job(
                "healthy",
                15,
                vec![http_step("a", "GET", "http://good.test/a", "good")],
            );
            let broken = job(
                "broken",
                15,
                vec![http_step("b", "GET", "http://bad.test/b", "bad")],
            );
            // No service gate: with one, the broken job's runs are deferred behind the
            // open breaker (excused) rather than failed; this test is about the wake.
            let mut cfg = config(
                Patterns {
                    clock,
                    gates: false,
                    ..Patterns::ALL
                },
                vec![healthy, broken],
                &["good", "bad"],
            );
            // Looks at 10:20:00 and 10:20:50; the wake at 10:20:30 is seen by the
            // monitor before the job tasks (their waits end on whole minutes).
            cfg.runner.monitor_interval = Duration::from_secs(50);
            let sleeper = env.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(20 * 60 + 30)).await;
                sleeper.parts().clock.step_wall(chrono::Duration::hours(3));
                // From the wake on, `bad.test` answers 503 to everything.
                bad.lock().unwrap().fail_first = u32::MAX;
            });
            let (_, alerts) = run_for(&env, cfg, Duration::from_secs(40 * 60)).await;
            alerts
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|a| (a.kind, a.job.clone()))
                .collect()
        }
        let overdue = |alerts: &[(AlertKind, Option<String>)]| -> Vec<String> {
            alerts
                .iter()
                .filter(|(k, _)| *k == AlertKind::Overdue)
                .filter_map(|(_, j)| j.clone())
                .collect()
        };
        let ours = scenario(ClockMode::Wall).await;
        assert_eq!(overdue(&ours), ["broken"], "{ours:?}");
        let naive = scenario(ClockMode::Monotonic).await;
        assert!(
            overdue(&naive).contains(&"healthy".to_string()),
            "the naive monitor pages for a healthy job on wake: {naive:?}"
        );
    }
}

/// Issue 10/11: a job held behind a service's gate for hours. Each slot resumes the
/// deferred run (no call inside the Retry-After), and the slot it took is journaled
/// missed `gate`, never silently absorbed; a gate wait is not a heartbeat, so the job
/// is overdue once its threshold passes (a wait for a window would be by design).
#[tokio::test(start_paused = true)]
async fn a_job_held_at_a_gate_journals_its_slots_and_becomes_overdue() {
    let env = TestEnv::new(start(), 21);
    let calls = Arc::new(Mutex::new(0u32));
    let seen = calls.clone();
    env.parts().net.route(
        "held.test",
        Arc::new(move |stream| {
            let seen = seen.clone();
            serve(
                stream,
                service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        *seen.lock().unwrap() += 1;
                        let resp = hyper::Response::builder()
                            .status(429)
                            .header("retry-after", "10800")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                }),
            );
        }),
    );
    let steps = vec![http_step("push", "POST", "http://held.test/push", "held")];
    let cfg = config(Patterns::ALL, vec![job("push", 15, steps)], &["held"]);
    let (_, alerts) = run_for(&env, cfg, Duration::from_secs(2 * 3600 + 60)).await;
    assert_eq!(*calls.lock().unwrap(), 1, "a call inside the Retry-After");
    let db = steadfast_core::db::Db::open(env.clone(), std::path::Path::new("/state"))
        .await
        .unwrap();
    let missed = db
        .missed_counts("push", start() - chrono::Duration::days(1))
        .unwrap();
    // The first slot is 10:15; 10:30 to 12:00, seven slots, each go to the 10:15 run,
    // which is still held.
    assert_eq!(
        missed.get(&steadfast_core::db::MissReason::Gate),
        Some(&7),
        "{missed:?}"
    );
    let overdue: Vec<_> = alerts
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.kind == AlertKind::Overdue)
        .map(|a| (a.at, a.message.clone()))
        .collect();
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert!(
        overdue[0].1.contains("takes no calls before"),
        "{overdue:?}"
    );
    // The state machine says what held the run, not "its time window".
    let said: Vec<String> = env
        .events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::Transition && e.job.as_deref() == Some("push"))
        .filter_map(|e| e.detail.clone())
        .filter(|d| d.contains("deferred"))
        .collect();
    assert!(!said.is_empty());
    assert!(
        said.iter().all(|d| d.contains("takes no calls before")),
        "{said:?}"
    );
}
