//! The judge on hand-written ledgers: each measure counts what it should and can fail.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use steadfast_core::alert::{Alert, AlertKind};
use steadfast_core::config::{Config, NoSecretSources, parse_config};

use super::*;
use crate::faults::FaultKind;
use crate::services::ledger::{AnsweredBy, Effect, LedgerEntry, TokenSeen};

const CONFIG: &str = r#"
[windows]
publish = { start = "09:00", end = "22:00" }

[services.blog]

[[jobs]]
name = "blog"
every = "30m"
deadline = "5m"

[[jobs.steps]]
name = "draft"
method = "GET"
url = "http://blog.sim/v1/draft"
service = "blog"

[[jobs.steps]]
name = "publish"
action = "publish"
method = "POST"
url = "http://blog.sim/v1/posts/{{run.id}}"
service = "blog"
body = '{"run": "{{run.id}}"}'

[[jobs.steps]]
name = "log"
method = "POST"
url = "http://blog.sim/v1/log"
service = "blog"
body = '{"run": "{{run.id}}"}'
"#;

fn read(text: &str) -> Config {
    parse_config(text, std::path::Path::new("/judge.toml"), &NoSecretSources)
        .unwrap_or_else(|e| panic!("test config: {e:?}"))
}

fn at(hm: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2026-03-02T{hm}:00Z"))
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn get(hm: &str, path: &str) -> LedgerEntry {
    LedgerEntry {
        seq: 0,
        at: at(hm),
        answered_at: at(hm),
        service: Arc::from("blog.sim"),
        method: "GET".into(),
        path: path.into(),
        client: None,
        token: TokenSeen::NotChecked,
        idempotency_key: None,
        run: None,
        status: 200,
        answered_by: AnsweredBy::Service,
        retry_after_until: None,
        effect: Effect::None,
        duplicate: false,
    }
}

/// A write of the run due at `due` (`HH:MM`), applied at `hm`.
fn write(hm: &str, path: &str, due: &str) -> LedgerEntry {
    let run = format!("blog-20260302T{}00Z", due.replace(':', ""));
    LedgerEntry {
        method: "POST".into(),
        run: run.parse().ok(),
        effect: Effect::Applied,
        ..get(hm, path)
    }
}

fn publish(hm: &str, due: &str) -> LedgerEntry {
    write(
        hm,
        &format!("/v1/posts/blog-20260302T{}00Z", due.replace(':', "")),
        due,
    )
}

fn alert(hm: &str) -> Alert {
    Alert {
        at: at(hm),
        kind: AlertKind::Overdue,
        job: Some("blog".into()),
        service: None,
        message: "blog failing".into(),
    }
}

fn judged(config: &Config, ledger: &[LedgerEntry], alerts: &[Alert]) -> Judgement {
    judge(&Case {
        config,
        zone: chrono_tz::UTC,
        start: at("08:00"),
        end: at("11:05"),
        ledger,
        ledger_dropped: 0,
        alerts,
        away: &[],
        boots: &[],
        steps: &[],
        away_dropped: 0,
    })
}

/// The world of the module tests: slots 09:00, 09:30, 10:00, 10:30 (08:30 is skipped:
/// the publish window opens at 09:00).
fn world() -> (Vec<LedgerEntry>, Vec<Alert>) {
    let ledger = vec![
        // 09:00 succeeded; its log spilled past the next slot but names its run.
        get("09:00", "/v1/draft"),
        publish("09:01", "09:00"),
        write("09:35", "/v1/log", "09:00"),
        // 09:30: nothing applied (a 429, then an expired token), an alert at 09:40.
        LedgerEntry {
            status: 429,
            retry_after_until: Some(at("09:33")),
            ..get("09:30", "/v1/draft")
        },
        LedgerEntry {
            status: 401,
            token: TokenSeen::Expired {
                age_secs: 3700,
                expired_for_secs: 100,
            },
            ..get("09:31", "/v1/draft")
        },
        // 10:00 degraded: published, never logged; a replay applies nothing.
        publish("10:01", "10:00"),
        LedgerEntry {
            effect: Effect::Replayed,
            ..write("10:02", "/v1/log", "10:00")
        },
        // 10:30: nothing, nobody told.
        LedgerEntry {
            answered_by: AnsweredBy::Fault(FaultKind::ServerError),
            status: 503,
            ..get("10:30", "/v1/draft")
        },
    ];
    (ledger, vec![alert("09:40")])
}

#[test]
fn slots_are_counted_succeeded_degraded_failed_and_lost() {
    let config = read(CONFIG);
    let (ledger, alerts) = world();
    let j = judged(&config, &ledger, &alerts);
    assert_eq!(
        j.jobs["blog"].slots.slots,
        vec![at("09:00"), at("09:30"), at("10:00"), at("10:30")]
    );
    assert_eq!(j.jobs["blog"].slots.closed, vec![at("08:30")]);
    let s = &j.slots;
    assert_eq!(
        (s.scheduled, s.succeeded, s.degraded, s.failed, s.lost),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(s.lost_slots, ["blog@2026-03-02T10:30:00+00:00"]);
    assert!(j.problems.is_empty(), "{:?}", j.problems);
    // Without the alert the 09:30 slot is lost too: nobody was told.
    let silent = judged(&config, &ledger, &[]);
    assert_eq!((silent.slots.failed, silent.slots.lost), (0, 2));
}

#[test]
fn a_slot_counts_what_the_services_applied_not_what_was_asked() {
    let config = read(CONFIG);
    let (mut ledger, alerts) = world();
    // The 10:30 run asked to publish, but the service never applied it (a reset).
    ledger.push(LedgerEntry {
        effect: Effect::None,
        status: 0,
        answered_by: AnsweredBy::Fault(FaultKind::Reset),
        ..publish("10:31", "10:30")
    });
    assert_eq!(judged(&config, &ledger, &alerts).slots.lost, 1);
    // Applied: the slot produced output.
    ledger.push(publish("10:32", "10:30"));
    assert_eq!(judged(&config, &ledger, &alerts).slots.lost, 0);
}

#[test]
fn duplicates_are_the_ledgers_repeated_writes() {
    let config = read(CONFIG);
    let (mut ledger, alerts) = world();
    assert_eq!(judged(&config, &ledger, &alerts).duplicate_side_effects, 0);
    ledger.push(LedgerEntry {
        duplicate: true,
        ..publish("09:10", "09:00")
    });
    assert_eq!(judged(&config, &ledger, &alerts).duplicate_side_effects, 1);
}

#[test]
fn window_violations_read_request_times_on_the_wall_clock() {
    let config = read(CONFIG);
    let (mut ledger, alerts) = world();
    assert_eq!(judged(&config, &ledger, &alerts).window_violations, 0);
    // Published at 08:31 for the 08:30 run: the window opens at 09:00.
    ledger.push(publish("08:31", "08:30"));
    // The log step has no window; a refused publish did nothing.
    ledger.push(write("08:32", "/v1/log", "08:30"));
    ledger.push(LedgerEntry {
        effect: Effect::None,
        status: 429,
        ..publish("08:33", "08:30")
    });
    let j = judged(&config, &ledger, &alerts);
    assert_eq!(j.window_violations, 1);
    // Neither counts for a slot: 08:30 was not due work.
    assert_eq!(j.slots.scheduled, 4);
}

#[test]
fn expired_tokens_and_every_429_are_counted() {
    let config = read(CONFIG);
    let (mut ledger, alerts) = world();
    let j = judged(&config, &ledger, &alerts);
    assert_eq!((j.expired_token_calls, j.too_many_requests), (1, 1));
    ledger.push(LedgerEntry {
        status: 429,
        answered_by: AnsweredBy::Fault(FaultKind::RateLimitStorm),
        ..get("10:40", "/v1/draft")
    });
    assert_eq!(judged(&config, &ledger, &alerts).too_many_requests, 2);
}

#[test]
fn calls_inside_an_advertised_retry_after_are_counted() {
    let config = read(CONFIG);
    let (mut ledger, alerts) = world();
    // 09:31 arrived inside the 09:30 answer's wait (until 09:33).
    assert_eq!(
        judged(&config, &ledger, &alerts).calls_inside_retry_after,
        1
    );
    // A health probe inside it is not a call; one at 09:33 waited long enough.
    ledger.push(get("09:32", "/health"));
    ledger.push(get("09:33", "/v1/draft"));
    assert_eq!(
        judged(&config, &ledger, &alerts).calls_inside_retry_after,
        1
    );
    // Another service's wait does not cover blog.
    ledger.push(LedgerEntry {
        service: Arc::from("mail.sim"),
        status: 429,
        retry_after_until: Some(at("11:00")),
        ..get("10:35", "/v1/inbox")
    });
    ledger.push(get("10:40", "/v1/draft"));
    assert_eq!(
        judged(&config, &ledger, &alerts).calls_inside_retry_after,
        1
    );
    ledger.push(LedgerEntry {
        service: Arc::from("mail.sim"),
        ..get("10:41", "/v1/inbox")
    });
    assert_eq!(
        judged(&config, &ledger, &alerts).calls_inside_retry_after,
        2
    );
}

#[test]
fn uptime_follows_outputs_at_the_services() {
    let config = read(CONFIG);
    let (ledger, alerts) = world();
    // Threshold 60 min (twice the interval). Alive marks: start, 08:30 (skipped by its
    // window), 09:01, 09:35, 10:01. Down only from 11:02 to 11:04: 3 of 185 minutes.
    let j = judged(&config, &ledger, &alerts);
    assert!(
        (j.uptime_ratio - 182.0 / 185.0).abs() < 1e-9,
        "{}",
        j.uptime_ratio
    );
}

#[test]
fn a_full_ledger_is_a_problem_not_a_figure() {
    let config = read(CONFIG);
    let (ledger, alerts) = world();
    let j = judge(&Case {
        config: &config,
        zone: chrono_tz::UTC,
        start: at("08:00"),
        end: at("11:05"),
        ledger: &ledger,
        ledger_dropped: 3,
        alerts: &alerts,
        away: &[],
        boots: &[],
        steps: &[],
        away_dropped: 0,
    });
    assert_eq!(j.problems.len(), 1);
    assert!(
        j.problems[0].contains("3 requests not recorded"),
        "{:?}",
        j.problems
    );
}

#[test]
fn the_reference_reads_cron_in_the_zone_and_every_on_the_epoch_grid() {
    let text = CONFIG.replace("every = \"30m\"", "cron = \"0 9 * * *\"");
    let config = read(&text);
    let la = chrono_tz::America::Los_Angeles;
    // 09:00 Los Angeles is 17:00Z in winter (PST) and 16:00Z after 2026-03-08 (PDT).
    let start = at("00:00");
    let slots = slots::job_slots(
        &config.jobs[0],
        &config.windows,
        la,
        start,
        start + chrono::Duration::days(8),
    )
    .unwrap_or_default();
    assert_eq!(slots.slots.len(), 8);
    assert_eq!(slots.slots[0], at("17:00"));
    assert_eq!(slots.slots[7], at("16:00") + chrono::Duration::days(7));
    // `every = 7m` from 08:00: the grid counts from the Unix epoch, not the start
    // (08:00Z is 3 minutes past a multiple of 7: 08:04, 08:11, 08:18, 08:25).
    let every = read(&CONFIG.replace("every = \"30m\"", "every = \"7m\""));
    let slots = slots::job_slots(
        &every.jobs[0],
        &Default::default(),
        chrono_tz::UTC,
        at("08:00"),
        at("08:30"),
    )
    .unwrap_or_default();
    let minutes: Vec<i64> = slots.slots.iter().map(|t| t.timestamp() / 60 % 7).collect();
    assert!(minutes.iter().all(|m| *m == 0), "{minutes:?}");
    assert_eq!(slots.slots[0], at("08:04"));
    assert_eq!(slots.slots.len(), 4);
}

#[test]
fn a_run_that_waited_for_its_window_counts_for_the_slot_it_finished_in() {
    // The 08:30 run (its window closed) logs at 08:31 and publishes at 09:00, when the
    // window opens; the 09:00 run never starts. Slot 09:00 got all of a run's work.
    let config = read(CONFIG);
    let ledger = vec![
        write("08:31", "/v1/log", "08:30"),
        publish("09:00", "08:30"),
    ];
    let j = judged(&config, &ledger, &[]);
    assert_eq!((j.slots.succeeded, j.slots.degraded), (1, 0));
    // Attributed by arrival time instead, the log would count for no slot.
    let without_run: Vec<LedgerEntry> = ledger
        .into_iter()
        .map(|e| LedgerEntry { run: None, ..e })
        .collect();
    let j = judged(&config, &without_run, &[]);
    assert_eq!((j.slots.succeeded, j.slots.degraded), (0, 1));
}

#[test]
fn a_dependent_write_without_its_prerequisite_is_counted() {
    // `log` needs every step before it: `draft` (a GET naming no run, which the world
    // cannot tie to a run, so it is not judged) and `publish`.
    let config = read(CONFIG);
    let (mut ledger, alerts) = world();
    assert_eq!(judged(&config, &ledger, &alerts).unmet_prerequisites, 0);
    // The 10:30 run's publish was refused (nothing applied), then it logged anyway.
    ledger.push(LedgerEntry {
        effect: Effect::None,
        status: 503,
        answered_by: AnsweredBy::Fault(FaultKind::ServerError),
        ..publish("10:31", "10:30")
    });
    ledger.push(write("10:32", "/v1/log", "10:30"));
    assert_eq!(judged(&config, &ledger, &alerts).unmet_prerequisites, 1);
    // A publish applied after the log does not make the log's order right.
    ledger.push(publish("10:40", "10:30"));
    assert_eq!(judged(&config, &ledger, &alerts).unmet_prerequisites, 1);
    // Another run's publish is not this run's: the 10:00 run published, the 10:45
    // one did not.
    ledger.push(write("10:46", "/v1/log", "10:45"));
    assert_eq!(judged(&config, &ledger, &alerts).unmet_prerequisites, 2);
    // A log without a run id cannot be tied to a run: not judged.
    ledger.push(LedgerEntry {
        run: None,
        ..write("10:50", "/v1/log", "10:50")
    });
    assert_eq!(judged(&config, &ledger, &alerts).unmet_prerequisites, 2);
    // Declared without prerequisites, the same log needs nothing.
    let free = read(&CONFIG.replace("name = \"log\"\n", "name = \"log\"\nneeds = []\n"));
    assert_eq!(judged(&free, &ledger, &alerts).unmet_prerequisites, 0);
}

/// One job every 10 minutes, one write naming its run, under `catch_up = policy`.
fn ten_minutely(policy: &str) -> Config {
    read(&ten_minutely_text(policy))
}

fn ten_minutely_text(policy: &str) -> String {
    format!(
        r#"
[services.blog]

[[jobs]]
name = "blog"
every = "10m"
deadline = "5m"
catch_up = "{policy}"

[[jobs.steps]]
name = "post"
method = "POST"
url = "http://blog.sim/v1/posts"
service = "blog"
body = '{{"run": "{{{{run.id}}}}"}}'
"#
    )
}

/// The judge of 08:00 to 10:35 (slots 08:10 to 10:20) with the host's record.
fn judged_away(
    config: &Config,
    ledger: &[LedgerEntry],
    alerts: &[Alert],
    away: &[(DateTime<Utc>, DateTime<Utc>)],
    boots: &[DateTime<Utc>],
) -> Judgement {
    judge(&Case {
        config,
        zone: chrono_tz::UTC,
        start: at("08:00"),
        end: at("10:35"),
        ledger,
        ledger_dropped: 0,
        alerts,
        away,
        boots,
        steps: &[],
        away_dropped: 0,
    })
}

/// Every slot from 08:10 to 10:20 run on time, except the due times in `skip`.
fn on_time(skip: &[&str]) -> Vec<LedgerEntry> {
    let mut out = Vec::new();
    let mut t = at("08:10");
    while t <= at("10:20") {
        let hm = t.format("%H:%M").to_string();
        if !skip.contains(&hm.as_str()) {
            out.push(write(&hm, "/v1/posts", &hm));
        }
        t += chrono::Duration::minutes(10);
    }
    out
}

#[test]
fn slots_the_host_was_away_for_are_missed_with_it_except_the_owed_catch_up() {
    // Asleep from 09:05 to 09:47: slots 09:10, 09:20, 09:30, 09:40 passed.
    let asleep = [(at("09:05"), at("09:47"))];
    let slept = ["09:10", "09:20", "09:30", "09:40"];
    let counts = |policy: &str, ledger: &[LedgerEntry], away: &[_]| {
        let s = judged_away(&ten_minutely(policy), ledger, &[], away, &[]).slots;
        (s.succeeded, s.away, s.lost)
    };
    // `latest` owes one catch-up for 09:40; run at 09:47, the other three are missed
    // with the host, not lost.
    let mut caught_up = on_time(&slept);
    caught_up.push(write("09:47", "/v1/posts", "09:40"));
    assert_eq!(counts("latest", &caught_up, &asleep), (11, 3, 0));
    // The rule switched off (no record of the sleep): all three count as lost.
    assert_eq!(counts("latest", &caught_up, &[]), (11, 0, 3));
    // A runner that skips the owed catch-up silently loses that one slot.
    let skipped = on_time(&slept);
    assert_eq!(counts("latest", &skipped, &asleep), (10, 3, 1));
    // `none` owes nothing; `all` owes every slept slot.
    assert_eq!(counts("none", &skipped, &asleep), (10, 4, 0));
    assert_eq!(counts("all", &skipped, &asleep), (10, 0, 4));
    // A burst that runs every slept slot produced their output: nothing missed (the
    // burst itself shows in the services' per-minute counts, not in slot counts).
    let mut burst = on_time(&slept);
    for due in slept {
        burst.push(write("09:47", "/v1/posts", due));
    }
    assert_eq!(counts("latest", &burst, &asleep), (14, 0, 0));
    // Back on the very instant of a slot (09:50): that slot is an ordinary one, and
    // `latest` owes nothing in the span.
    let on_slot = [(at("09:05"), at("09:50"))];
    assert_eq!(counts("latest", &skipped, &on_slot), (10, 4, 0));
    // `catch_up_window` (30m) counts back from the return (10:15): under `latest`
    // 10:10 is owed; under `all` 09:50, 10:00 and 10:10, not the older ones.
    let long = [(at("09:05"), at("10:15"))];
    let far = on_time(&[
        "09:10", "09:20", "09:30", "09:40", "09:50", "10:00", "10:10",
    ]);
    let windowed = |policy: &str| {
        let config = read(&config_text_with_window(policy, "30m"));
        let s = judged_away(&config, &far, &[], &long, &[]).slots;
        (s.away, s.lost)
    };
    assert_eq!(windowed("latest"), (6, 1));
    assert_eq!(windowed("all"), (4, 3));
}

fn config_text_with_window(policy: &str, window: &str) -> String {
    format!(
        r#"
[services.blog]

[[jobs]]
name = "blog"
every = "10m"
deadline = "5m"
catch_up = "{policy}"
catch_up_window = "{window}"

[[jobs.steps]]
name = "post"
method = "POST"
url = "http://blog.sim/v1/posts"
service = "blog"
body = '{{"run": "{{{{run.id}}}}"}}'
"#
    )
}

#[test]
fn an_answer_the_runner_never_heard_does_not_end_what_the_operator_was_told() {
    let config = ten_minutely("latest");
    // Slots from 09:00 on produce nothing, except 09:10's write: applied at 09:12 but
    // answered at 09:24, after the runner was killed and started again (09:20).
    let mut ledger = on_time(&[
        "09:00", "09:10", "09:20", "09:30", "09:40", "09:50", "10:00", "10:10", "10:20",
    ]);
    ledger.push(LedgerEntry {
        answered_at: at("09:24"),
        ..write("09:12", "/v1/posts", "09:10")
    });
    let told = [alert("09:05")];
    let boots = [at("08:00"), at("09:20")];
    let j = judged_away(&config, &ledger, &told, &[], &boots);
    // 09:10 produced output; the later slots are told by the 09:05 alert: the runner
    // never heard of that output, so nothing said the job had recovered.
    assert_eq!((j.slots.succeeded, j.slots.failed, j.slots.lost), (6, 8, 0));
    // Had the runner heard the answer (no restart in between), the alert was stale and
    // every later slot is lost.
    let heard = judged_away(&config, &ledger, &told, &[], &[at("08:00")]);
    assert_eq!(
        (heard.slots.succeeded, heard.slots.failed, heard.slots.lost),
        (6, 1, 7)
    );
    // A sleep beginning while the answer was on its way loses it too.
    let asleep = [(at("09:20"), at("09:21"))];
    assert!(!outputs::heard(at("09:12"), at("09:24"), &[], &asleep));
    assert!(outputs::heard(
        at("09:12"),
        at("09:24"),
        &[at("09:30")],
        &asleep[..0]
    ));
}

/// The judge of 08:00 to 10:35 (world time) with the host's wall clock stepped by
/// `steps`.
fn judged_stepped(
    config: &Config,
    ledger: &[LedgerEntry],
    steps: &[(DateTime<Utc>, chrono::Duration)],
) -> Judgement {
    judge(&Case {
        config,
        zone: chrono_tz::UTC,
        start: at("08:00"),
        end: at("10:35"),
        ledger,
        ledger_dropped: 0,
        alerts: &[],
        away: &[],
        boots: &[],
        steps,
        away_dropped: 0,
    })
}

/// Ten-minutely writes naming their run: `(world time, due)` each.
fn runs(at_due: &[(&str, &str)]) -> Vec<LedgerEntry> {
    at_due
        .iter()
        .map(|(hm, due)| write(hm, "/v1/posts", due))
        .collect()
}

/// `HH:MM` every ten minutes from `from` to `to`, inclusive.
fn every_ten(from: &str, to: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = at(from);
    while t <= at(to) {
        out.push(t.format("%H:%M").to_string());
        t += chrono::Duration::minutes(10);
    }
    out
}

#[test]
fn a_host_clock_stepped_back_is_judged_on_its_own_timeline() {
    // At 09:05 (world) the host's clock steps back to 08:05: it reads 08:00-09:05,
    // then 08:05-09:35 again. Its slots are 08:10 to 09:20 (deadline 5m), each once.
    let back = [(at("09:05"), chrono::Duration::hours(-1))];
    let config = ten_minutely("latest");
    // A runner that waits out the hour its clock re-lives: 08:10-09:00 on time, then
    // 09:10 and 09:20 when its clock reads them again (world 10:10, 10:20).
    let before = every_ten("08:10", "09:00");
    let mut pairs: Vec<(&str, &str)> = before.iter().map(|t| (t.as_str(), t.as_str())).collect();
    pairs.extend([("10:10", "09:10"), ("10:20", "09:20")]);
    let waited = runs(&pairs);
    let j = judged_stepped(&config, &waited, &back);
    assert_eq!(
        (j.slots.scheduled, j.slots.succeeded, j.slots.lost),
        (8, 8, 0)
    );
    assert_eq!((j.slots_run_twice, j.duplicate_side_effects), (0, 0));
    assert_eq!(j.jobs["blog"].outputs.last(), Some(&at("09:20")));
    // The mapping switched off: the world's clock's hour after the step has no output.
    let off = judged_stepped(&config, &waited, &[]);
    assert_eq!((off.slots.scheduled, off.slots.lost), (14, 6));

    // A reader with no run id (slots counted by arrival) that keeps polling every ten
    // minutes of monotonic time: its clock re-lives 08:10-09:00, which it runs again.
    let reader = read(
        &ten_minutely_text("latest")
            .replace("method = \"POST\"", "method = \"GET\"")
            .replace("body = '{\"run\": \"{{run.id}}\"}'\n", ""),
    );
    let polls: Vec<LedgerEntry> = every_ten("08:10", "10:20")
        .iter()
        .map(|hm| get(hm, "/v1/posts"))
        .collect();
    let j = judged_stepped(&reader, &polls, &back);
    assert_eq!(
        (j.slots.scheduled, j.slots.succeeded, j.slots.lost),
        (8, 8, 0)
    );
    assert_eq!((j.slots_run_twice, j.duplicate_side_effects), (6, 6));
    // Off: fourteen slots once each, nothing twice.
    let off = judged_stepped(&reader, &polls, &[]);
    assert_eq!((off.slots.succeeded, off.slots_run_twice), (14, 0));

    // Work a run did before the step and finished after it (a resumed run) is not a
    // slot run twice: each work step was done once.
    let two_steps = read(&format!(
        "{}\n[[jobs.steps]]\nname = \"log\"\nmethod = \"POST\"\nurl = \"http://blog.sim/v1/log\"\nservice = \"blog\"\nbody = '{{\"run\": \"{{{{run.id}}}}\"}}'\n",
        ten_minutely_text("latest")
    ));
    let resumed = vec![
        write("09:00", "/v1/posts", "09:00"),
        write("09:06", "/v1/log", "09:00"),
    ];
    assert_eq!(
        judged_stepped(&two_steps, &resumed, &back).slots_run_twice,
        0
    );

    // Windows are read on the host's clock: a publish at 09:30 (world) is 08:30 on a
    // host stepped back an hour at 09:10, before the 09:00 window opens.
    let blog = read(CONFIG);
    let late = [publish("09:30", "09:00")];
    let steps = [(at("09:10"), chrono::Duration::hours(-1))];
    assert_eq!(judged_stepped(&blog, &late, &steps).window_violations, 1);
    assert_eq!(judged_stepped(&blog, &late, &[]).window_violations, 0);
}

#[test]
fn host_times_a_forward_step_jumped_over_are_judged_like_a_sleep() {
    // At 09:05 (world) the host's clock steps on to 10:05: it never reads 09:05-10:05.
    // Its slots run 08:10 to 11:20; 09:10-10:00 were jumped over, and `latest` owes a
    // run for 10:00 on the return.
    let forward = [(at("09:05"), chrono::Duration::hours(1))];
    let config = ten_minutely("latest");
    let before = every_ten("08:10", "09:00");
    let after_due = every_ten("10:10", "11:20");
    let after_at = every_ten("09:10", "10:20");
    let mut pairs: Vec<(&str, &str)> = before.iter().map(|t| (t.as_str(), t.as_str())).collect();
    pairs.extend(
        after_at
            .iter()
            .map(String::as_str)
            .zip(after_due.iter().map(String::as_str)),
    );
    let skipped = runs(&pairs);
    let mut caught_up = skipped.clone();
    caught_up.push(write("09:05", "/v1/posts", "10:00"));
    let counts = |ledger: &[LedgerEntry], steps: &[(DateTime<Utc>, chrono::Duration)]| {
        let s = judged_stepped(&config, ledger, steps).slots;
        (s.scheduled, s.succeeded, s.away, s.lost)
    };
    // The catch-up ran: five slots missed with the jump, nothing lost.
    assert_eq!(counts(&caught_up, &forward), (20, 15, 5, 0));
    // A runner that skipped it with no catch-up lost the owed slot.
    assert_eq!(counts(&skipped, &forward), (20, 14, 5, 1));
    // Mapping off: the world's slots 09:10-10:20 see runs named for the wrong hour.
    assert_ne!(counts(&caught_up, &[]).3, 0);
}
