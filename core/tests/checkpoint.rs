//! Checkpoint tests (pattern 5): idempotency keys, and the durability of the state files
//! the runner still writes (tokens, breakers, the daemon's status file) under the
//! testkit's POSIX crash model.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use chrono::{TimeZone, Utc};
use steadfast_core::checkpoint::idempotency_key;
use steadfast_core::env::{Env, FileSystem};
use steadfast_core::job::RunId;
use steadfast_core::store;
use steadfast_testkit::{CrashAt, TestEnv};

fn run(job: &str, minute: u32) -> RunId {
    RunId::new(job, Utc.with_ymd_and_hms(2026, 3, 2, 6, minute, 0).unwrap())
}

#[test]
fn keys_are_stable_and_distinct() {
    let a = idempotency_key(&run("blog", 0), "publish");
    assert_eq!(a, idempotency_key(&run("blog", 0), "publish"));
    assert_eq!(a.len(), 32);
    assert_ne!(a, idempotency_key(&run("blog", 15), "publish"));
    assert_ne!(a, idempotency_key(&run("blog", 0), "draft"));
    assert_ne!(a, idempotency_key(&run("mail", 0), "publish"));
}

#[tokio::test(start_paused = true)]
async fn an_unsynced_write_is_lost_but_the_atomic_one_is_not() {
    let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
    let fs = env.fs();
    let dir = Path::new("/state/checkpoints");
    fs.create_dir_all(dir).await.unwrap();
    let naive = dir.join("naive.json");
    let atomic = dir.join("atomic.json");
    store::write_atomic(fs, &atomic, b"{\"kept\": true}")
        .await
        .unwrap();
    // After the atomic write: its sync_dir would make this name durable too (over
    // unsynced, so empty, data).
    fs.write(&naive, b"{}").await.unwrap();
    env.parts().fs.crash();
    let lost = fs.read(&naive).await.unwrap_err();
    assert_eq!(lost.kind(), std::io::ErrorKind::NotFound);
    // Fails if write_atomic skips any of sync, rename or sync_dir: the name would be
    // missing, or present over data that never reached the disk (empty).
    assert_eq!(fs.read(&atomic).await.unwrap(), b"{\"kept\": true}");
    assert_eq!(env.parts().fs.paths(), [atomic], "no temp file left behind");
}

const FILE: &str = "/state/token.json";

fn value(steps: &[&str]) -> serde_json::Value {
    serde_json::json!({ "steps": steps })
}

/// A disk holding the old state (one step) durably.
async fn with_old_state() -> TestEnv {
    let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
    env.fs().create_dir_all(Path::new("/state")).await.unwrap();
    store::write_json(env.fs(), Path::new(FILE), &value(&["draft"]))
        .await
        .unwrap();
    env
}

/// Writes the new state, then removes the file; `acked` counts the calls that returned.
async fn replace_then_remove(env: &TestEnv, acked: &AtomicU8) {
    store::write_json(env.fs(), Path::new(FILE), &value(&["draft", "publish"]))
        .await
        .unwrap();
    acked.store(1, Ordering::SeqCst);
    env.fs().remove(Path::new(FILE)).await.unwrap();
    env.fs().sync_dir(Path::new("/state")).await.unwrap();
    acked.store(2, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_any_durable_operation_leaves_the_old_or_the_new_state_file() {
    let env = with_old_state().await;
    let points = env.parts().fs.crash_points().clone();
    let before = points.seen();
    replace_then_remove(&env, &AtomicU8::new(0)).await;
    let n = points.seen() - before;
    assert!(n > 0, "write and remove are durable operations");
    let mut outcomes = BTreeSet::new();
    for k in 1..=n {
        for at in [CrashAt::Before(k), CrashAt::After(k)] {
            let env = with_old_state().await;
            let points = env.parts().fs.crash_points().clone();
            points.arm(at);
            let acked = AtomicU8::new(0);
            tokio::select! {
                biased;
                () = replace_then_remove(&env, &acked) => panic!("{at:?}: no crash"),
                hit = points.crashed() => assert!(hit.op > before, "{at:?}: {hit:?}"),
            }
            // The process is gone (its future dropped); the power goes too.
            env.parts().fs.crash();
            points.disarm();
            let state: Option<serde_json::Value> =
                match store::read_json(env.fs(), Path::new(FILE)).await {
                    Ok(state) => state,
                    Err(e) => panic!("{at:?}: torn state file: {e}"),
                };
            let acked = acked.load(Ordering::SeqCst);
            let outcome = match &state {
                Some(v) if *v == value(&["draft"]) && acked == 0 => "old",
                Some(v) if *v == value(&["draft", "publish"]) => "new",
                None if acked == 1 => "removed",
                _ => panic!("{at:?}: after {acked} acknowledged calls the state is {state:?}"),
            };
            outcomes.insert(outcome);
        }
    }
    assert_eq!(
        outcomes,
        BTreeSet::from(["new", "old", "removed"]),
        "every state was reached by some crash"
    );
}
