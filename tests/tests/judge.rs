//! The independent judge catches deliberately broken runners that the runner's own
//! account (the old trace-based measures, [`sim::self_report`]) misses.
//!
//! The runner is broken without touching its code: it is given a mutated configuration
//! (a window shifted by an hour, a schedule missing slots, retries that ignore
//! `Retry-After`) while the judge reads the scenario's intended one. Each case runs the
//! intended runner too, so each measure is shown to stay at 0 when nothing is broken.

use std::path::Path;

use chrono::NaiveTime;
use sim::driver::{SimRun, simulate, simulate_with_config};
use sim::metrics::{Metrics, evaluate};
use sim::scenario::{Profile, Scenario};
use sim::self_report::self_report;
use steadfast_core::config::{Config, RetryMode, ScheduleConfig};
use steadfast_core::schedule::Schedule;

/// One day in New York from 06:00: a publisher behind a 09:00-22:00 window every 30
/// minutes and a poller every 15 minutes on a mail API that storms 429s (Retry-After
/// 120 s) for 10 minutes from 10:00.
const SCENARIO: &str = r#"
[world]
start = "2026-03-02T06:00:00"
zone = "America/New_York"
duration = "1d"
tick = "60s"
seed = 1

[operator]
alert_response = "1h"
checks = ["12:00"]

[apis.blog]
latency = "100ms"

[apis.mail]
latency = "100ms"

[windows]
publish = { start = "09:00", end = "22:00" }

[services.blog]
call_timeout = "10s"

[services.mail]
call_timeout = "10s"

[[jobs]]
name = "publisher"
every = "30m"

[[jobs.steps]]
name = "publish"
action = "publish"
method = "POST"
url = "http://blog.sim/v1/posts"
service = "blog"
body = '{"run": "{{run.id}}"}'

[[jobs]]
name = "poller"
every = "15m"

[[jobs.steps]]
name = "poll"
method = "POST"
url = "http://mail.sim/v1/poll"
service = "mail"
body = '{"run": "{{run.id}}"}'

[[faults]]
kind = "rate_limit_storm"
target = "mail"
at = "4h"
duration = "10m"
retry_after = "120s"

[invariants]
max_lost_task_rate = 0.02
recovery_bound = "2h"
"#;

fn scenario() -> Scenario {
    Scenario::parse(SCENARIO, Path::new("judge.toml"), None)
        .unwrap_or_else(|d| panic!("the test scenario does not parse:\n{d}"))
}

fn profile() -> Profile {
    Profile::named("self-healing").expect("known profile")
}

/// The judge's and the runner's own measures of a run.
fn measures(s: &Scenario, run: &SimRun) -> (Metrics, Metrics) {
    (evaluate(s, run).metrics, self_report(s, run).metrics)
}

/// The intended runner.
fn intended(s: &Scenario) -> (Metrics, Metrics) {
    let run = simulate(s, 1, profile(), &mut |_| {}).expect("simulation runs");
    measures(s, &run)
}

/// A runner given `break_it(config)` instead of the intended configuration.
fn broken(s: &Scenario, break_it: impl FnOnce(&mut Config)) -> (Metrics, Metrics) {
    let mut config = s.runner_config(&profile());
    break_it(&mut config);
    let run = simulate_with_config(s, 1, profile(), config, &mut |_| {}).expect("simulation runs");
    measures(s, &run)
}

#[test]
fn judge_catches_a_window_off_by_an_hour() {
    let s = scenario();
    let (judge_ok, _) = intended(&s);
    assert_eq!(
        judge_ok.window_violations, 0,
        "the intended runner keeps its window"
    );
    let (judge, runner) = broken(&s, |c| {
        let w = c.windows.get_mut("publish").expect("the publish window");
        w.start = NaiveTime::from_hms_opt(8, 0, 0).expect("a time");
        w.end = NaiveTime::from_hms_opt(21, 0, 0).expect("a time");
    });
    assert_eq!(
        runner.window_violations, 0,
        "the runner's own account sees nothing"
    );
    // 08:00 and 08:30 publish before the window opens at 09:00.
    assert!(judge.window_violations >= 2, "judge: {judge:?}");
}

#[test]
fn judge_catches_a_dropped_slot() {
    let s = scenario();
    let unproductive = |m: &Metrics| m.failed_runs + m.lost_runs;
    // The intended runner may lose a poll to the storm; that is the baseline.
    let (judge_ok, runner_ok) = intended(&s);
    // The runner's schedule leaves out 11:00 and 11:30.
    let (judge, runner) = broken(&s, |c| {
        let job = c
            .jobs
            .iter_mut()
            .find(|j| j.name == "publisher")
            .expect("the publisher");
        job.schedule = Schedule::new(
            &ScheduleConfig::Cron("0,30 0-10,12-23 * * *".into()),
            s.world.zone,
        )
        .expect("a valid cron");
    });
    assert_eq!(
        unproductive(&runner),
        unproductive(&runner_ok),
        "the runner's own account sees nothing more: {runner:?}"
    );
    assert_eq!(runner.scheduled_runs + 2, judge.scheduled_runs);
    assert_eq!(judge.scheduled_runs, judge_ok.scheduled_runs);
    assert!(
        unproductive(&judge) >= unproductive(&judge_ok) + 2,
        "judge: {judge:?}, intended: {judge_ok:?}"
    );
}

#[test]
fn judge_catches_an_ignored_retry_after() {
    let s = scenario();
    let (judge_ok, _) = intended(&s);
    assert!(judge_ok.rate_limit_violations > 0, "the storm answers 429s");
    assert_eq!(judge_ok.calls_inside_retry_after, 0, "judge: {judge_ok:?}");
    let (judge, runner) = broken(&s, |c| {
        // Immediate retries, and no shared gate to hold them back.
        c.patterns.retry = RetryMode::Immediate;
        c.patterns.gates = false;
    });
    assert_eq!(
        (
            runner.rate_limit_violations,
            runner.calls_inside_retry_after
        ),
        (0, 0),
        "the runner's own account sees no violation"
    );
    assert!(judge.calls_inside_retry_after > 0, "judge: {judge:?}");
}
