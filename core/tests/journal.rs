//! The journal of runs (the store's SQL on the in-memory fake): every slot run once,
//! resumed, or recorded missed; nothing repeated after a restart.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use steadfast_core::db::journal::StartError;
use steadfast_core::db::{Db, DbError, MissReason, SlotState, StepRecord, schema};
use steadfast_core::env::Env;
use steadfast_core::event::Outcome;
use steadfast_core::job::RunId;
use steadfast_testkit::TestEnv;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
}

async fn open(env: &TestEnv) -> Db<TestEnv> {
    Db::open(env.clone(), Path::new("/state")).await.unwrap()
}

fn step(name: &str, run: &RunId, id: &str) -> StepRecord {
    StepRecord {
        name: name.to_string(),
        idempotency_key: steadfast_core::checkpoint::idempotency_key(run, name),
        outputs: BTreeMap::from([("id".to_string(), id.to_string())]),
        done_at: at(6, 1),
    }
}

#[tokio::test(start_paused = true)]
async fn a_runs_steps_survive_a_restart_and_a_resume_counts_as_an_attempt() {
    let env = TestEnv::new(at(6, 0), 1);
    let db = open(&env).await;
    db.register_job("blog", at(6, 0)).await.unwrap();
    let run = RunId::new("blog", at(6, 0));
    assert_eq!(db.start_run(&run, at(6, 0)).await.unwrap(), 1);
    db.step_done(&run, &step("draft", &run, "42"))
        .await
        .unwrap();
    drop(db);
    // A new process: the run is open, its finished step is there.
    let db = open(&env).await;
    let open_runs = db.unfinished("blog").unwrap();
    assert_eq!(open_runs.len(), 1);
    assert_eq!(open_runs[0].run_id(), run);
    assert_eq!(db.steps_done(&run).unwrap(), [step("draft", &run, "42")]);
    assert_eq!(db.start_run(&run, at(6, 5)).await.unwrap(), 2);
    let streak = db
        .finish_run(&run, Outcome::Succeeded, None, at(6, 6))
        .await
        .unwrap();
    assert_eq!(streak, 0);
    assert!(db.unfinished("blog").unwrap().is_empty());
    assert_eq!(db.job("blog").unwrap().unwrap().last_ok_at, Some(at(6, 6)));
}

#[tokio::test(start_paused = true)]
async fn a_settled_slot_is_never_started_again() {
    let env = TestEnv::new(at(6, 0), 1);
    let db = open(&env).await;
    db.register_job("blog", at(6, 0)).await.unwrap();
    let run = RunId::new("blog", at(6, 0));
    db.start_run(&run, at(6, 0)).await.unwrap();
    db.finish_run(&run, Outcome::Succeeded, None, at(6, 1))
        .await
        .unwrap();
    let err = db.start_run(&run, at(6, 2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Settled {
                state: SlotState::Done,
                ..
            }
        ),
        "{err}"
    );
    // A slot recorded missed is settled too, even inside a range.
    db.record_missed(
        "blog",
        at(7, 0),
        at(8, 0),
        5,
        MissReason::Downtime,
        at(8, 1),
    )
    .await
    .unwrap();
    let inside = RunId::new("blog", at(7, 30));
    assert!(matches!(
        db.start_run(&inside, at(8, 2)).await.unwrap_err(),
        StartError::Settled {
            state: SlotState::Missed,
            ..
        }
    ));
    assert_eq!(db.last_slot("blog").unwrap(), Some(at(8, 0)));
}

