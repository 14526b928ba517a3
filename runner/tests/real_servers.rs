//! The runner core on the production environment against real servers on 127.0.0.1:
//! wiremock (scripted HTTP), oauth2-mock-server (a real OAuth2 implementation no one
//! here wrote) and nginx (a real `limit_req` rate limiter).
//!
//! These tests never skip: a missing server is a failure naming the fix
//! (`bash .ci/setup-servers.sh`). Real time is used only where a real server needs it
//! (a token's lifetime, a rate limiter's window); no test asserts a wall-clock duration.

use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use runner::daemon::env::{DaemonEnv, Fanout};
use runner::secrets::OsSecrets;
use steadfast_core::alert::CollectAlerts;
use steadfast_core::config::{Config, parse_config};
use steadfast_core::event::{Event, EventKind, MemorySink, Outcome};
use steadfast_core::job::RunOutcome;
use steadfast_core::scheduler::Runner;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner/ has a parent")
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("steadfast-real-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config whose state lives in a fresh scratch directory.
fn config(name: &str, body: &str) -> Config {
    let dir = scratch(name);
    let text = format!("[runner]\nstate_dir = \"state\"\nmonitor_interval = \"1h\"\n{body}");
    let file = dir.join("runner.toml");
    std::fs::write(&file, &text).unwrap();
    parse_config(&text, &file, &OsSecrets).unwrap_or_else(|d| panic!("{d}"))
}

/// Runs `job` once on the production environment; returns its outcome and events.
async fn run_once(config: Config, job: &str) -> (RunOutcome, Vec<Event>) {
    let (runner, events) = runner_for(config).await;
    let outcome = runner.run_once(job).await.expect("job exists");
    (outcome, events.drain())
}

async fn runner_for(config: Config) -> (Runner<DaemonEnv>, Arc<MemorySink>) {
    let events = Arc::new(MemorySink::default());
    let env = DaemonEnv::new(Fanout::default().with(events.clone()));
    let runner = Runner::new(env, config, Arc::new(CollectAlerts::default()))
        .await
        .unwrap();
    (runner, events)
}

fn of(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.event == kind).collect()
}

// ---------------------------------------------------------------------------------
// wiremock

#[tokio::test]
async fn wiremock_429_retry_after_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/feed"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/feed"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .with_priority(2)
        .mount(&server)
        .await;
    // Backoff alone would wait at most 50 ms: only Retry-After explains a 1 s delay.
    let cfg = config(
        "429",
        &format!(
            "[retry]\nbase = \"10ms\"\ncap = \"50ms\"\n[services.api]\ncall_timeout = \"5s\"\n[[jobs]]\nname = \"poll\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"get\"\nurl = \"{}/feed\"\nservice = \"api\"\n",
            server.uri()
        ),
    );
    let (outcome, events) = run_once(cfg, "poll").await;
    assert_eq!(outcome.kind(), Outcome::Succeeded, "{events:#?}");
    let retries = of(&events, EventKind::RetryScheduled);
    assert_eq!(retries.len(), 1, "{events:#?}");
    assert!(
        retries[0].delay_ms.unwrap() >= 1000,
        "the retry ignored Retry-After: {:?}",
        retries[0]
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn wiremock_401_then_success_after_a_reactive_refresh() {
    let server = MockServer::start().await;
    let token = |t: &str| {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": t, "token_type": "Bearer", "expires_in": 3600
        }))
    };
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-revoked"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-fresh"))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(path("/me"))
        .and(header("authorization", "Bearer tok-revoked"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path("/me"))
        .and(header("authorization", "Bearer tok-fresh"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"id\": 7}"))
        .mount(&server)
        .await;
    let cfg = config(
        "401",
        &format!(
            "[services.api]\n[credentials.api]\ntoken_url = \"{u}/token\"\nclient_id = \"steadfast\"\nrefresh_token = \"rt-initial-123456\"\n[[jobs]]\nname = \"me\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"get\"\nurl = \"{u}/me\"\nservice = \"api\"\ncredential = \"api\"\nextract = {{ id = \"/id\" }}\n",
            u = server.uri()
        ),
    );
    let (outcome, events) = run_once(cfg, "me").await;
    assert_eq!(outcome.kind(), Outcome::Succeeded, "{events:#?}");
    let refreshes: Vec<_> = of(&events, EventKind::TokenRefreshed)
        .iter()
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect();
    assert_eq!(refreshes, ["initial", "reactive"], "{events:#?}");
    let log = events
        .iter()
        .map(Event::to_json_line)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !log.contains("tok-") && !log.contains("rt-initial"),
        "a token leaked into the events"
    );
}

