//! The simulated world end to end: a client on the runner host talks through
//! `steadfast_core::http::send` and the `SimEnv` to the in-host services, under faults.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sim::World;
use sim::env::SimEnv;
use sim::faults::{Fault, MemoryModel};
use sim::services::{ApiService, OAuthConfig, OAuthServer};
use steadfast_core::config::Url;
use steadfast_core::env::{Env, FileSystem, MemoryProbe, Rng};
use steadfast_core::event::{Event, EventKind};
use steadfast_core::http::{HttpError, Request, Response, send};
use steadfast_core::taxonomy::FailureKind;

const TICK: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("valid test time")
        .with_timezone(&Utc)
}

/// A world with `auth.sim` (rotating, 2-minute tokens) and `api.sim` requiring them.
fn world(seed: u64, epoch: &str) -> (World, OAuthServer, ApiService) {
    let world = World::new(seed, at(epoch)).with_zone(chrono_tz::Europe::Berlin);
    let oauth = world.add_oauth(
        "auth.sim",
        OAuthConfig {
            expires_in: Duration::from_secs(120),
            rotate_refresh_tokens: true,
            reuse_grace: Duration::ZERO,
        },
    );
    oauth.add_refresh_token("c1", "rt-initial");
    let api = world.add_api(sim::services::ApiConfig {
        auth: Some(oauth.clone()),
        latency: Duration::from_millis(200),
        ..world.api_config("api.sim")
    });
    (world, oauth, api)
}

/// Runs `client` as the only software of host `runner` until it finishes.
fn run_client<F, Fut>(world: &World, sim_duration: Duration, client: F)
where
    F: FnOnce(SimEnv) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut sim = world.turmoil_builder(TICK, sim_duration).build();
    let w = world.clone();
    sim.client("runner", async move {
        client(w.env()).await;
        Ok(())
    });
    sim.run().expect("simulation completes");
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("valid test url")
}

async fn call(env: &SimEnv, req: Request) -> Result<Response, HttpError> {
    send(env.connector(), &req, TIMEOUT).await
}

