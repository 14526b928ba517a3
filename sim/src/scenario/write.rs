//! Writing scenarios back out: a base scenario file's text with a given fault list.
//!
//! Generated fault schedules (property tests, swarm worlds) must leave behind a file
//! that `sim run` reproduces. Rendering a whole [`Scenario`](super::Scenario) back to
//! TOML would mean re-rendering the runner's configuration too, which the simulator
//! does not own; instead [`with_faults`] keeps the base file's text as it is (comments
//! included) minus its `[[faults]]` tables, and appends the given faults. A failing case
//! therefore reads as the world its author wrote plus the schedule that broke it.
//!
//! Every key is written so that [`Scenario::parse`](super::Scenario::parse) of the result
//! gives back the same [`FaultSpec`]s, with two documented limits: the leak rate is
//! written in whole MiB per hour (as the file format states it), rounded up so a leak
//! never disappears; and the base file must write its faults as `[[faults]]` tables
//! (the form the scenario docs use), not as an inline `faults = [...]` array.

use std::fmt::Write as _;
use std::time::Duration;

use super::{FaultSpec, FaultSpecKind};

/// One MiB, the unit `leak_mb_per_hour` is written in.
const MIB: u64 = 1024 * 1024;

/// `base` (a scenario file's text) with its `[[faults]]` tables replaced by `faults`.
///
/// The faults are appended at the end, each as its own `[[faults]]` table; the rest of
/// the text is untouched. A `[[faults]]` table in `base` runs from its header to the
/// next table header (`[...]` or `[[...]]` at the start of a line); comment lines right
/// before the next header are kept with it.
pub fn with_faults(base: &str, faults: &[FaultSpec]) -> String {
    let mut out = strip_faults(base);
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if faults.is_empty() {
        return out;
    }
    out.push_str("\n# Faults written by sim::scenario::write::with_faults.\n");
    for f in faults {
        out.push('\n');
        out.push_str(&fault_table(f));
    }
    out
}

/// `base` with `seed = <seed>` in its `[world]` table (replaced, or added after the
/// header), so the file alone names the seed `sim run` uses.
pub fn with_seed(base: &str, seed: u64) -> String {
    let mut out = String::with_capacity(base.len() + 16);
    let mut in_world = false;
    let mut done = false;
    for line in base.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if is_header(trimmed) {
            if in_world && !done {
                // `[world]` had no seed: it goes at the end of the table.
                let _ = writeln!(out, "seed = {seed}");
                done = true;
            }
            in_world = header_name(trimmed) == Some("world");
        } else if in_world && !done && key_of(trimmed) == Some("seed") {
            let _ = writeln!(out, "seed = {seed}");
            done = true;
            continue;
        }
        out.push_str(line);
    }
    if in_world && !done {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "seed = {seed}");
    }
    out
}