#[derive(Debug)]
struct Reset;
impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the test")
    }
}
impl std::error::Error for Reset {}

#[tokio::test]
async fn wiremock_connection_reset_is_recoverable_and_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with_err(|_: &wiremock::Request| Reset)
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    let cfg = config(
        "reset",
        &format!(
            "[retry]\nbase = \"10ms\"\ncap = \"50ms\"\n[services.api]\ncall_timeout = \"5s\"\n[[jobs]]\nname = \"flaky\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"get\"\nurl = \"{}/flaky\"\nservice = \"api\"\n",
            server.uri()
        ),
    );
    let (outcome, events) = run_once(cfg, "flaky").await;
    assert_eq!(outcome.kind(), Outcome::Succeeded, "{events:#?}");
    let failed = of(&events, EventKind::AttemptFailed);
    assert_eq!(failed.len(), 2, "{events:#?}");
    for e in failed {
        assert_eq!(e.class.map(|c| c.as_str()), Some("recoverable"), "{e:?}");
    }
}

#[tokio::test]
async fn wiremock_slow_response_times_out_as_recoverable() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let cfg = config(
        "slow",
        &format!(
            "[retry]\nmax_attempts = 2\nbase = \"10ms\"\ncap = \"20ms\"\n[services.api]\ncall_timeout = \"300ms\"\n[[jobs]]\nname = \"slow\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"get\"\nurl = \"{}/slow\"\nservice = \"api\"\n",
            server.uri()
        ),
    );
    let (outcome, events) = run_once(cfg, "slow").await;
    assert_eq!(outcome.kind(), Outcome::Failed, "{events:#?}");
    let failed = of(&events, EventKind::AttemptFailed);
    assert_eq!(failed.len(), 2, "{events:#?}");
    for e in &failed {
        assert_eq!(e.class.map(|c| c.as_str()), Some("recoverable"), "{e:?}");
        let detail = e.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("timed out") || detail.contains("timeout"),
            "{e:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// oauth2-mock-server

/// A child process killed when the test ends, pass or fail.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const OAUTH_SCRIPT: &str = r#"
import { OAuth2Server } from 'MODULE';
const lifetime = Number(process.env.TOKEN_LIFETIME_S);
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token) => {
  token.payload.exp = Math.floor(Date.now() / 1000) + lifetime;
});
server.service.on('beforeResponse', (response) => {
  if (response.body && response.body.access_token) response.body.expires_in = lifetime;
});
await server.start(0, '127.0.0.1');
console.log('PORT ' + server.address().port);
"#;

fn start_oauth_server(lifetime_s: u32) -> (Server, u16) {
    let module = repo_root().join(".ci/servers/node_modules/oauth2-mock-server/dist/index.mjs");
    assert!(
        module.exists(),
        "oauth2-mock-server is not installed at {} (fix: bash .ci/setup-servers.sh)",
        module.display()
    );
    let dir = scratch("oauth-script");
    let script = dir.join("server.mjs");
    let url = format!("file://{}", module.display());
    std::fs::write(&script, OAUTH_SCRIPT.replace("MODULE", &url)).unwrap();
    let mut child = Command::new("node")
        .arg(&script)
        .env("TOKEN_LIFETIME_S", lifetime_s.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node must be installed (fix: bash .ci/setup-servers.sh)");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("oauth2-mock-server printed nothing");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("oauth2-mock-server did not start: {line:?}"));
    (server, port)
}

#[tokio::test]
async fn oauth2_mock_server_short_lived_tokens_are_refreshed_before_they_expire() {
    // Tokens live 4 s; the manager refreshes within min(skew, lifetime / 2) = 2 s of
    // expiry, so 2.5 s after issue the token must be replaced before it is used.
    let (_oauth, port) = start_oauth_server(4);
    let api = MockServer::start().await;
    Mock::given(path("/inbox"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"n\": 1}"))
        .mount(&api)
        .await;
    let cfg = config(
        "oauth",
        &format!(
            "[services.api]\n[credentials.mock]\ntoken_url = \"http://127.0.0.1:{port}/token\"\nclient_id = \"steadfast\"\nrefresh_token = \"rt-from-the-consent-screen\"\nskew = \"3s\"\n[[jobs]]\nname = \"inbox\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"get\"\nurl = \"{}/inbox\"\nservice = \"api\"\ncredential = \"mock\"\n",
            api.uri()
        ),
    );
    let (runner, events) = runner_for(cfg).await;
    assert_eq!(
        runner.run_once("inbox").await.unwrap().kind(),
        Outcome::Succeeded
    );
    // Real time: the real server's token must age into its refresh window.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        runner.run_once("inbox").await.unwrap().kind(),
        Outcome::Succeeded
    );
    let events = events.drain();
    let refreshes: Vec<_> = of(&events, EventKind::TokenRefreshed)
        .iter()
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect();
    assert_eq!(refreshes, ["initial", "proactive"], "{events:#?}");
    assert!(of(&events, EventKind::TokenRefreshFailed).is_empty());
    let bearers: Vec<String> = api
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(bearers.len(), 2);
    assert_ne!(
        bearers[0], bearers[1],
        "the second call reused the old token"
    );
    assert!(
        bearers.iter().all(|b| b.starts_with("Bearer ey")),
        "JWTs expected"
    );
    let expiry = runner.token_expiries()["mock"].expect("a token is held");
    assert!(expiry > chrono::Utc::now());
}

