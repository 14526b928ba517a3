//! At start, before any step runs: stop the process groups a previous runner left.
//!
//! A runner killed with `kill -9` (or by the OOM killer, or a power cut of the runner
//! alone) cannot stop its command steps; their groups are journaled
//! ([`crate::db::processes`]). Each one found is stopped here (SIGTERM, then SIGKILL
//! after the grace), so a resumed step never runs beside its own orphan.

use std::time::Duration;

use crate::db::Db;
use crate::env::{Env, LeftGroup, Reaped, Spawner};
use crate::event::{Event, EventKind};

/// The wait between SIGTERM and SIGKILL is at most this long, whatever the grace.
const MAX_GRACE: Duration = Duration::from_secs(60);

/// Stops every journaled process group and forgets it; returns how each ended.
pub(super) async fn reap<E: Env>(env: &E, db: &Db<E>, grace: Duration) -> Vec<Reaped> {
    let left = match db.processes() {
        Ok(left) => left,
        Err(e) => {
            env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
            return Vec::new();
        }
    };
    // Every group is stopped at once: the grace runs once, not once per group.
    let mut stops = tokio::task::JoinSet::new();
    for (index, record) in left.iter().enumerate() {
        let env = env.clone();
        let group = LeftGroup {
            pgid: record.pgid,
            marker: format!("STEADFAST_RUN_ID={}", record.run),
        };
        let grace = grace.min(MAX_GRACE);
        stops.spawn(async move {
            // 0 and 1 are never a step's group (0 would be the runner's own).
            let outcome = if group.pgid <= 1 {
                Ok(Reaped::NotOurs)
            } else {
                env.spawner().stop_group(&group, grace).await
            };
            (index, outcome)
        });
    }
    let mut outcomes: Vec<(usize, std::io::Result<Reaped>)> = Vec::with_capacity(left.len());
    while let Some(joined) = stops.join_next().await {
        match joined {
            Ok(done) => outcomes.push(done),
            Err(e) => env.emit(
                Event::new(EventKind::HeartbeatFinding)
                    .detail(format!("a stop of a left process group failed: {e}")),
            ),
        }
    }
    // Reported in the journal's order, whatever order the stops ended in.
    outcomes.sort_by_key(|(index, _)| *index);
    let mut reaped = Vec::with_capacity(outcomes.len());
    for (index, outcome) in outcomes {
        let record = &left[index];
        match outcome {
            Ok(how) => {
                env.emit(
                    Event::new(EventKind::ProcessReaped)
                        .job(record.run.job())
                        .run_id(&record.run)
                        .step(&record.step)
                        .detail(format!(
                            "process group {} left by a previous runner: {}",
                            record.pgid,
                            how.as_str()
                        )),
                );
                reaped.push(how);
                if let Err(e) = db.process_ended(&record.run, &record.step).await {
                    env.emit(Event::new(EventKind::HeartbeatFinding).detail(e.to_string()));
                }
            }
            Err(e) => {
                // The row stays: the next start tries again. The step may run beside
                // its orphan, so this is said loudly.
                env.emit(
                    Event::new(EventKind::HeartbeatFinding)
                        .job(record.run.job())
                        .run_id(&record.run)
                        .step(&record.step)
                        .detail(format!(
                            "failed to stop process group {} left by a previous runner: {e}",
                            record.pgid
                        )),
                );
            }
        }
    }
    reaped
}
