//! Checkpoint tests (pattern 5) on the test environment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use chrono::{TimeZone, Utc};
use steadfast_core::checkpoint::*;
use steadfast_core::env::{Env, FileSystem};
use steadfast_core::job::RunId;
use steadfast_core::store::{self, StoreError};
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
async fn saved_progress_survives_a_crash_and_clear_forgets_it() {
    let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
    let cps = Checkpoints::new(env.clone(), Path::new("/state"));
    let mut cp = Checkpoint::new(&run("blog", 0), env.now());
    cp.completed.push(CompletedStep {
        name: "draft".into(),
        idempotency_key: idempotency_key(&run("blog", 0), "draft"),
        outputs: BTreeMap::from([("id".into(), "42".into())]),
        completed_at: env.now(),
    });
    cps.save(&cp).await.unwrap();
    env.parts().fs.crash();
    let back = cps.load("blog").await.unwrap().unwrap();
    assert_eq!(back, cp);
    assert_eq!(back.done("draft").unwrap().outputs["id"], "42");
    cps.clear("blog").await.unwrap();
    env.parts().fs.crash();
    assert_eq!(cps.load("blog").await.unwrap(), None);
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

fn progress(steps: &[&str], env: &TestEnv) -> Checkpoint {
    let id = run("blog", 0);
    let mut cp = Checkpoint::new(&id, env.now());
    for step in steps {
        cp.completed.push(CompletedStep {
            name: step.to_string(),
            idempotency_key: idempotency_key(&id, step),
            outputs: BTreeMap::new(),
            completed_at: env.now(),
        });
    }
    cp
}

/// A disk holding the old checkpoint (one step done) durably, and the new one (two).
async fn with_old_checkpoint() -> (TestEnv, Checkpoints<TestEnv>, Checkpoint, Checkpoint) {
    let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
    let cps = Checkpoints::new(env.clone(), Path::new("/state"));
    let old = progress(&["draft"], &env);
    let new = progress(&["draft", "publish"], &env);
    cps.save(&old).await.unwrap();
    (env, cps, old, new)
}

/// Saves `new`, then clears; `acked` counts the calls that returned.
async fn save_then_clear(cps: &Checkpoints<TestEnv>, new: &Checkpoint, acked: &AtomicU8) {
    cps.save(new).await.unwrap();
    acked.store(1, Ordering::SeqCst);
    cps.clear("blog").await.unwrap();
    acked.store(2, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_any_durable_operation_leaves_the_old_or_the_new_checkpoint() {
    let (env, cps, _, new) = with_old_checkpoint().await;
    let points = env.parts().fs.crash_points().clone();
    let before = points.seen();
    save_then_clear(&cps, &new, &AtomicU8::new(0)).await;
    let n = points.seen() - before;
    assert!(n > 0, "save and clear are durable operations");
    let mut outcomes = BTreeSet::new();
    for k in 1..=n {
        for at in [CrashAt::Before(k), CrashAt::After(k)] {
            let (env, cps, old, new) = with_old_checkpoint().await;
            let points = env.parts().fs.crash_points().clone();
            points.arm(at);
            let acked = AtomicU8::new(0);
            tokio::select! {
                biased;
                () = save_then_clear(&cps, &new, &acked) => panic!("{at:?}: no crash"),
                hit = points.crashed() => assert!(hit.op > before, "{at:?}: {hit:?}"),
            }
            // The process is gone (its future dropped); the power goes too.
            env.parts().fs.crash();
            points.disarm();
            let state = match cps.load("blog").await {
                Ok(state) => state,
                Err(e) => panic!("{at:?}: torn checkpoint: {e}"),
            };
            let acked = acked.load(Ordering::SeqCst);
            let outcome = match &state {
                Some(cp) if *cp == old && acked == 0 => "old",
                Some(cp) if *cp == new => "new",
                None if acked == 1 => "cleared",
                _ => panic!("{at:?}: after {acked} acknowledged calls the state is {state:?}"),
            };
            outcomes.insert(outcome);
        }
    }
    assert_eq!(
        outcomes,
        BTreeSet::from(["cleared", "new", "old"]),
        "every state was reached by some crash"
    );
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_checkpoint_is_reported_and_moved_aside() {
    let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
    let cps = Checkpoints::new(env.clone(), Path::new("/state"));
    let path = Path::new("/state/checkpoints/blog.json");
    env.fs()
        .create_dir_all(Path::new("/state/checkpoints"))
        .await
        .unwrap();
    env.fs()
        .write(path, b"{\"job\": \"blog\", \"run_")
        .await
        .unwrap();
    let err = cps.load("blog").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(cps.load("blog").await.unwrap(), None);
    assert!(
        env.parts()
            .fs
            .contents(Path::new("/state/checkpoints/blog.corrupt"))
            .is_some()
    );
}
