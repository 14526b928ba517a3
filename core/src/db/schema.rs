//! The store's schema, as numbered migrations applied in order at start.
//!
//! Version N is `MIGRATIONS[N - 1]`; `schema_version` holds the version reached. Each
//! migration runs in its own transaction together with the version bump, so a crash
//! mid-migration leaves the previous version. A database newer than this runner is
//! refused rather than guessed at. Only portable SQL: `BIGINT` milliseconds for
//! instants, `TEXT`, `INTEGER`, composite primary keys.

use super::{Db, DbError};
use crate::env::Env;

/// Every migration, oldest first. Never edit one that has shipped: add another.
pub const MIGRATIONS: &[&str] = &[
    // 1: the journal of runs and everything else durable.
    "
    -- Jobs the runner has known. A job's slots count from the first start that knew it.
    CREATE TABLE jobs (
        job TEXT PRIMARY KEY,
        registered_at BIGINT NOT NULL,
        last_ok_at BIGINT,
        failure_streak INTEGER NOT NULL DEFAULT 0,
        stopped_reason TEXT
    );
    -- Every slot of every job: running (started, maybe interrupted), done, or missed.
    -- A row covers the slots from `due` to `last_due` (`slot_count` of them): one for a
    -- run, possibly many for slots missed for one reason, so long downtime stays bounded.
    CREATE TABLE slots (
        job TEXT NOT NULL,
        due BIGINT NOT NULL,
        last_due BIGINT NOT NULL,
        slot_count BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        outcome TEXT,
        reason TEXT,
        started_at BIGINT,
        finished_at BIGINT,
        PRIMARY KEY (job, due)
    );
    -- Open runs and missed ranges are looked up at every slot: indexes keep that
    -- independent of how long the history is.
    CREATE INDEX slots_by_state ON slots (state, job, due);
    CREATE INDEX slots_ranges ON slots (job, due) WHERE slot_count > 1;
    -- Each step a run completed, with what a resume needs.
    CREATE TABLE steps (
        job TEXT NOT NULL,
        due BIGINT NOT NULL,
        step TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        outputs TEXT NOT NULL,
        done_at BIGINT NOT NULL,
        PRIMARY KEY (job, due, step)
    );
    -- Process groups of command steps that are running, so a restart can stop what a
    -- killed runner left behind before the step runs again.
    CREATE TABLE processes (
        job TEXT NOT NULL,
        due BIGINT NOT NULL,
        step TEXT NOT NULL,
        pgid BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        PRIMARY KEY (job, due, step)
    );
    -- Each credential's token chain: the refresh token to present next (a rotation
    -- replaces it in the same transaction as the access token it came with), the chain's
    -- configured start (SHA-256, so a re-authorised config wins) and a refresh sent whose
    -- answer is not kept yet (set before the grant is sent, cleared with its answer).
    CREATE TABLE tokens (
        credential TEXT PRIMARY KEY,
        access_token TEXT,
        expires_at BIGINT,
        refresh_token TEXT NOT NULL,
        configured_sha256 TEXT,
        refresh_sent_at BIGINT,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE breakers (
        service TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        until_at BIGINT NOT NULL,
        trips INTEGER NOT NULL,
        opened_at BIGINT
    );
    -- Per-service 'not before' instants (Retry-After, quota resets, open breakers).
    CREATE TABLE gates (
        service TEXT PRIMARY KEY,
        not_before BIGINT NOT NULL,
        reason TEXT NOT NULL
    );
    -- Alert deduplication, so a restart neither repeats an alert nor forgets an episode:
    -- the heartbeat monitor's open episodes (looks in a row, alerted or not yet) and the
    -- last time an alert of a key was sent.
    CREATE TABLE alerts (
        dedup_key TEXT PRIMARY KEY,
        opened_at BIGINT NOT NULL,
        looks INTEGER NOT NULL,
        sent_at BIGINT
    );
    ",
];

/// The newest schema version this runner knows.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the store to [`latest`]; refuses a newer one.
pub(super) async fn migrate<E: Env>(db: &Db<E>) -> Result<(), DbError> {
    db.write("create the schema version table", |tx| {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
    })
    .await?;
    let found = version(db)?;
    if found > latest() {
        return Err(DbError::Newer {
            found,
            known: latest(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let to = index as i64 + 1;
        db.write("migrate the state database", move |tx| {
            tx.execute_batch(sql)?;
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [to])?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// The version the store is at (0: empty).
pub fn version<E: Env>(db: &Db<E>) -> Result<i64, DbError> {
    db.read("read the schema version", |c| {
        c.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
    })
}
