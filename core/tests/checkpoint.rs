//! Checkpoint tests (pattern 5): idempotency keys, and the durability of the file
//! writes the runner still makes (the daemon's status file).

use std::path::Path;

use chrono::{TimeZone, Utc};
use steadfast_core::checkpoint::idempotency_key;
use steadfast_core::env::{Env, FileSystem};
use steadfast_core::job::RunId;
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