async fn token(env: &SimEnv, refresh: &str) -> (String, String) {
    let req = Request::new(http::Method::POST, url("https://auth.sim/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id=c1"
        ));
    let resp = call(env, req).await.expect("token endpoint answers");
    assert_eq!(resp.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    let field = |k: &str| body[k].as_str().expect("string field").to_string();
    (field("access_token"), field("refresh_token"))
}

fn get(path: &str, bearer: &str) -> Request {
    Request::new(http::Method::GET, url(&format!("https://api.sim{path}")))
        .header("authorization", format!("Bearer {bearer}"))
}

fn post(path: &str, bearer: &str) -> Request {
    Request::new(http::Method::POST, url(&format!("https://api.sim{path}")))
        .header("authorization", format!("Bearer {bearer}"))
        .body("{\"title\":\"hello\"}")
}

#[test]
fn tokens_are_issued_used_and_expire_into_counted_401s() {
    let (world, oauth, api) = world(1, "2024-06-01T08:00:00Z");
    let o = oauth.clone();
    run_client(&world, Duration::from_secs(3600), move |env| async move {
        let (access, rotated) = token(&env, "rt-initial").await;
        let ok = call(&env, get("/items", &access)).await.expect("answer");
        assert_eq!(ok.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&ok.body).expect("json");
        assert_eq!(body["ok"], true, "JSON-pointer friendly body: {body}");

        tokio::time::sleep(Duration::from_secs(150)).await;
        let expired = call(&env, get("/items", &access)).await.expect("answer");
        assert_eq!(expired.status, 401);
        assert_eq!(&expired.body[..], b"{\"error\":\"token_expired\"}");

        // The rotated-out refresh token is dead; the new one works.
        let stale = Request::new(http::Method::POST, url("https://auth.sim/token"))
            .body("grant_type=refresh_token&refresh_token=rt-initial");
        let stale = call(&env, stale).await.expect("answer");
        assert_eq!(stale.status, 400);
        assert_eq!(&stale.body[..], b"{\"error\":\"invalid_grant\"}");
        let (fresh, _) = token(&env, &rotated).await;
        assert_eq!(
            call(&env, get("/items", &fresh))
                .await
                .expect("answer")
                .status,
            200
        );

        // Early revocation: the next call 401s although the token has not expired.
        o.revoke_access_tokens("c1", env.now());
        let revoked = call(&env, get("/items", &fresh)).await.expect("answer");
        assert_eq!(revoked.status, 401);
    });
    let c = api.counters();
    assert_eq!(c.token_expired_errors, 1);
    assert_eq!(c.token_invalid_errors, 1);
    assert_eq!(c.ok_2xx, 2);
    assert_eq!(oauth.counters().stale_refresh_token_uses, 1);
}

#[test]
fn over_the_rate_limit_gets_429_with_retry_after_and_waiting_it_out_works() {
    let (world, _, _) = world(2, "2024-06-01T08:00:00Z");
    let api = world.add_api(sim::services::ApiConfig {
        rate_limit_per_minute: Some(2),
        ..world.api_config("limited.sim")
    });
    run_client(&world, Duration::from_secs(3600), |env| async move {
        let req = || {
            Request::new(http::Method::GET, url("http://limited.sim/x")).header("x-client-id", "c1")
        };
        assert_eq!(call(&env, req()).await.expect("answer").status, 200);
        assert_eq!(call(&env, req()).await.expect("answer").status, 200);
        let limited = call(&env, req()).await.expect("answer");
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after"), Some("30"));
        // Naive: retry at once, three times. Every one is a violation.
        for _ in 0..3 {
            assert_eq!(call(&env, req()).await.expect("answer").status, 429);
        }
        // Honouring Retry-After: one wait, then success.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(call(&env, req()).await.expect("answer").status, 200);
    });
    let c = api.counters();
    assert_eq!(c.rate_limit_violations, 4);
    assert_eq!(c.ok_2xx, 3);
}

#[test]
fn the_daily_quota_resets_at_local_midnight() {
    // 21:30Z is 23:30 in Berlin (CEST): midnight is 30 minutes away.
    let (world, _, _) = world(3, "2024-06-01T21:30:00Z");
    let api = world.add_api(sim::services::ApiConfig {
        daily_quota: Some(2),
        ..world.api_config("quota.sim")
    });
    let resumed_at = Arc::new(Mutex::new(None));
    let r = resumed_at.clone();
    run_client(&world, Duration::from_secs(7200), move |env| async move {
        let req = || Request::new(http::Method::GET, url("http://quota.sim/x"));
        assert_eq!(call(&env, req()).await.expect("answer").status, 200);
        assert_eq!(call(&env, req()).await.expect("answer").status, 200);
        let spent = call(&env, req()).await.expect("answer");
        assert_eq!(spent.status, 429);
        let wait: u64 = spent
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("retry-after seconds");
        assert_eq!(wait, 1800);
        tokio::time::sleep(Duration::from_secs(wait)).await;
        *r.lock().expect("lock") = Some(env.now());
        assert_eq!(call(&env, req()).await.expect("answer").status, 200);
    });
    assert_eq!(
        *resumed_at.lock().expect("lock"),
        Some(at("2024-06-01T22:00:00Z"))
    );
    assert_eq!(api.counters().quota_rejections, 1);
}

#[test]
fn a_reset_fault_surfaces_as_connection_reset_without_a_side_effect() {
    let (world, _, api) = world(4, "2024-06-01T08:00:00Z");
    let w = world.clone();
    run_client(&world, Duration::from_secs(3600), move |env| async move {
        let (access, _) = token(&env, "rt-initial").await;
        w.faults().set("api.sim", Fault::Reset { probability: 1.0 });
        let err = call(&env, post("/posts", &access))
            .await
            .expect_err("reset");
        assert_eq!(err.kind(), FailureKind::ConnectionReset, "{err}");
        w.faults().clear_host("api.sim");
        assert_eq!(
            call(&env, post("/posts", &access))
                .await
                .expect("answer")
                .status,
            200
        );
    });
    assert_eq!(world.net_stats().host("api.sim").resets, 1);
    assert_eq!(api.counters().side_effects, 1);
}

#[test]
fn a_30s_stall_trips_the_10s_client_timeout_at_exactly_10s() {
    let (world, _, api) = world(5, "2024-06-01T08:00:00Z");
    let w = world.clone();
    run_client(&world, Duration::from_secs(3600), move |env| async move {
        let (access, _) = token(&env, "rt-initial").await;
        w.faults().set(
            "api.sim",
            Fault::Stall {
                duration: Duration::from_secs(30),
                probability: 1.0,
            },
        );
        let (wall0, mono0) = (env.now(), tokio::time::Instant::now());
        let err = call(&env, post("/posts", &access))
            .await
            .expect_err("timeout");
        assert_eq!(err.kind(), FailureKind::Timeout);
        assert_eq!(mono0.elapsed(), TIMEOUT);
        assert_eq!(env.now() - wall0, chrono::Duration::seconds(10));

        // A patient client gets the answer after base latency plus the stall.
        let (wall1, mono1) = (env.now(), tokio::time::Instant::now());
        let req = post("/posts", &access);
        let resp = send(env.connector(), &req, Duration::from_secs(60))
            .await
            .expect("late answer");
        assert_eq!(resp.status, 200);
        assert_eq!(mono1.elapsed(), Duration::from_millis(30_200));
        assert_eq!(env.now() - wall1, chrono::Duration::milliseconds(30_200));
    });
    // The stalled requests were handled: the timed-out one is a side effect too.
    assert_eq!(api.counters().side_effects, 2);
    assert_eq!(world.net_stats().host("api.sim").stalls, 2);
}

#[test]
fn dns_down_and_partition_map_to_their_failure_kinds() {
    let (world, _, _) = world(6, "2024-06-01T08:00:00Z");
    let w = world.clone();
    run_client(&world, Duration::from_secs(3600), move |env| async move {
        let health = || Request::new(http::Method::GET, url("https://api.sim/health"));
        assert_eq!(call(&env, health()).await.expect("answer").status, 200);

        let unknown = Request::new(http::Method::GET, url("https://nowhere.sim/"));
        let err = call(&env, unknown).await.expect_err("dns");
        assert_eq!(err.kind(), FailureKind::Dns);

        w.faults().set("api.sim", Fault::DnsFailure);
        assert_eq!(
            call(&env, health()).await.expect_err("dns").kind(),
            FailureKind::Dns
        );
        w.faults().clear_host("api.sim");

        w.faults().set("api.sim", Fault::Down);
        let refused = call(&env, health()).await.expect_err("refused");
        assert_eq!(refused.kind(), FailureKind::ConnectionRefused);
        w.faults().clear_host("api.sim");

        w.faults().set("api.sim", Fault::Partition);
        let t0 = tokio::time::Instant::now();
        let hung = call(&env, health()).await.expect_err("hang");
        assert_eq!(hung.kind(), FailureKind::Timeout);
        assert_eq!(t0.elapsed(), TIMEOUT, "the caller's deadline fires first");
        w.faults().clear_host("api.sim");

        w.faults().set(
            "api.sim",
            Fault::ServerError {
                status: 503,
                probability: 1.0,
            },
        );
        assert_eq!(call(&env, health()).await.expect("answer").status, 503);
        w.faults().set(
            "api.sim",
            Fault::RateLimitStorm {
                retry_after: Duration::from_secs(120),
                http_date: false,
            },
        );
        let storm = call(&env, health()).await.expect("answer");
        assert_eq!(
            (storm.status, storm.header("retry-after")),
            (429, Some("120"))
        );
    });
    let stats = world.net_stats().host("api.sim");
    assert_eq!(
        (
            stats.dns_failures,
            stats.refused,
            stats.partitioned,
            stats.injected_5xx,
            stats.injected_429
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(world.net_stats().host("nowhere.sim").dns_failures, 1);
}

#[test]
fn a_full_disk_fails_writes_with_enospc() {
    let (world, _, _) = world(7, "2024-06-01T08:00:00Z");
    let w = world.clone();
    run_client(&world, Duration::from_secs(600), move |env| async move {
        let fs = env.fs();
        fs.create_dir_all(Path::new("/state")).await.expect("mkdir");
        fs.write(Path::new("/state/a"), b"1").await.expect("write");
        w.fs().set_full(true);
        let err = fs
            .write(Path::new("/state/a"), b"2")
            .await
            .expect_err("full");
        assert_eq!(err.raw_os_error(), Some(28));
        w.fs().set_full(false);
        fs.write(Path::new("/state/a"), b"3").await.expect("write");
        assert_eq!(fs.read(Path::new("/state/a")).await.expect("read"), b"3");
        fs.remove(Path::new("/state/missing"))
            .await
            .expect("missing is fine");
    });
}

#[test]
fn memory_and_processes_follow_the_world_script() {
    let (world, _, _) = world(8, "2024-06-01T08:00:00Z");
    world.faults().set_memory(MemoryModel {
        base_bytes: 100 << 20,
        leak_bytes_per_hour: 10 << 20,
        leak_since: world.epoch(),
    });
    world.spawner().script(
        "render",
        steadfast_testkit::ScriptedCommand::exits(0, "done"),
    );
    run_client(&world, Duration::from_secs(7200), |env| async move {
        let base = env.memory().resident_bytes();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(env.memory().resident_bytes() - base, 10 << 20);
        let spec = |program: &str| steadfast_core::env::CommandSpec {
            argv: vec![program.to_string()],
            cwd: None,
            env: Vec::new(),
            timeout: Duration::from_secs(60),
            capture_limit_bytes: 2,
        };
        use steadfast_core::env::Spawner as _;
        let out = env.spawner().run(&spec("render")).await.expect("scripted");
        assert_eq!((out.code, out.stdout), (Some(0), b"do".to_vec()));
        let missing = env.spawner().run(&spec("nope")).await.expect_err("unknown");
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    });
}

#[test]
fn durable_writes_and_service_state_survive_a_crash_and_bounce() {
    let (world, _, api) = world(9, "2024-06-01T08:00:00Z");
    let mut sim = world
        .turmoil_builder(TICK, Duration::from_secs(24 * 3600))
        .build();
    let phase1_done = Arc::new(AtomicBool::new(false));
    let phase2_done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (w, p1, p2, s) = (
        world.clone(),
        phase1_done.clone(),
        phase2_done.clone(),
        seen.clone(),
    );
    sim.host("runner", move || {
        let (w, p1, p2, s) = (w.clone(), p1.clone(), p2.clone(), s.clone());
        async move {
            let env = w.env();
            let fs = env.fs();
            let dir = Path::new("/state");
            if w.boots() == 1 {
                fs.create_dir_all(dir).await?;
                fs.sync_dir(Path::new("/")).await?;
                // Durable: write, sync, rename, sync the directory.
                let (access, rotated) = token(&env, "rt-initial").await;
                let durable = format!("{access} {rotated}");
                fs.write(Path::new("/state/a.tmp"), durable.as_bytes())
                    .await?;
                fs.sync(Path::new("/state/a.tmp")).await?;
                fs.rename(Path::new("/state/a.tmp"), Path::new("/state/a"))
                    .await?;
                fs.sync_dir(dir).await?;
                // Naive: written, never synced.
                fs.write(Path::new("/state/b"), b"unsynced").await?;
                // Half-done: synced and renamed, but the directory never synced.
                fs.write(Path::new("/state/c.tmp"), b"no dir sync").await?;
                fs.sync(Path::new("/state/c.tmp")).await?;
                fs.rename(Path::new("/state/c.tmp"), Path::new("/state/c"))
                    .await?;
                let posted = call(&env, post("/posts", &access)).await?;
                assert_eq!(posted.status, 200);
                p1.store(true, Ordering::SeqCst);
                // Bounded idle until the crash.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            } else {
                let mut seen = Vec::new();
                let a = fs.read(Path::new("/state/a")).await?;
                let a = String::from_utf8_lossy(&a).into_owned();
                seen.push("a:kept".to_string());
                for name in ["/state/b", "/state/c"] {
                    let outcome = match fs.read(Path::new(name)).await {
                        Ok(_) => "kept",
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "lost",
                        Err(_) => "error",
                    };
                    seen.push(format!("{}:{outcome}", &name[7..]));
                }
                // The world remembers the token issued before the crash (now expired)
                // and accepts the durably stored rotated refresh token.
                let (access, rotated) = a.split_once(' ').expect("two tokens");
                let old = call(&env, post("/posts", access)).await?;
                seen.push(format!(
                    "old:{} {}",
                    old.status,
                    String::from_utf8_lossy(&old.body)
                ));
                let (fresh, _) = token(&env, rotated).await;
                let again = call(&env, post("/posts", &fresh)).await?;
                seen.push(format!("post:{}", again.status));
                *s.lock().expect("lock") = seen;
                p2.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
    });
    for _ in 0..100 {
        if phase1_done.load(Ordering::SeqCst) {
            break;
        }
        sim.step().expect("step");
    }
    assert!(phase1_done.load(Ordering::SeqCst), "phase 1 finished");
    world.crash(&mut sim, "runner");
    sim.step().expect("step while down");
    sim.bounce("runner");
    for _ in 0..100 {
        if phase2_done.load(Ordering::SeqCst) {
            break;
        }
        sim.step().expect("step");
    }
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            "a:kept",
            "b:lost",
            "c:lost",
            "old:401 {\"error\":\"token_expired\"}",
            "post:200"
        ]
    );
    assert_eq!(world.boots(), 2);
    assert_eq!(
        api.counters().side_effects,
        2,
        "service state outlived the bounce"
    );
}

/// A small client loop with random jitter and probabilistic faults; it records what
/// it saw into the trace.
fn traced_run(seed: u64) -> (String, usize) {
    let (world, _, _) = world(seed, "2024-06-01T08:00:00Z");
    world
        .faults()
        .set("api.sim", Fault::Reset { probability: 0.3 });
    world.faults().set(
        "api.sim",
        Fault::Stall {
            duration: Duration::from_secs(20),
            probability: 0.2,
        },
    );
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    run_client(
        &world,
        Duration::from_secs(24 * 3600),
        move |env| async move {
            let (mut access, mut refresh) = token(&env, "rt-initial").await;
            for i in 0..40u32 {
                let jitter = env.rng().between(0, 90_000);
                tokio::time::sleep(Duration::from_millis(60_000 + jitter)).await;
                a.fetch_add(1, Ordering::SeqCst);
                let outcome = match call(&env, post("/posts", &access)).await {
                    Ok(r) if r.status == 401 => {
                        (access, refresh) = token(&env, &refresh).await;
                        "401".to_string()
                    }
                    Ok(r) => format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
                    Err(e) => format!("{:?}", e.kind()),
                };
                env.emit(
                    Event::new(EventKind::Attempt)
                        .service("api.sim")
                        .attempt(i + 1)
                        .detail(outcome),
                );
            }
        },
    );
    (world.trace().to_jsonl(), world.trace().len())
}

#[test]
fn the_same_seed_gives_a_byte_identical_trace() {
    let (first, n) = traced_run(42);
    let (second, _) = traced_run(42);
    assert_eq!(n, 40);
    assert_eq!(first, second);
    assert!(first.contains("ConnectionReset"), "faults fired: {first}");
    assert!(first.contains("Timeout"), "stalls fired: {first}");
    let (other, _) = traced_run(43);
    assert_ne!(first, other, "a different seed explores a different run");
}

#[test]
fn three_weeks_of_quarter_hourly_calls_fit_in_one_run() {
    let (world, _, api) = world(10, "2024-06-01T08:00:00Z");
    let ended = Arc::new(Mutex::new(None));
    let e = ended.clone();
    run_client(
        &world,
        Duration::from_secs(22 * 24 * 3600),
        move |env| async move {
            let mut refresh = "rt-initial".to_string();
            for i in 0..(21 * 96) {
                tokio::time::sleep(Duration::from_secs(15 * 60)).await;
                // Refresh first: tokens live 2 minutes, calls come every 15.
                let access;
                (access, refresh) = token(&env, &refresh).await;
                let r = call(
                    &env,
                    post("/posts", &access).header("idempotency-key", format!("k{i}")),
                )
                .await
                .expect("answer");
                assert_eq!(r.status, 200);
            }
            *e.lock().expect("lock") = Some(env.now());
        },
    );
    let c = api.counters();
    assert_eq!((c.side_effects, c.token_expired_errors), (21 * 96, 0));
    let end = ended.lock().expect("lock").expect("client finished");
    assert!(end >= at("2024-06-22T08:00:00Z"), "{end}");
}

#[test]
fn a_dead_runner_reaches_no_service_and_its_reaper_kills_it_at_the_instant() {
    let (world, _, api) = world(6, "2024-06-01T08:00:00Z");
    let w = world.clone();
    let kill_at = at("2024-06-01T08:00:07.250Z");
    run_client(&world, Duration::from_secs(3600), move |env| async move {
        let (access, _) = token(&env, "rt-initial").await;
        assert_eq!(
            call(&env, post("/posts", &access))
                .await
                .expect("answer")
                .status,
            200
        );
        let reaper = tokio::spawn(w.clone().reaper());
        w.schedule_kill(kill_at);
        reaper.await.expect("the reaper ends when the process dies");
        assert!(w.runner_dead());
        assert_eq!(
            w.take_death(),
            Some(kill_at),
            "dead at the instant, inside the tick"
        );
        // The dead process's request never leaves it: nothing reaches the API, and the
        // caller waits until its own timeout.
        let err = call(&env, post("/posts", &access))
            .await
            .expect_err("no answer");
        assert_eq!(err.kind(), FailureKind::Timeout, "{err}");
    });
    assert_eq!(api.counters().side_effects, 1, "only the call made alive");
}
