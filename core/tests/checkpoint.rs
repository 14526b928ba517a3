//! Checkpoint tests (pattern 5) on the test environment.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{TimeZone, Utc};
use steadfast_core::checkpoint::*;
use steadfast_core::env::{Env, FileSystem};
use steadfast_core::job::RunId;
use steadfast_core::store::StoreError;
use steadfast_testkit::TestEnv;

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
    fs.write(Path::new("/state/checkpoints/x.json"), b"{}")
        .await
        .unwrap();
    env.parts().fs.crash();
    assert!(
        fs.read(Path::new("/state/checkpoints/x.json"))
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_checkpoint_is_reported_and_moved_aside() {
    let env = TestEnv::new(chrono::DateTime::UNIX_EPOCH, 1);
    let cps = Checkpoints::new(env.clone(), Path::new("/state"));
    let path = Path::new("/state/checkpoints/blog.json");
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