/// One fault as a `[[faults]]` table. Keys the kind uses are always written; others
/// only when they differ from the parser's default, so the table stays readable and
/// still parses back to the same value.
pub fn fault_table(f: &FaultSpec) -> String {
    use FaultSpecKind as K;
    let d = FaultSpec::new(f.kind, &f.target);
    let uses = |key: &str| -> bool {
        match key {
            "probability" => {
                matches!(f.kind, K::Reset | K::Stall | K::ServerError | K::BadAnswer)
            }
            "stall" => matches!(f.kind, K::Stall | K::BadAnswer),
            "latency" => f.kind == K::Slow,
            "status" => f.kind == K::ServerError,
            "retry_after" => f.kind == K::RateLimitStorm,
            "restart_after" => f.kind == K::Crash,
            "leak_mb_per_hour" => f.kind == K::MemoryLeak,
            _ => false,
        }
    };
    let mut t = String::new();
    let _ = writeln!(t, "[[faults]]");
    let _ = writeln!(t, "kind = \"{}\"", f.kind.as_str());
    let _ = writeln!(t, "target = {}", quote(&f.target));
    let _ = writeln!(t, "at = \"{}\"", format_duration(f.at));
    if let Some(every) = f.every {
        let _ = writeln!(t, "every = \"{}\"", format_duration(every));
    }
    if !f.duration.is_zero() {
        let _ = writeln!(t, "duration = \"{}\"", format_duration(f.duration));
    }
    if uses("probability") || f.probability != d.probability {
        let _ = writeln!(t, "probability = {:?}", f.probability);
    }
    let durations = [
        ("stall", f.stall, d.stall),
        ("latency", f.latency, d.latency),
        ("retry_after", f.retry_after, d.retry_after),
        ("restart_after", f.restart_after, d.restart_after),
    ];
    for (key, value, default) in durations {
        if uses(key) || value != default {
            let _ = writeln!(t, "{key} = \"{}\"", format_duration(value));
        }
    }
    if uses("status") || f.status != d.status {
        let _ = writeln!(t, "status = {}", f.status);
    }
    if uses("leak_mb_per_hour") || f.leak_bytes_per_hour != d.leak_bytes_per_hour {
        let _ = writeln!(
            t,
            "leak_mb_per_hour = {}",
            f.leak_bytes_per_hour.div_ceil(MIB)
        );
    }
    if f.retry_after_date {
        let _ = writeln!(t, "retry_after_date = true");
    }
    if let Some(shape) = f.shape {
        let _ = writeln!(t, "shape = \"{}\"", shape.as_str());
    }
    if let Some(p) = f.crash_point {
        let key = if p.after {
            "after_durable_ops"
        } else {
            "before_durable_op"
        };
        let _ = writeln!(t, "{key} = {}", p.op);
    }
    if f.backward {
        let _ = writeln!(t, "backward = true");
    }
    t
}

/// A duration as the scenario format writes it (`"1d 2h 3m 4s 5ms"`), exact to the
/// nanosecond, and `"0s"` for zero.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos % 1_000_000 / 1000, "us"),
        (nanos % 1000, "ns"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_string()
    } else {
        text.join(" ")
    }
}

impl FaultSpec {
    /// The value the parser gives a `[[faults]]` table with only `kind` and `target`
    /// (a `bad_answer` also needs its `shape`: here `empty`).
    pub fn new(kind: FaultSpecKind, target: &str) -> Self {
        Self {
            kind,
            target: target.to_string(),
            at: Duration::ZERO,
            every: None,
            duration: Duration::ZERO,
            probability: 1.0,
            stall: if kind == FaultSpecKind::BadAnswer {
                Duration::ZERO
            } else {
                Duration::from_secs(30)
            },
            latency: Duration::from_secs(5),
            status: 503,
            retry_after: Duration::from_secs(60),
            restart_after: Duration::from_secs(60),
            leak_bytes_per_hour: 0,
            crash_point: None,
            retry_after_date: false,
            shape: (kind == FaultSpecKind::BadAnswer).then_some(super::BadShape::Empty),
            backward: false,
        }
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a (left-trimmed) line is a table header.
fn is_header(line: &str) -> bool {
    line.starts_with('[')
}

/// The name in a `[name]` or `[[name]]` header (trimmed), if the line is one.
fn header_name(line: &str) -> Option<&str> {
    let inner = line.strip_prefix("[[").or_else(|| line.strip_prefix('['))?;
    let end = inner.find(']')?;
    Some(inner[..end].trim())
}

/// The bare key a `key = value` line sets, if it is one.
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#')).then_some(key)
}

/// `text` without its `[[faults]]` tables.
fn strip_faults(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut keep = vec![true; lines.len()];
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if trimmed.starts_with("[[") && header_name(trimmed) == Some("faults") {
            let mut j = i + 1;
            while j < lines.len() && !is_header(lines[j].trim_start()) {
                j += 1;
            }
            // Comments and blank lines just before the next header belong to it.
            let mut end = j;
            while end > i + 1 {
                let prev = lines[end - 1].trim();
                if prev.is_empty() || prev.starts_with('#') {
                    end -= 1;
                } else {
                    break;
                }
            }
            if j == lines.len() {
                // The last table: trailing comments are the faults' own.
                end = j;
            }
            for k in keep.iter_mut().take(end).skip(i) {
                *k = false;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    lines
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(l, _)| *l)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::scenario::{DEFAULT_TEXT, Scenario};

    fn parse(text: &str) -> Scenario {
        match Scenario::parse(text, Path::new("written.toml"), None) {
            Ok(s) => s,
            Err(d) => panic!("the written scenario does not parse:\n{d}\n---\n{text}"),
        }
    }

    #[test]
    fn the_default_scenario_round_trips_its_own_faults() {
        let base = Scenario::default_scenario();
        assert!(!base.faults.is_empty());
        let text = with_faults(DEFAULT_TEXT, &base.faults);
        let again = parse(&text);
        assert_eq!(again.faults, base.faults);
        assert_eq!(again.world, base.world);
        assert_eq!(again.invariants, base.invariants);
        assert_eq!(again.config.jobs, base.config.jobs);
    }

    #[test]
    fn no_faults_strips_every_fault_table_and_keeps_the_rest() {
        let text = with_faults(DEFAULT_TEXT, &[]);
        assert!(!text.contains("[[faults]]"));
        assert!(text.contains("[invariants]"));
        let s = parse(&text);
        assert!(s.faults.is_empty());
        assert_eq!(s.invariants, Scenario::default_scenario().invariants);
    }

    #[test]
    fn the_seed_is_replaced_or_added() {
        let replaced = parse(&with_seed(DEFAULT_TEXT, 4242));
        assert_eq!(replaced.world.seed, 4242);
        let without = DEFAULT_TEXT.replace("seed = 1\n", "");
        assert_eq!(
            parse(&without).world.seed,
            1,
            "the default seed when none is written"
        );
        assert_eq!(parse(&with_seed(&without, 77)).world.seed, 77);
    }

    #[test]
    fn durations_are_written_as_the_parser_reads_them() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(93_784)), "1d 2h 3m 4s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
    }