#[tokio::test(start_paused = true)]
async fn missed_ranges_are_counted_by_reason_and_never_rewrite_a_run() {
    let env = TestEnv::new(at(6, 0), 1);
    let db = open(&env).await;
    db.register_job("mail", at(6, 0)).await.unwrap();
    let run = RunId::new("mail", at(6, 15));
    db.start_run(&run, at(6, 15)).await.unwrap();
    // Recording a range that starts on a slot with a run keeps the run.
    db.record_missed(
        "mail",
        at(6, 15),
        at(6, 45),
        3,
        MissReason::Downtime,
        at(7, 0),
    )
    .await
    .unwrap();
    assert_eq!(db.slot(&run).unwrap().unwrap().state, SlotState::Running);
    db.record_missed("mail", at(7, 0), at(7, 0), 1, MissReason::Window, at(7, 0))
        .await
        .unwrap();
    db.record_missed(
        "mail",
        at(7, 15),
        at(8, 0),
        4,
        MissReason::Downtime,
        at(8, 0),
    )
    .await
    .unwrap();
    let counts = db.missed_counts("mail", at(0, 0)).unwrap();
    assert_eq!(counts[&MissReason::Downtime], 4);
    assert_eq!(counts[&MissReason::Window], 1);
    // A window skip is the job behaving as configured: it counts as a heartbeat.
    assert_eq!(db.job("mail").unwrap().unwrap().last_ok_at, Some(at(7, 0)));
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_build_a_streak_that_a_good_run_resets_and_fatal_stops_the_job() {
    let env = TestEnv::new(at(6, 0), 1);
    let db = open(&env).await;
    db.register_job("yt", at(6, 0)).await.unwrap();
    let first = RunId::new("yt", at(6, 0));
    db.start_run(&first, at(6, 0)).await.unwrap();
    assert_eq!(
        db.note_attempt(&first, Outcome::Failed, Some("http 503"), at(6, 1))
            .await
            .unwrap(),
        1
    );
    // Still open: a later slot resumes it.
    assert_eq!(
        db.unfinished("yt").unwrap()[0].outcome,
        Some(Outcome::Failed)
    );
    db.start_run(&first, at(6, 30)).await.unwrap();
    assert_eq!(
        db.finish_run(&first, Outcome::Succeeded, None, at(6, 31))
            .await
            .unwrap(),
        0
    );
    let second = RunId::new("yt", at(7, 0));
    db.start_run(&second, at(7, 0)).await.unwrap();
    db.finish_run(&second, Outcome::Fatal, Some("invalid_grant"), at(7, 1))
        .await
        .unwrap();
    let job = db.job("yt").unwrap().unwrap();
    assert_eq!(job.failure_streak, 1);
    assert_eq!(job.stopped_reason.as_deref(), Some("invalid_grant"));
}

#[tokio::test(start_paused = true)]
async fn unreadable_progress_is_an_error_never_an_empty_run() {
    let env = TestEnv::new(at(6, 0), 1);
    let db = open(&env).await;
    let run = RunId::new("blog", at(6, 0));
    db.start_run(&run, at(6, 0)).await.unwrap();
    db.step_done(&run, &step("draft", &run, "42"))
        .await
        .unwrap();
    env.parts()
        .db
        .with(|c| c.execute("UPDATE steps SET outputs = '{\"id\": 4'", []))
        .unwrap();
    let err = db.steps_done(&run).unwrap_err();
    assert!(matches!(err, DbError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("draft"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_store_from_a_newer_runner_is_refused() {
    let env = TestEnv::new(at(6, 0), 1);
    let db = open(&env).await;
    assert_eq!(schema::version(&db).unwrap(), schema::latest());
    env.parts()
        .db
        .with(|c| c.execute("UPDATE schema_version SET version = version + 1", []))
        .unwrap();
    drop(db);
    let err = Db::open(env.clone(), Path::new("/state"))
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Newer { .. }), "{err}");
    assert!(err.to_string().contains("hint"), "{err}");
    let _ = env.now();
}

#[tokio::test(start_paused = true)]
async fn pruning_keeps_open_runs_and_each_jobs_latest_row() {
    let env = TestEnv::new(at(6, 0), 1);
    let db = open(&env).await;
    let old = RunId::new("mail", at(1, 0));
    db.start_run(&old, at(1, 0)).await.unwrap();
    db.finish_run(&old, Outcome::Succeeded, None, at(1, 1))
        .await
        .unwrap();
    let open_run = RunId::new("mail", at(2, 0));
    db.start_run(&open_run, at(2, 0)).await.unwrap();
    let last = RunId::new("mail", at(3, 0));
    db.start_run(&last, at(3, 0)).await.unwrap();
    db.finish_run(&last, Outcome::Succeeded, None, at(3, 1))
        .await
        .unwrap();
    db.prune(at(5, 0)).await.unwrap();
    assert!(db.slot(&old).unwrap().is_none());
    assert!(db.slot(&open_run).unwrap().is_some());
    assert_eq!(db.last_slot("mail").unwrap(), Some(at(3, 0)));
}
