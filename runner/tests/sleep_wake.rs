//! The real daemon stopped with `SIGSTOP` across several due times and resumed with
//! `SIGCONT`: the closest a Linux test gets to a Mac's sleep in the same process.
//!
//! What it can and cannot show: `SIGSTOP` freezes the process, but Linux's
//! `CLOCK_MONOTONIC` keeps running meanwhile (a Mac's sleep stops it), so on `SIGCONT`
//! the runner sees lateness, not a divergence of the wall and monotonic clocks. The
//! divergence itself (and the `wake` event) is covered by the core's tests and the
//! simulator; this test checks the policy on a real process: every slot is in the
//! journal exactly once (run, or missed with a reason), the slots that passed while
//! stopped give at most the policy's one catch-up run (`latest`), and the command
//! step's ledger shows no slot run twice. Real time is used because a real process is
//! involved; nothing asserts a duration.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Gives up waiting for the daemon after this long (a failure, not a skip).
const PATIENCE: Duration = Duration::from_secs(60);
/// The job is due every this many milliseconds.
const EVERY_MS: i64 = 2000;

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

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A stopped process must be continued to die cleanly in every case.
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ledger(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wall_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

#[derive(Debug)]
struct Row {
    due: i64,
    last_due: i64,
    count: i64,
    state: String,
    reason: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_and_continued_daemon_accounts_for_every_slot_without_a_burst() {
    let dir = std::env::temp_dir().join(format!("steadfast-sleep-wake-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let config = dir.join("runner.toml");
    let ledger_path = dir.join("ledger.txt");
    std::fs::write(
        &config,
        format!(
            "[runner]\nstate_dir = \"state\"\nshutdown_grace = \"2s\"\nmonitor_interval = \"1h\"\n\
             [[jobs]]\nname = \"ledger\"\nevery = \"2s\"\ndeadline = \"1m\"\nheartbeat_threshold = \"1h\"\n\
             catch_up = \"latest\"\n\
             [[jobs.steps]]\nname = \"append\"\nkind = \"command\"\n\
             argv = [\"/bin/sh\", \"-c\", \"echo \\\"$STEADFAST_RUN_ID\\\" >> '{}'\"]\n",
            ledger_path.display()
        ),
    )
    .unwrap();

    let daemon = Daemon::start(&config);
    wait_for("two runs before the stop", || {
        ledger(&ledger_path).len() >= 2
    })
    .await;
    daemon.signal("-STOP");
    let stopped_at = wall_ms();
    // Stopped across five or six due times.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let continued_at = wall_ms();
    let before = ledger(&ledger_path).len();
    daemon.signal("-CONT");
    wait_for("three runs after the wake", || {
        ledger(&ledger_path).len() >= before + 3
    })
    .await;
    daemon.signal("-TERM");
    let mut daemon = daemon;
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");

    let store = runner::env::tokio::FileDb::open_read_only(&state).expect("the store");
    let mut stmt = store
        .prepare(
            "SELECT due, last_due, slot_count, state, reason FROM slots
             WHERE job = 'ledger' ORDER BY due",
        )
        .unwrap();
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok(Row {
                due: r.get(0)?,
                last_due: r.get(1)?,
                count: r.get(2)?,
                state: r.get(3)?,
                reason: r.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(stmt);
    drop(store);

    // Every slot from the first to the last is in exactly one row: no gap, no overlap.
    for row in &rows {
        assert_eq!(
            row.count,
            (row.last_due - row.due) / EVERY_MS + 1,
            "a row's count matches its range: {row:?}"
        );
    }
    for pair in rows.windows(2) {
        assert_eq!(
            pair[1].due - pair[0].last_due,
            EVERY_MS,
            "a slot unaccounted or accounted twice between {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    // The slots that passed while stopped went through the policy: journaled missed
    // (`asleep`) but for the one catch-up run.
    let asleep: i64 = rows
        .iter()
        .filter(|r| r.state == "missed" && r.reason.as_deref() == Some("asleep"))
        .map(|r| r.count)
        .sum();
    assert!(
        asleep >= 3,
        "slots missed while stopped: {asleep}; {rows:#?}"
    );
    let runs_due_while_stopped = rows
        .iter()
        .filter(|r| r.state != "missed" && r.due > stopped_at && r.due < continued_at)
        .count();
    assert!(
        runs_due_while_stopped <= 1,
        "a burst: {runs_due_while_stopped} runs for slots due while stopped; {rows:#?}"
    );
    // The ledger: every run once, and every run is in the journal.
    let lines = ledger(&ledger_path);
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "a slot ran twice: {lines:?}");
    let runs = rows.iter().filter(|r| r.state != "missed").count();
    assert_eq!(runs, lines.len(), "runs journaled vs ledger lines");
    let _ = std::fs::remove_dir_all(&dir);
}