    fn kind() -> impl Strategy<Value = FaultSpecKind> {
        prop::sample::select(
            FaultSpecKind::ALL
                .iter()
                .map(|(_, k)| *k)
                .collect::<Vec<_>>(),
        )
    }

    fn any_duration(max_secs: u64) -> impl Strategy<Value = Duration> {
        (0..=max_secs, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
    }

    prop_compose! {
        fn fault()(
            kind in kind(),
            at in any_duration(86_400),
            every in proptest::option::of(86_401u64..200_000),
            duration in any_duration(86_400),
            probability in 0.0f64..=1.0,
            stall in any_duration(600),
            latency in any_duration(600),
            status in 500u16..=599,
            retry_after in any_duration(3600),
            restart_after in any_duration(3600),
            leak_mb in 0u64..100,
            crash_op in proptest::option::of((1u64..10_000, proptest::bool::ANY)),
            date in proptest::bool::ANY,
            shape in prop::sample::select(super::super::BadShape::ALL.iter().map(|(_, s)| *s).collect::<Vec<_>>()),
            backward in proptest::bool::ANY,
        ) -> FaultSpec {
            let target = match kind {
                FaultSpecKind::TokenRevoke | FaultSpecKind::RefreshRevoke => "google",
                FaultSpecKind::MemoryLeak
                | FaultSpecKind::DiskFull
                | FaultSpecKind::Crash
                | FaultSpecKind::SilentDeath
                | FaultSpecKind::Sleep
                | FaultSpecKind::ClockStep => "runner",
                _ => "blog",
            };
            FaultSpec {
                kind,
                target: target.to_string(),
                at,
                every: every.map(Duration::from_secs),
                duration,
                probability,
                stall,
                latency,
                status,
                retry_after,
                restart_after,
                leak_bytes_per_hour: leak_mb * MIB,
                crash_point: crash_op
                    .filter(|_| kind == FaultSpecKind::Crash)
                    .map(|(op, after)| super::super::CrashPoint { op, after }),
                retry_after_date: date,
                shape: (kind == FaultSpecKind::BadAnswer).then_some(shape),
                backward: backward && kind == FaultSpecKind::ClockStep,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_fault_list_parses_back_to_itself(
            faults in prop::collection::vec(fault(), 0..6),
            seed in 0u64..(u64::MAX >> 1),
        ) {
            let text = with_seed(&with_faults(DEFAULT_TEXT, &faults), seed);
            let again = parse(&text);
            prop_assert_eq!(again.faults, faults);
            prop_assert_eq!(again.world.seed, seed);
        }
    }
}