/// oauth2-mock-server made strict, as rotating providers are: every refresh answer
/// carries a new refresh token (the mock's own), the presented one is spent at once, and
/// presenting a spent one is reuse: `invalid_grant`, the whole family revoked. The
/// first `SLOW_ANSWERS` answers leave `ANSWER_DELAY_MS` after the server has rotated.
/// It writes what it saw to `STATS_FILE` after every request.
const STRICT_OAUTH_SCRIPT: &str = r#"
import { OAuth2Server } from 'MODULE';
import { writeFileSync } from 'node:fs';
const lifetime = Number(process.env.TOKEN_LIFETIME_S);
const delayMs = Number(process.env.ANSWER_DELAY_MS);
let slow = Number(process.env.SLOW_ANSWERS);
const stats = { refreshes: 0, rotations: 0, spent_presented: 0, unknown_presented: 0 };
let valid = process.env.INITIAL_REFRESH_TOKEN;
const spent = new Set();
const save = () => writeFileSync(process.env.STATS_FILE, JSON.stringify(stats));
save();
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token) => {
  token.payload.exp = Math.floor(Date.now() / 1000) + lifetime;
});
server.service.on('beforeResponse', (response, req) => {
  if (req.body.grant_type !== 'refresh_token') return;
  stats.refreshes += 1;
  const presented = req.body.refresh_token;
  if (valid === null || presented !== valid) {
    if (spent.has(presented)) { stats.spent_presented += 1; valid = null; }
    else stats.unknown_presented += 1;
    response.statusCode = 400;
    response.body = { error: 'invalid_grant' };
  } else {
    spent.add(presented);
    valid = response.body.refresh_token;
    stats.rotations += 1;
    response.body.expires_in = lifetime;
  }
  save();
  if (slow > 0) {
    slow -= 1;
    const res = req.res;
    const json = res.json.bind(res);
    res.json = (body) => { setTimeout(() => json(body), delayMs); return res; };
  }
});
await server.start(0, '127.0.0.1');
console.log('PORT ' + server.address().port);
"#;

/// What the strict server saw.
#[derive(Debug, serde::Deserialize)]
struct StrictStats {
    refreshes: u32,
    rotations: u32,
    spent_presented: u32,
    unknown_presented: u32,
}

fn start_strict_oauth_server(
    initial_refresh: &str,
    answer_delay_ms: u32,
    slow_answers: u32,
) -> (Server, u16, PathBuf) {
    let module = repo_root().join(".ci/servers/node_modules/oauth2-mock-server/dist/index.mjs");
    assert!(
        module.exists(),
        "oauth2-mock-server is not installed at {} (fix: bash .ci/setup-servers.sh)",
        module.display()
    );
    let dir = scratch("strict-oauth");
    let script = dir.join("server.mjs");
    let stats = dir.join("stats.json");
    let url = format!("file://{}", module.display());
    std::fs::write(&script, STRICT_OAUTH_SCRIPT.replace("MODULE", &url)).unwrap();
    let mut child = Command::new("node")
        .arg(&script)
        .env("TOKEN_LIFETIME_S", "4")
        .env("ANSWER_DELAY_MS", answer_delay_ms.to_string())
        .env("SLOW_ANSWERS", slow_answers.to_string())
        .env("INITIAL_REFRESH_TOKEN", initial_refresh)
        .env("STATS_FILE", &stats)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node must be installed (fix: bash .ci/setup-servers.sh)");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("oauth2-mock-server printed nothing");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("oauth2-mock-server did not start: {line:?}"));
    (server, port, stats)
}

