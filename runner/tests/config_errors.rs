//! Bad configuration files and the diagnostics they must produce.
//!
//! Each `tests/config/invalid/NAME.toml` holds one mistake (or, for `many_mistakes`,
//! several) and `NAME.expected` the rendered diagnostics, exactly. To add a case, write
//! the `.toml`, run `BLESS=1 cargo test -p runner --test config_errors`, and read the
//! new `.expected` before committing it.

use std::path::{Path, PathBuf};

use steadfast_core::config::{SecretResolver, parse_config};

/// Secrets the fixtures may refer to; everything else is missing.
struct FakeSecrets;

const SECRET_VALUES: &[&str] = &["fixture-client-secret", "fixture-refresh-token"];

impl SecretResolver for FakeSecrets {
    fn env(&self, name: &str) -> Option<String> {
        (name == "GOOGLE_CLIENT_SECRET").then(|| SECRET_VALUES[0].to_string())
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        if path == Path::new("google.refresh") {
            Ok(format!("{}\n", SECRET_VALUES[1]))
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/invalid")
}

/// Parses one fixture (named by its file name only, so output does not depend on
/// where the repository lives) and renders the result.
fn render(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let name = Path::new(path.file_name().unwrap());
    match parse_config(&text, name, &FakeSecrets) {
        Ok(_) => "<parsed without errors>\n".to_string(),
        Err(diags) => format!("{diags}\n"),
    }
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("- {}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn every_invalid_fixture_renders_its_expected_diagnostics() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 15, "fixtures missing: {fixtures:?}");

    let mut failures = Vec::new();
    for toml in &fixtures {
        let actual = render(toml);
        let expected_path = toml.with_extension("expected");
        for secret in SECRET_VALUES {
            assert!(
                !actual.contains(secret),
                "{} leaks a secret:\n{actual}",
                toml.display()
            );
        }
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{} (- expected, + actual):\n{}",
                toml.display(),
                diff(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ (rerun with BLESS=1 to accept):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_file_has_a_fixture() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "expected") {
            assert!(
                path.with_extension("toml").exists(),
                "orphan {}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no .expected file found: the test checked nothing"
    );
}

#[test]
fn many_mistakes_are_all_reported_at_once_in_file_order() {
    let path = fixture_dir().join("many_mistakes.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let diags = parse_config(&text, Path::new("many_mistakes.toml"), &FakeSecrets).unwrap_err();
    assert!(diags.0.len() >= 5, "{diags}");
    let lines: Vec<usize> = diags.0.iter().map(|d| d.line.unwrap()).collect();
    assert!(lines.is_sorted(), "{lines:?}");
    // Each diagnostic's line holds the key it names (the last path segment).
    for d in &diags.0 {
        let line = text.lines().nth(d.line.unwrap() - 1).unwrap();
        let last = d.key.rsplit('.').next().unwrap();
        let last = last.split('[').next().unwrap();
        assert!(
            line.contains(last) || line.starts_with('['),
            "line {} `{line}` does not hold `{}`",
            d.line.unwrap(),
            d.key
        );
    }
}

#[test]
fn diff_marks_changed_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
}
