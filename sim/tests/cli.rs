//! The `sim` binary's sweep: seeds from `--first-seed`, failing seeds named with the
//! invariants they broke and the command that replays them, clear usage errors.

use std::path::Path;
use std::process::Command;

fn sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_sweep_starts_at_its_first_seed_and_names_what_each_failing_seed_broke() {
    let (code, out, err) = sim(&[
        "sweep",
        "scenarios/crash-mid-commit.toml",
        "--first-seed",
        "41",
        "--seeds",
        "2",
        "--jobs",
        "1",
        "--profile",
        "naive",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("seeds 41..=42 (2)"), "{out}");
    for seed in [41, 42] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("seed {seed}: broke ")))
            .unwrap_or_else(|| panic!("no line for seed {seed}:\n{out}"));
        // The naive runner loses slots in this world (crash-mid-commit allows none).
        assert!(line.contains("no_silent_loss"), "{line}");
        assert!(
            line.ends_with(&format!(
                "sim replay {seed} --scenario scenarios/crash-mid-commit.toml --profile naive"
            )),
            "{line}"
        );
    }
    assert!(
        !out.contains("seed 40:") && !out.contains("seed 43:"),
        "{out}"
    );
    assert!(out.contains("sweep: 0 of 2 seed(s) passed"), "{out}");
}

#[test]
fn sweep_usage_errors_are_clear() {
    let (code, _, err) = sim(&["sweep", "--seeds", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--seeds"), "{err}");
    let (code, _, err) = sim(&[
        "sweep",
        "--first-seed",
        "18446744073709551615",
        "--seeds",
        "2",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("runs past the largest seed") && err.contains("hint"),
        "{err}"
    );
    let (code, _, err) = sim(&["sweep", "--profile", "nave", "--seeds", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown profile `nave`"), "{err}");
    let (code, out, _) = sim(&["sweep", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--first-seed") && out.contains("sim replay"),
        "{out}"
    );
}
