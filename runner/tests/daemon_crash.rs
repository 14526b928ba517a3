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

/// A small seeded generator (SplitMix64): the kill loop's choices come from the seed,
/// printed first, so a failure names its reproduction.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The step script: takes a lock per run and step (held by every process of the step,
/// so a copy left running by a killed daemon holds it), appends `start` and `end` lines
/// to the ledger, and does its work in a child process, as real scripts do.
const STEP_SCRIPT: &str = r#"#!/bin/sh
step="$1"; ledger="$2"; locks="$3"; work="$4"
exec 9>"$locks/$STEADFAST_RUN_ID.$step.lock"
if ! flock -n 9; then
  echo "overlap $STEADFAST_RUN_ID $step $$ $(date +%s%N)" >> "$ledger"
  exit 1
fi
echo "start $STEADFAST_RUN_ID $step $$ $(date +%s%N)" >> "$ledger"
sleep "$work" &
wait $!
echo "end $STEADFAST_RUN_ID $step $$ $(date +%s%N)" >> "$ledger"
"#;

/// The order of the job's steps.
const LEDGER_STEPS: [&str; 3] = ["fetch", "charge", "notify"];

fn ledger_config(dir: &Path, grace: &str, work: &str) -> PathBuf {
    let script = dir.join("step.sh");
    std::fs::write(&script, STEP_SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(dir.join("locks")).unwrap();
    let mut text = format!(
        "[runner]\nstate_dir = \"state\"\nshutdown_grace = \"{grace}\"\nmonitor_interval = \"1h\"\n\
         [[jobs]]\nname = \"ledger\"\nevery = \"2s\"\ndeadline = \"1m\"\nheartbeat_threshold = \"1h\"\n\
         catch_up = \"latest\"\n"
    );
    for step in LEDGER_STEPS {
        text.push_str(&format!(
            "[[jobs.steps]]\nname = \"{step}\"\nkind = \"command\"\ntimeout = \"30s\"\nargv = [\"{s}\", \"{step}\", \"{l}\", \"{k}\", \"{work}\"]\n",
            s = script.display(),
            l = dir.join("ledger").display(),
            k = dir.join("locks").display(),
        ));
    }
    let config = dir.join("runner.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// One ledger line.
#[derive(Debug, Clone)]
struct Entry {
    what: String,
    run: String,
    step: String,
    pid: u32,
    at_ns: u128,
}

fn ledger(dir: &Path) -> Vec<Entry> {
    std::fs::read_to_string(dir.join("ledger"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // A line cut by a kill mid-write is dropped, never misread.
            if f.len() != 5 {
                return None;
            }
            Some(Entry {
                what: f[0].to_string(),
                run: f[1].to_string(),
                step: f[2].to_string(),
                pid: f[3].parse().ok()?,
                at_ns: f[4].parse().ok()?,
            })
        })
        .collect()
}

/// What the ledger shows against issue 10's promises; empty when all hold.
fn ledger_violations(entries: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.what == "overlap") {
        out.push(format!(
            "{} {} started while a copy of it still ran",
            e.run, e.step
        ));
    }
    // No step started again once a later step of the same run had started.
    let order = |s: &str| LEDGER_STEPS.iter().position(|x| *x == s).unwrap_or(0);
    let mut furthest: BTreeMap<&str, usize> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.what == "start") {
        let reached = furthest.entry(&e.run).or_insert(0);
        if order(&e.step) < *reached {
            out.push(format!(
                "{} {} ran again after {} had started",
                e.run, e.step, LEDGER_STEPS[*reached]
            ));
        }
        *reached = (*reached).max(order(&e.step));
    }
    // Finished copies of one run's step never overlap in time.
    let mut spans: BTreeMap<(&str, &str), Vec<(u128, u128)>> = BTreeMap::new();
    for s in entries.iter().filter(|e| e.what == "start") {
        if let Some(end) = entries
            .iter()
            .find(|e| e.what == "end" && e.pid == s.pid && e.run == s.run && e.step == s.step)
        {
            spans
                .entry((&s.run, &s.step))
                .or_default()
                .push((s.at_ns, end.at_ns));
        }
    }
    for ((run, step), mut v) in spans {
        v.sort();
        if v.windows(2).any(|w| w[1].0 < w[0].1) {
            out.push(format!("{run} {step}: two copies ran at once: {v:?}"));
        }
    }
    out
}

/// Every slot row of the journal: (due ms, last_due ms, slot_count, state).
fn journal_rows(state: &Path) -> (i64, Vec<(i64, i64, i64, String)>) {
    let store = runner::env::tokio::FileDb::open_read_only(state).expect("the store opens");
    let registered: i64 = store
        .query_row(
            "SELECT registered_at FROM jobs WHERE job = 'ledger'",
            [],
            |r| r.get(0),
        )
        .expect("the job is registered");
    let mut stmt = store
        .prepare(
            "SELECT due, last_due, slot_count, state FROM slots WHERE job = 'ledger' ORDER BY due",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (registered, rows)
}

/// Issue 10's kill -9 loop against the real daemon: command steps append to a ledger;
/// the daemon is killed at seeded random instants with downtime between restarts.
/// Then: no step ran twice at once, none ran again after a later step of its run
/// started, no run was left open, and every slot since the job was registered is
/// accounted for exactly once as run or missed.
#[test]
fn kill_9_loop_loses_no_slot_and_runs_no_step_twice() {
    let seed = std::env::var("STEADFAST_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0010_u64);
    eprintln!("kill -9 loop: seed {seed} (STEADFAST_KILL_SEED={seed} reproduces the choices)");
    let mut rng = Seeded(seed);
    let dir = std::env::temp_dir().join(format!("steadfast-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Steps of 1.5 s: a kill lands mid-step most times, and a step a killed daemon
    // left running outlives a short downtime.
    let config = ledger_config(&dir, "3s", "1.5");
    let state = dir.join("state");
    const KILLS: usize = 14;
    for kill in 0..KILLS {
        let mut daemon = Daemon::start(&config);
        std::thread::sleep(rng.millis(300, 3000));
        daemon.kill9();
        let down = rng.millis(0, 1500);
        eprintln!("kill {kill}: down for {down:?}");
        std::thread::sleep(down);
    }
    // A last life long enough for every open run to finish, then a clean stop.
    let mut last = Daemon::start(&config);
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let (_, rows) = journal_rows(&state);
        // Every run but the newest (which may be in flight) has finished.
        let settled = rows.len() > 1 && rows[..rows.len() - 1].iter().all(|r| r.3 != "running");
        if start.elapsed() > Duration::from_secs(4) && settled {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "runs stayed open: {rows:?}");
    }
    assert_eq!(last.terminate().code(), Some(0), "SIGTERM is a clean stop");

    let entries = ledger(&dir);
    let starts = entries.iter().filter(|e| e.what == "start").count();
    assert!(starts >= 6, "too few steps ran to judge: {starts}");
    let violations = ledger_violations(&entries);
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");

    let (registered, rows) = journal_rows(&state);
    // The stop may land in the newest run: it stays open, to resume at the next start
    // (the SIGTERM test checks that). Any other open run was lost.
    let open: Vec<_> = rows[..rows.len() - 1]
        .iter()
        .filter(|r| r.3 == "running")
        .collect();
    assert!(
        open.is_empty(),
        "seed {seed}: runs never finished: {open:?}"
    );
    let in_flight = rows.last().filter(|r| r.3 == "running").map(|r| {
        steadfast_core::job::RunId::new(
            "ledger",
            chrono::DateTime::from_timestamp_millis(r.0).unwrap(),
        )
        .to_string()
    });
    // Every 2 s slot from the first after registration to the last row, exactly once.
    let every = 2000;
    // The first slot is the first on the 2 s grid from the job's registration on.
    let first = rows.first().map_or(registered, |r| r.0);
    assert!(
        first >= registered && first - registered <= every && first % every == 0,
        "seed {seed}: the first slot {first} is not the first after registration at {registered}"
    );
    let mut expect = first;
    for (due, last_due, count, st) in &rows {
        assert!(
            *due <= expect,
            "seed {seed}: slots {expect}..{due} are in no row (gap before a {st} row)"
        );
        assert_eq!(
            *due, expect,
            "seed {seed}: slot {expect} unaccounted or doubled"
        );
        assert_eq!(
            (last_due - due) / every + 1,
            *count,
            "seed {seed}: row {due} counts its slots wrong"
        );
        expect = last_due + every;
    }
    let missed: i64 = rows.iter().filter(|r| r.3 == "missed").map(|r| r.2).sum();
    let ran = rows.iter().filter(|r| r.3 == "done").count();
    eprintln!(
        "kill -9 loop: {KILLS} kills, {} slots: {ran} run, {missed} missed; {starts} step starts",
        (expect - first) / every
    );
    // Every run in the ledger is a finished row of the journal.
    let finished: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r.3 == "done")
        .map(|r| {
            steadfast_core::job::RunId::new(
                "ledger",
                chrono::DateTime::from_timestamp_millis(r.0).unwrap(),
            )
            .to_string()
        })
        .collect();
    for e in entries
        .iter()
        .filter(|e| Some(&e.run) != in_flight.as_ref())
    {
        assert!(
            finished.contains(&e.run),
            "seed {seed}: run {} ran steps but is not finished in the journal",
            e.run
        );
    }
    // The killed lives' processes were stopped at the next start, not left running.
    let logs = log_lines(&state);
    let mut reaped: BTreeMap<String, u32> = BTreeMap::new();
    for l in logs.iter().filter(|l| l["event"] == "process_reaped") {
        let how = l["detail"]
            .as_str()
            .unwrap_or("")
            .rsplit(' ')
            .next()
            .unwrap_or("");
        *reaped.entry(how.to_string()).or_default() += 1;
    }
    eprintln!("kill -9 loop: left process groups found at start, by outcome: {reaped:?}");
    // `status` counts the missed slots the journal holds, by reason, and names no
    // other problem.
    let status = status_json(&config);
    let counted: i64 = status["jobs"][0]["missed"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_i64()).sum())
        .unwrap_or(0);
    assert_eq!(counted, missed, "{status}");
    let problems = status["problems"].as_array().cloned().unwrap_or_default();
    assert!(
        problems.iter().all(|p| p
            .as_str()
            .is_some_and(|p| p.starts_with("job `ledger`: ") && p.contains("missed"))),
        "{status}"
    );
    assert_eq!(problems.len(), usize::from(missed > 0), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Issue 10: after SIGTERM the daemon still started the remaining steps of in-flight
/// runs. Now: no step starts after the signal, the running step finishes inside
/// `shutdown_grace`, the run stays open in the journal and the next start resumes it
/// after its finished steps.
#[test]
fn sigterm_starts_no_new_step_lets_the_running_one_finish_and_the_run_resumes() {
    let dir = std::env::temp_dir().join(format!("steadfast-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = ledger_config(&dir, "20s", "1.5");
    let state = dir.join("state");
    let mut daemon = Daemon::start(&config);
    let start = Instant::now();
    let run = loop {
        let started = ledger(&dir)
            .into_iter()
            .find(|e| e.what == "start" && e.step == "charge");
        if let Some(e) = started {
            break e.run;
        }
        assert!(start.elapsed() < PATIENCE, "no charge step started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let signalled = now_ns();
    assert_eq!(
        daemon.terminate().code(),
        Some(0),
        "SIGTERM is a clean stop"
    );
    let entries = ledger(&dir);
    let late: Vec<_> = entries
        .iter()
        .filter(|e| e.what == "start" && e.at_ns > signalled)
        .collect();
    assert!(late.is_empty(), "steps started after SIGTERM: {late:?}");
    let charge_ended = entries
        .iter()
        .any(|e| e.what == "end" && e.run == run && e.step == "charge");
    assert!(
        charge_ended,
        "the running step was not let finish: {entries:?}"
    );
    // The run is open in the journal with both finished steps.
    let store = runner::env::tokio::FileDb::open_read_only(&state).unwrap();
    let parsed: steadfast_core::job::RunId = run.parse().unwrap();
    let (slot_state, steps): (String, String) = store
        .query_row(
            "SELECT s.state, (SELECT GROUP_CONCAT(step, ',') FROM (SELECT step FROM steps t WHERE t.job = s.job AND t.due = s.due ORDER BY done_at)) FROM slots s WHERE s.job = 'ledger' AND s.due = ?1",
            [parsed.due().timestamp_millis()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(store);
    assert_eq!(
        (slot_state.as_str(), steps.as_str()),
        ("running", "fetch,charge")
    );

    // The next start resumes it: `notify` runs, `fetch` and `charge` do not again.
    let mut again = Daemon::start(&config);
    let start = Instant::now();
    loop {
        let done = ledger(&dir)
            .iter()
            .any(|e| e.what == "end" && e.run == run && e.step == "notify");
        if done {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the run was not resumed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(again.terminate().code(), Some(0));
    let entries = ledger(&dir);
    let count = |step: &str| {
        entries
            .iter()
            .filter(|e| e.what == "start" && e.run == run && e.step == step)
            .count()
    };
    assert_eq!(
        (count("fetch"), count("charge"), count("notify")),
        (1, 1, 1)
    );
    let store = runner::env::tokio::FileDb::open_read_only(&state).unwrap();
    let (slot_state, attempt): (String, i64) = store
        .query_row(
            "SELECT state, attempt FROM slots WHERE job = 'ledger' AND due = ?1",
            [parsed.due().timestamp_millis()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((slot_state.as_str(), attempt), ("done", 2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 10: corrupt state was moved aside with no log line and the daemon started
/// fresh. A corrupt `state.db` (a ruined header, or a damaged page inside an otherwise
/// valid file) is an error event, an alert and a `status` problem; the daemon refuses
/// to start with exit 4 and a message naming the file with a hint; the file is kept
/// byte for byte.
#[test]
fn a_corrupt_state_db_is_kept_reported_and_refused_with_exit_4() {
    let dir = std::env::temp_dir().join(format!("steadfast-corrupt-db-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runner.toml");
    std::fs::write(
        &config,
        "[runner]\nstate_dir = \"state\"\n[[jobs]]\nname = \"a\"\nevery = \"1s\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n",
    )
    .unwrap();
    let state = dir.join("state");
    let db = state.join("state.db");
    // A real store with a few runs in it.
    let mut daemon = Daemon::start(&config);
    let start = Instant::now();
    while log_lines(&state)
        .iter()
        .filter(|l| l["event"] == "run_finished")
        .count()
        < 2
    {
        assert!(start.elapsed() < PATIENCE, "no runs finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.terminate().code(), Some(0));
    let healthy = std::fs::read(&db).unwrap();
    assert!(
        healthy.len() >= 4 * 4096,
        "a store of a few pages: {}",
        healthy.len()
    );

    let ruined_header = {
        let mut b = healthy.clone();
        b[..100].fill(0x5A);
        b
    };
    // The root page of the last table or index the schema creates: one no query at
    // start reads, so only a check of the whole file finds it.
    let (page, size): (i64, i64) = {
        let store = runner::env::tokio::FileDb::open_read_only(&state).unwrap();
        let page = store
            .query_row("SELECT MAX(rootpage) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        let size = store
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (page, size)
    };
    let damaged_page = {
        let mut b = healthy.clone();
        let (from, to) = ((page - 1) * size, page * size);
        b[from as usize..to as usize].fill(0xA5);
        b
    };
    for (case, bytes) in [
        ("ruined header", ruined_header),
        ("damaged page", damaged_page),
    ] {
        for side in ["state.db-wal", "state.db-shm"] {
            let _ = std::fs::remove_file(state.join(side));
        }
        std::fs::write(&db, &bytes).unwrap();
        let _ = std::fs::remove_file(state.join("runner.log"));
        let out = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{case}: {stderr}");
        assert!(
            stderr.contains(&db.display().to_string()) && stderr.contains("hint:"),
            "{case}: the message names the file and a way out: {stderr}"
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "{case}: the file was changed"
        );
        let logs = log_lines(&state);
        assert!(
            logs.iter()
                .any(|l| l["event"] == "state_unreadable" && l["level"] == "ERROR"),
            "{case}: no error event: {logs:?}"
        );
        assert!(
            logs.iter()
                .any(|l| l["event"] == "alert" && l["kind"] == "StateUnreadable"),
            "{case}: no alert: {logs:?}"
        );
        let ran = logs.iter().any(|l| l["event"] == "run_started");
        assert!(!ran, "{case}: a run started on a corrupt store");
        // launchd starts a refused runner again every 10 s: the next start reports the
        // problem in its log and exits 4 again, but does not alert it a second time.
        let _ = std::fs::remove_file(state.join("runner.log"));
        let again = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(4), "{case}: the restart");
        let logs = log_lines(&state);
        assert!(
            logs.iter().any(|l| l["event"] == "state_unreadable"),
            "{case}: the restart logged nothing: {logs:?}"
        );
        assert!(
            !logs
                .iter()
                .any(|l| l["event"] == "alert" && l["kind"] == "StateUnreadable"),
            "{case}: the restart alerted again: {logs:?}"
        );
        // The next case is another problem on a store that was healthy in between.
        let _ = std::fs::remove_file(state.join(runner::daemon::refusal::MARK_FILE));
        let status = status_json(&config);
        let named = status["problems"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p.as_str().is_some_and(|p| p.contains("state.db")))
        });
        assert!(named, "{case}: status names no problem: {status}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 10: an installed runner keeps its tokens across the move to the store. An
/// older runner left `tokens/api.json` (a rotated refresh token; the configured one is
/// spent), `heartbeat-state.json`, `checkpoints/report.json` (an interrupted run) and
/// `breakers.json`.
/// The first start imports them, renames them `*.migrated`, uses the file's token (the
/// token endpoint, which would revoke a spent token, is never called), keeps the
/// heartbeat and resumes the interrupted run after its finished step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_runner_keeps_its_tokens_heartbeats_and_interrupted_runs() {
    use wiremock::matchers::header;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_string("{\"error\":\"invalid_grant\"}"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items"))
        .and(header("authorization", "Bearer a-from-the-file"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"id\": \"1\"}"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(2)
        .mount(&server)
        .await;

    let dir = std::env::temp_dir().join(format!("steadfast-legacy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    std::fs::create_dir_all(state.join("tokens")).unwrap();
    std::fs::create_dir_all(state.join("checkpoints")).unwrap();
    let ledger = dir.join("ledger");
    let config = dir.join("runner.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nstate_dir = \"state\"\nmonitor_interval = \"1h\"\n\
             [services.api]\n\
             [credentials.api]\ntoken_url = \"{u}/token\"\nclient_id = \"c\"\nrefresh_token = \"r-configured-spent\"\n\
             [[jobs]]\nname = \"sync\"\nevery = \"1s\"\n\
             [[jobs.steps]]\nname = \"get\"\nmethod = \"GET\"\nurl = \"{u}/items\"\nservice = \"api\"\ncredential = \"api\"\n\
             [[jobs]]\nname = \"report\"\nevery = \"1h\"\n\
             [[jobs.steps]]\nname = \"a\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"echo a $STEADFAST_IDEMPOTENCY_KEY >> {l}\"]\n\
             [[jobs.steps]]\nname = \"b\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"echo b $STEADFAST_IDEMPOTENCY_KEY >> {l}\"]\n",
            u = server.uri(),
            l = ledger.display(),
        ),
    )
    .unwrap();
    let now = chrono::Utc::now();
    let expires = (now + chrono::Duration::hours(1)).to_rfc3339();
    std::fs::write(
        state.join("tokens/api.json"),
        format!(
            "{{\"access_token\":\"a-from-the-file\",\"expires_at\":\"{expires}\",\"refresh_token\":\"r-rotated-from-the-file\"}}"
        ),
    )
    .unwrap();
    let last_ok = now.timestamp() - 30;
    std::fs::write(
        state.join("heartbeat-state.json"),
        format!(
            "{{\"lastChecks\":{{\"sync\":{last_ok},\"report\":{last_ok}}},\"thresholds\":{{}}}}"
        ),
    )
    .unwrap();
    std::fs::write(
        state.join("breakers.json"),
        format!(
            "{{\"services\":{{\"api\":{{\"state\":\"closed\",\"until\":\"{expires}\",\"trips\":2}},\"gone\":{{\"state\":\"open\",\"until\":\"{expires}\",\"trips\":1}}}}}}"
        ),
    )
    .unwrap();
    let due = chrono::DateTime::from_timestamp(now.timestamp() - 120, 0).unwrap();
    let run = steadfast_core::job::RunId::new("report", due);
    let key_a = steadfast_core::checkpoint::idempotency_key(&run, "a");
    std::fs::write(
        state.join("checkpoints/report.json"),
        format!(
            "{{\"job\":\"report\",\"run_id\":\"{run}\",\"started_at\":\"{}\",\"completed\":[{{\"name\":\"a\",\"idempotency_key\":\"{key_a}\",\"outputs\":{{}},\"completed_at\":\"{}\"}}]}}",
            due.to_rfc3339(),
            due.to_rfc3339()
        ),
    )
    .unwrap();

    let mut daemon = Daemon::start(&config);
    let run_id = run.to_string();
    wait_for("a sync run and the resumed report run", async || {
        let logs = log_lines(&state);
        let finished = |job: &str, run: Option<&str>| {
            logs.iter().any(|l| {
                l["event"] == "run_finished"
                    && l["job"] == job
                    && l["outcome"] == "succeeded"
                    && run.is_none_or(|r| l["run_id"] == r)
            })
        };
        finished("sync", None) && finished("report", Some(&run_id))
    })
    .await;
    assert_eq!(daemon.terminate().code(), Some(0));

    // The file's access token was used and the spent configured token never sent.
    let token_calls = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .count();
    assert_eq!(token_calls, 0, "the token endpoint was called");
    for old in [
        "tokens/api.json",
        "heartbeat-state.json",
        "checkpoints/report.json",
        "breakers.json",
    ] {
        assert!(!state.join(old).exists(), "{old} was not renamed");
        assert!(
            state.join(format!("{old}.migrated")).exists(),
            "{old}.migrated is missing"
        );
    }
    let store = runner::env::tokio::FileDb::open_read_only(&state).unwrap();
    let refresh: String = store
        .query_row(
            "SELECT refresh_token FROM tokens WHERE credential = 'api'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refresh, "r-rotated-from-the-file");
    // The breakers moved to the store, for the services still configured only.
    let breakers: Vec<(String, i64)> = store
        .prepare("SELECT service, trips FROM breakers ORDER BY service")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(breakers, [("api".to_string(), 2)]);
    // The interrupted run resumed after `a`: only `b` ran, under the run's own key.
    let lines = std::fs::read_to_string(&ledger).unwrap_or_default();
    let key_b = steadfast_core::checkpoint::idempotency_key(&run, "b");
    assert!(lines.lines().any(|l| l == format!("b {key_b}")), "{lines}");
    assert!(!lines.contains(&key_a), "step a ran again: {lines}");
    // Secrets never reach the log.
    for l in log_lines(&state) {
        let text = l.to_string();
        assert!(!text.contains("from-the-file"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
