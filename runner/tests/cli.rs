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
    for code in ["0 ", "1 ", "2 ", "3 ", "75 "] {
        assert!(
            top.contains(&format!("  {code}")),
            "exit code {code} undocumented:\n{top}"
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
fn a_state_dir_that_cannot_be_created_is_a_clear_failure() {
    // A path under a regular file can never be a directory.
    let config = scratch("bad-state", 1, "runner.toml/state");
    let out = runner(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to lock"), "{err}");
    assert!(err.contains("hint: the state directory"), "{err}");
}
