//! Issue 11, case 1, against a real server: a rate-limited API on 127.0.0.1 (axum) that
//! answers its first call with `429 Retry-After: 2` and counts every call that reaches
//! it inside the window it advertised. Two jobs share the API; the second job's step
//! starts after the first job's 429 was handled. With the per-service gate the API
//! counts 0 calls inside its window; without it (the naive habit, `gates = false`), the
//! second job calls inside it.
//!
//! Real time is used because the server keeps real time; nothing asserts a duration.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use runner::daemon::env::{DaemonEnv, Fanout};
use runner::secrets::OsSecrets;
use steadfast_core::alert::CollectAlerts;
use steadfast_core::config::{Config, parse_config};
use steadfast_core::event::{EventKind, MemorySink, Outcome};
use steadfast_core::scheduler::Runner;

/// The window the API advertises, in seconds.
const RETRY_AFTER_S: u64 = 2;

/// What the API saw.
#[derive(Debug, Default)]
struct Limiter {
    /// End of the advertised window (set by the first call).
    until: Option<Instant>,
    /// Every call.
    calls: u32,
    /// Calls inside the advertised window.
    inside: u32,
}

async fn limited(State(state): State<Arc<Mutex<Limiter>>>) -> impl IntoResponse {
    let now = Instant::now();
    let mut s = state.lock().unwrap();
    s.calls += 1;
    match s.until {
        None => {
            s.until = Some(now + Duration::from_secs(RETRY_AFTER_S));
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", RETRY_AFTER_S.to_string())],
                String::new(),
            )
        }
        Some(until) if now < until => {
            s.inside += 1;
            let left = (until - now).as_secs().max(1);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", left.to_string())],
                String::new(),
            )
        }
        Some(_) => (
            StatusCode::OK,
            [("content-type", "application/json".to_string())],
            "{\"ok\": true}".to_string(),
        ),
    }
}

async fn start_api() -> (SocketAddr, Arc<Mutex<Limiter>>) {
    let state = Arc::new(Mutex::new(Limiter::default()));
    let app = Router::new()
        .route("/{job}", get(limited))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, state)
}

fn config(name: &str, addr: SocketAddr, patterns: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("steadfast-gate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let jobs: String = ["a", "b"]
        .iter()
        .map(|job| {
            format!(
                "[[jobs]]\nname = \"{job}\"\nevery = \"15m\"\ndeadline = \"1m\"\n\
                 [[jobs.steps]]\nname = \"get\"\nurl = \"http://{addr}/{job}\"\nservice = \"api\"\n"
            )
        })
        .collect();
    let text = format!(
        "[runner]\nstate_dir = \"state\"\nmonitor_interval = \"1h\"\n{patterns}\n[services.api]\n{jobs}"
    );
    let file = dir.join("runner.toml");
    std::fs::write(&file, &text).unwrap();
    parse_config(&text, &file, &OsSecrets).unwrap_or_else(|d| panic!("{d}"))
}

/// Runs job `a`, and job `b` once `a`'s first attempt has failed (its 429 handled).
async fn two_jobs(name: &str, patterns: &str) -> (Limiter, Outcome, Outcome) {
    let (addr, state) = start_api().await;
    let events = Arc::new(MemorySink::default());
    let env = DaemonEnv::new(Fanout::default().with(events.clone()));
    let runner = Runner::new(
        env,
        config(name, addr, patterns),
        Arc::new(CollectAlerts::default()),
    )
    .await
    .unwrap();
    let a_failed = || {
        events
            .snapshot()
            .iter()
            .any(|e| e.event == EventKind::AttemptFailed && e.job.as_deref() == Some("a"))
    };
    let (a, b) = tokio::join!(runner.run_once("a"), async {
        // Bounded: the first attempt answers within the call timeout.
        for _ in 0..3000 {
            if a_failed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(a_failed(), "job a's first call never failed");
        runner.run_once("b").await
    });
    let seen = std::mem::take(&mut *state.lock().unwrap());
    (seen, a.unwrap().kind(), b.unwrap().kind())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_one_rate_limited_api_no_call_inside_its_retry_after() {
    let (seen, a, b) = two_jobs("ours", "").await;
    assert_eq!(seen.inside, 0, "{seen:?}");
    assert_eq!((a, b), (Outcome::Succeeded, Outcome::Succeeded), "{seen:?}");
    assert_eq!(seen.calls, 3, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gate_the_other_job_calls_inside_the_window() {
    let (seen, _, _) = two_jobs("naive", "[patterns]\ngates = false\n").await;
    assert!(seen.inside >= 1, "{seen:?}");
}
