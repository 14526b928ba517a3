//! The `runner` binary as a process: `kill -9` mid-run, restart, and the interrupted
//! run resumes from its checkpoint with no repeated side effect and no lost run.
//!
//! The server is wiremock on 127.0.0.1; it counts POSTs per `Idempotency-Key`. The
//! job charges (step 1) then notifies (step 2); the first notify is answered slowly so
//! the daemon is killed while it waits. Real time is used because a real process and
//! a real server are involved; nothing asserts a duration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Gives up waiting for the daemon after this long (a failure, not a skip).
const PATIENCE: Duration = Duration::from_secs(60);

struct Daemon(Child);

impl Daemon {
    fn start(config: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the runner binary starts");
        Self(child)
    }

    fn kill9(&mut self) {
        self.0.kill().expect("SIGKILL");
        let status = self.0.wait().unwrap();
        assert!(!status.success(), "a killed daemon cannot exit cleanly");
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        self.0.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs per idempotency key, for one path.
async fn keys(server: &MockServer, p: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for r in server.received_requests().await.unwrap_or_default() {
        if r.url.path() != p {
            continue;
        }
        let key = r
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_string();
        *out.entry(key).or_default() += 1;
    }
    out
}

fn log_lines(state: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("runner.log"))
    });
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_resumes_without_repeating_a_side_effect() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/charge"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"charged\": true}"))
        .mount(&server)
        .await;
    // The first notify hangs (the daemon dies waiting); later ones answer at once.
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(120)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;

    let dir = std::env::temp_dir().join(format!("steadfast-daemon-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let config = dir.join("runner.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nstate_dir = \"state\"\nshutdown_grace = \"2s\"\nmonitor_interval = \"1h\"\n\
             [services.shop]\ncall_timeout = \"3m\"\n\
             [[jobs]]\nname = \"billing\"\nevery = \"2s\"\ndeadline = \"5m\"\nheartbeat_threshold = \"1h\"\n\
             [[jobs.steps]]\nname = \"charge\"\nmethod = \"POST\"\nurl = \"{u}/charge\"\nservice = \"shop\"\nbody = \"{{{{run.id}}}}\"\n\
             [[jobs.steps]]\nname = \"notify\"\nmethod = \"POST\"\nurl = \"{u}/notify\"\nservice = \"shop\"\n",
            u = server.uri()
        ),
    )
    .unwrap();

    // First life: dies by SIGKILL while the notify step waits for its answer.
    let mut first = Daemon::start(&config);
    wait_for("the first notify to arrive", async || {
        !keys(&server, "/notify").await.is_empty()
    })
    .await;
    first.kill9();
    let notify_key = keys(&server, "/notify")
        .await
        .into_keys()
        .next()
        .expect("one notify key");
    // The journal has the run open, with its charge step done.
    let store = runner::env::tokio::FileDb::open_read_only(&state).expect("the store survives");
    let (due, steps): (i64, String) = store
        .query_row(
            "SELECT s.due, (SELECT GROUP_CONCAT(step, ',') FROM steps t WHERE t.job = s.job AND t.due = s.due)
             FROM slots s WHERE s.job = 'billing' AND s.state = 'running'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("one open run");
    drop(store);
    let run_id = steadfast_core::job::RunId::new(
        "billing",
        chrono::DateTime::from_timestamp_millis(due).unwrap(),
    )
    .to_string();
    assert_eq!(steps, "charge");

    // Second life: the interrupted run resumes at start.
    let mut second = Daemon::start(&config);
    wait_for("the interrupted run to finish", async || {
        log_lines(&state).iter().any(|l| {
            l["event"] == "run_finished"
                && l["run_id"] == run_id.as_str()
                && l["outcome"] == "succeeded"
        })
    })
    .await;
    let status = second.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");

    let logs = log_lines(&state);
    // The charge of the interrupted run happened once and was not repeated.
    let charges = keys(&server, "/charge").await;
    assert!(
        charges.values().all(|n| *n == 1),
        "a charge was repeated: {charges:?}"
    );
    let replayed = logs.iter().any(|l| {
        l["event"] == "step_replayed" && l["run_id"] == run_id.as_str() && l["step"] == "charge"
    });
    assert!(replayed, "the resumed run did not skip its completed step");
    // The notify was re-sent with the same key, so the server applies it once.
    let notifies = keys(&server, "/notify").await;
    assert_eq!(notifies.get(&notify_key), Some(&2), "{notifies:?}");
    // No lost run: the interrupted run finished under its own id.
    let resumed = logs
        .iter()
        .any(|l| l["event"] == "checkpoint_resumed" && l["run_id"] == run_id.as_str());
    assert!(resumed, "no checkpoint_resumed event for {run_id}");
    // A clean stop leaves no lock holder behind.
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["daemon_running"], false, "{status}");
    assert_eq!(status["jobs"][0]["heartbeat"], "ok", "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_daemon_on_the_same_state_dir_exits_3() {
    let dir = std::env::temp_dir().join(format!("steadfast-daemon-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runner.toml");
    std::fs::write(
        &config,
        "[runner]\nstate_dir = \"state\"\n[[jobs]]\nname = \"a\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n",
    )
    .unwrap();
    let mut first = Daemon::start(&config);
    let lock = dir.join("state/runner.lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.0.id().to_string() {
        assert!(start.elapsed() < PATIENCE, "the first daemon never locked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another runner"));
    assert_eq!(first.terminate().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

fn status_json(config: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `runner status` shows each job's state machine state while the daemon runs, and
/// its failure streak, which a restarted daemon carries on rather than resetting.
#[test]
fn status_shows_live_state_and_a_failure_streak_that_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("steadfast-daemon-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runner.toml");
    std::fs::write(
        &config,
        "[runner]\nstate_dir = \"state\"\n[[jobs]]\nname = \"flaky\"\nevery = \"1s\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"false\"]\n",
    )
    .unwrap();
    let streak = |s: &serde_json::Value| s["jobs"][0]["consecutive_failures"].as_u64();

    let mut first = Daemon::start(&config);
    let start = Instant::now();
    let live = loop {
        let s = status_json(&config);
        if s["daemon_running"] == true && streak(&s).is_some_and(|n| n >= 2) {
            break s;
        }
        assert!(start.elapsed() < PATIENCE, "no failure streak of 2: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(live["jobs"][0]["state"].is_string(), "{live}");
    assert_eq!(first.terminate().code(), Some(0));
    let stopped = status_json(&config);
    assert!(
        stopped["jobs"][0]["state"].is_null(),
        "no daemon, no live state: {stopped}"
    );
    let before = streak(&stopped).expect("the last streak was written at stop");
    assert!(before >= 2, "{stopped}");
    let table = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("FAILURES") && table.contains("STATE"),
        "{table}"
    );

    let _second = Daemon::start(&config);
    let start = Instant::now();
    loop {
        let s = status_json(&config);
        if s["daemon_running"] == true {
            let n = streak(&s).unwrap_or(0);
            assert!(
                n >= before,
                "the streak restarted from {n} (was {before}): {s}"
            );
            if n > before {
                break;
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the streak never grew past {before}: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
