//! The `runner` binary's surface: every command teaches with `--help` and examples, and
//! a mistake gets an error with a hint and the documented exit code.

use std::path::PathBuf;
use std::process::{Command, Output};

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .output()
        .expect("the runner binary starts")
}

fn scratch(name: &str, jobs: usize, state_dir: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("steadfast-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = format!("[runner]\nstate_dir = \"{state_dir}\"\n");
    for i in 0..jobs {
        text.push_str(&format!(
            "[[jobs]]\nname = \"job-{i:03}\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n"
        ));
    }
    let config = dir.join("runner.toml");
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn every_command_has_help_with_examples() {
    for command in ["check", "run", "status", "install", "run-once"] {
        let out = runner(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Examples:"),
            "{command} --help has no examples:\n{text}"
        );
        assert!(text.contains("--config"), "{command} --help:\n{text}");
    }
    let top = String::from_utf8_lossy(&runner(&["--help"]).stdout).to_string();
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "75 "] {
        assert!(
            top.contains(&format!("  {code}")),
            "exit code {code} undocumented:\n{top}"
        );
    }
}

/// Issue 10: `--help` said SIGTERM only lets running steps finish and nothing of
/// crashes. `runner run --help` says what a SIGTERM, a crash and a restart do to runs
/// and slots, and what a corrupt store does.
#[test]
fn run_help_says_what_a_crash_a_restart_and_a_sigterm_do() {
    let text = String::from_utf8_lossy(&runner(&["run", "--help"]).stdout).to_string();
    for words in [
        "SIGTERM",
        "no new step starts",
        "shutdown_grace",
        "kill -9",
        "resumes",
        "idempotency key",
        "journaled",
        "parent-death signal",
        "catch_up",
        "missed",
        "exits 4",
        "*.migrated",
    ] {
        assert!(
            text.contains(words),
            "`{words}` missing from run --help:\n{text}"
        );
    }
}

#[test]
fn an_unknown_job_names_the_near_miss_and_a_bounded_list() {
    let config = scratch("unknown-job", 12, "state");
    let out = runner(&["run-once", "job-10", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no job named `job-10`"), "{err}");
    assert!(err.contains("did you mean `job-010`?"), "{err}");
    assert!(
        err.contains("and 4 more"),
        "a long list is cut short: {err}"
    );
    assert!(!err.contains("job-011"), "{err}");
}

#[test]
fn a_state_dir_that_cannot_be_created_is_a_config_error() {
    // A path under a regular file can never be a directory: `check` says so, with the
    // line of `state_dir` (it used to pass, and `run` failed to lock).
    let config = scratch("bad-state", 1, "runner.toml/state");
    for command in ["check", "run"] {
        let out = runner(&[command, "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("runner.toml:2:13: `runner.state_dir`: state directory"),
            "{err}"
        );
        assert!(err.contains("cannot be created: `"), "{err}");
        assert!(
            err.contains("is a file (hint: point state_dir at a directory"),
            "{err}"
        );
    }
}

/// Issue 11: a 65,536-character job name made `runner status` panic (exit 101).
#[test]
fn a_huge_job_name_is_a_config_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("steadfast-cli-huge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runner.toml");
    let name = "j".repeat(65_536);
    std::fs::write(
        &config,
        format!("[runner]\nstate_dir = \"state\"\n[[jobs]]\nname = \"{name}\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n"),
    )
    .unwrap();
    let out = runner(&["status", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`jobs[0].name`: name is 65536 characters long, more than the 64 allowed"),
        "{err}"
    );
    assert!(!err.contains(&name), "the name is not quoted back");
}

/// Issue 11: any name `check` accepts must work end to end. The longest names (64
/// characters for the job and both steps) run a two-step job, whose checkpoint and
/// script progress file names are derived from them.
#[test]
fn the_longest_names_run_end_to_end() {
    let dir = std::env::temp_dir().join(format!("steadfast-cli-longest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runner.toml");
    let job = "j".repeat(64);
    let (first, second) = ("a".repeat(64), "b".repeat(64));
    // Each step writes its progress file (the longest derived file name: job, step and
    // run id) and the second uses the first's output.
    let text = r#"[runner]
state_dir = "state"
[[jobs]]
name = "JOB"
every = "1h"
[[jobs.steps]]
name = "FIRST"
kind = "command"
argv = ["sh", "-c", "mkdir -p \"$(dirname \"$STEADFAST_CHECKPOINT\")\" && touch \"$STEADFAST_CHECKPOINT\" && echo '{\"n\": 1}'"]
[[jobs.steps]]
name = "SECOND"
kind = "command"
argv = ["sh", "-c", "touch \"$STEADFAST_CHECKPOINT\" && test {{FIRST.n}} = 1"]
"#
    .replace("JOB", &job)
    .replace("FIRST", &first)
    .replace("SECOND", &second);
    std::fs::write(&config, text).unwrap();
    let path = config.to_str().unwrap();
    let check = runner(&["check", "--config", path]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = runner(&["run-once", &job, "--config", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = runner(&["status", "--config", path]);
    assert_eq!(status.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&status.stdout).contains(&job));
}

/// Issue 11: a file that is not UTF-8 got no position and the hint "pass the file with
/// --config".
#[test]
fn a_file_that_is_not_utf8_gets_its_position_and_a_hint() {
    let dir = std::env::temp_dir().join(format!("steadfast-cli-latin1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runner.toml");
    std::fs::write(&config, b"[runner]\ntime_zone = \"Europe/Z\xfcrich\"\n").unwrap();
    let out = runner(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.ends_with("runner.toml:2:22: not valid UTF-8: byte 30 is 0xfc (hint: save the file as UTF-8; TOML files must be UTF-8)\n"),
        "{err}"
    );
}
