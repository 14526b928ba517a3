//! Bad scenario files and the diagnostics they must produce.
//!
//! Each `tests/scenarios/invalid/NAME.toml` holds one mistake (or, for
//! `scenario_mistakes`, several); its rendered diagnostics are an insta snapshot,
//! `tests/snapshots/scenario_errors__NAME.snap`. To add a case, write the `.toml`, run
//! `INSTA_UPDATE=always cargo test -p sim --test scenario_errors`, and read the new
//! snapshot before committing it.

use std::path::{Path, PathBuf};

use sim::scenario::Scenario;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/invalid")
}

#[test]
fn every_invalid_scenario_renders_its_snapshot() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6, "fixtures missing: {fixtures:?}");
    for path in &fixtures {
        let text = std::fs::read_to_string(path).unwrap();
        let name = Path::new(path.file_name().unwrap());
        let out = match Scenario::parse(&text, name, None) {
            Ok(_) => "<parsed without errors>\n".to_string(),
            Err(diags) => format!("{diags}\n"),
        };
        let stem = path.file_stem().unwrap().to_str().unwrap();
        insta::assert_snapshot!(stem, out);
    }
}

#[test]
fn every_shipped_scenario_still_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            Scenario::load(&path).unwrap_or_else(|d| panic!("{}:\n{d}", path.display()));
        }
    }
}