/// Issue 10's token case: a refresh answered after the run's deadline. The strict
/// server has rotated the refresh token by then; the runner must keep the answer, so
/// the next refresh (by a restarted runner) presents the rotated token, not the spent one.
#[tokio::test]
async fn oauth2_mock_server_a_refresh_answered_after_the_runs_deadline_keeps_the_rotated_token() {
    let initial = "rt-from-the-consent-screen";
    // The first answer leaves 3 s after the rotation; the run's deadline is 1 s.
    let (_oauth, port, stats) = start_strict_oauth_server(initial, 3000, 1);
    let api = MockServer::start().await;
    Mock::given(path("/inbox"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"n\": 1}"))
        .mount(&api)
        .await;
    let cfg = config(
        "strict-oauth-runner",
        &format!(
            "[services.api]\n[credentials.mock]\ntoken_url = \"http://127.0.0.1:{port}/token\"\nclient_id = \"steadfast\"\nrefresh_token = \"{initial}\"\nskew = \"3s\"\n[[jobs]]\nname = \"inbox\"\nevery = \"1h\"\ndeadline = \"1s\"\n[[jobs.steps]]\nname = \"get\"\nurl = \"{}/inbox\"\nservice = \"api\"\ncredential = \"mock\"\n",
            api.uri()
        ),
    );
    let read_stats =
        || -> StrictStats { serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap() };
    let (runner, first_events) = runner_for(cfg.clone()).await;
    let first = runner.run_once("inbox").await.unwrap();
    assert_eq!(first.kind(), Outcome::Failed, "the run hit its deadline");
    drop(runner);
    assert_eq!(
        read_stats().rotations,
        1,
        "the server rotated on the cut-off refresh"
    );

    // A new process on the same state directory: its token (4 s lifetime, answered 3 s
    // late) is already in its refresh window, so it refreshes with what the store kept.
    let (runner, events) = runner_for(cfg).await;
    let second = runner.run_once("inbox").await.unwrap();
    let events: Vec<Event> = first_events
        .drain()
        .into_iter()
        .chain(events.drain())
        .collect();
    let s = read_stats();
    assert_eq!(
        s.spent_presented, 0,
        "a spent refresh token was presented: {s:?}"
    );
    assert_eq!(s.unknown_presented, 0, "{s:?}");
    assert_eq!((s.refreshes, s.rotations), (2, 2), "{s:?}");
    assert_eq!(second.kind(), Outcome::Succeeded, "{events:#?}");
    assert!(
        !events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("invalid_grant"))),
        "{events:#?}"
    );
    assert_eq!(api.received_requests().await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------
// nginx

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx is not installed (fix: bash .ci/setup-servers.sh)");
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(name: &str) -> (Server, u16) {
    let dir = scratch(name);
    let port = free_port();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n  limit_req_zone $binary_remote_addr zone=api:1m rate=2r/s;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      limit_req zone=api;\n      limit_req_status 429;\n      default_type application/json;\n      root {d}/www;\n    }}\n  }}\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    // A static file, not `return`: `return` answers in the rewrite phase, before
    // limit_req (preaccess) ever runs.
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/x"), "{\"ok\": true}").unwrap();
    let child = Command::new(nginx_binary())
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        // One process: the guard's kill stops all of nginx (with a master, its worker
        // outlived every test run as an orphan).
        .args(["-g", "daemon off; master_process off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx failed to start");
    let server = Server(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "nginx did not listen on {port}: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

#[tokio::test]
async fn nginx_limit_req_429s_are_backed_off_until_admitted() {
    let (_nginx, port) = start_nginx("nginx");
    let cfg = config(
        "nginx-runner",
        &format!(
            "[retry]\nmax_attempts = 12\nbase = \"300ms\"\ncap = \"2s\"\n[services.api]\ncall_timeout = \"5s\"\n[[jobs]]\nname = \"hit\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"get\"\nurl = \"http://127.0.0.1:{port}/x\"\nservice = \"api\"\n"
        ),
    );
    let (runner, events) = runner_for(cfg).await;
    // Three runs back to back exceed 2 r/s (no burst): the limiter answers 429 and
    // each run must back off until it is let through.
    for _ in 0..3 {
        assert_eq!(
            runner.run_once("hit").await.unwrap().kind(),
            Outcome::Succeeded
        );
    }
    let events = events.drain();
    let limited: Vec<_> = of(&events, EventKind::AttemptFailed)
        .into_iter()
        .filter(|e| e.detail.as_deref().unwrap_or_default().contains("429"))
        .collect();
    assert!(
        !limited.is_empty(),
        "nginx never rate-limited us: {events:#?}"
    );
    assert!(!of(&events, EventKind::RetryScheduled).is_empty());
    assert!(
        of(&events, EventKind::RetryGaveUp).is_empty(),
        "{events:#?}"
    );
}
