//! Stage two: raw values checked and turned into [`super::Config`], all errors at once.
//!
//! Every problem becomes a [`Diagnostic`] with the file, line, key path (such as
//! `jobs[1].steps[0].url`) and, where one helps, a hint; nothing stops at the first
//! mistake, so one run of the validator shows everything to fix. Unknown keys are errors
//! (a typo such as `crn = ...` would otherwise silently mean "no schedule"). Secret
//! values never appear in a diagnostic.
//!
//! # File format
//!
//! Every section but `[[jobs]]` is optional. Durations are strings in `humantime` form
//! (`"90s"`, `"15m"`, `"1h 30m"`); names of jobs, steps, services, credentials, windows
//! and extract outputs are `[A-Za-z0-9_-]+`. Relative paths resolve against the
//! directory of the configuration file (pass an absolute file path to get absolute
//! paths).
//!
//! ```toml
//! [runner]
//! state_dir = "state"            # default "state"
//! time_zone = "Europe/Berlin"    # IANA name, default "UTC"; windows and cron use it
//! monitor_interval = "60s"       # heartbeat monitor period, default 60 s
//! memory_warn_mb = 1024          # default 1024
//! memory_fatal_mb = 2048         # default 2048, at least memory_warn_mb
//! shutdown_grace = "30s"         # default 30 s
//! breaker_alert_after = "1h"     # a breaker open this long alerts, default 1 h
//!
//! [patterns]                     # default: every pattern on (Patterns::ALL)
//! retry = "backoff"              # off | immediate | backoff
//! jitter = "full"                # none | equal | full | decorrelated
//! retry_budget = true            # also proactive_refresh, heartbeat, isolation,
//!                                # checkpoints, windows, breakers
//!
//! [retry]                        # defaults: RetryPolicy::default()
//! max_attempts = 5               # 1..=20, including the first attempt
//! base = "1s"                    # > 0
//! cap = "60s"                    # >= base
//! retry_after_cap = "15m"
//! budget_ratio = 0.2             # 0.0..=1.0
//! budget_min_retries = 10
//!
//! [windows]                      # per action type; an action without one runs anytime
//! publish = { start = "09:00", end = "22:00" }   # HH:MM or HH:MM:SS; end < start spans midnight
//!
//! [services.youtube]
//! health_url = "https://..."     # optional, probed by the heartbeat monitor
//! call_timeout = "30s"           # default 30 s
//! breaker = { failure_threshold = 3, failure_rate = 0.5, window_calls = 20,
//!             cooldown = "5m", max_cooldown = "1h" }   # each optional; max_cooldown >= cooldown
//!
//! [credentials.google]
//! token_url = "https://oauth2.example.com/token"
//! client_id = "abc"
//! client_secret = { env = "GOOGLE_CLIENT_SECRET" }   # optional
//! refresh_token = { file = "google.refresh" }        # required
//! skew = "5m"                    # refresh this long before expiry, default 5 min
//! scope = "..."                  # optional
//! # A secret is a string literal, { env = "NAME" } or { file = "PATH" } (contents trimmed).
//!
//! [[jobs]]
//! name = "youtube-engine"        # unique
//! every = "30m"                  # exactly one of `every` and `cron` (5 or 6 fields)
//! start_jitter = "30s"           # default 0; shorter than the interval
//! overlap = "skip"               # skip (default) | queue
//! catch_up = "latest"            # slots missed while the runner was down: latest (default) | all | none
//! catch_up_window = "6h"         # default 6 h: older missed slots are recorded missed, not run
//! deadline = "20m"               # default: the interval, at most 1 h (cron: at most 15 min)
//! heartbeat_threshold = "1h"     # default: twice the interval (cron: see below)
//! retry = { max_attempts = 3 }   # optional partial override of [retry]
//!
//! [[jobs.steps]]
//! name = "upload"                # unique within the job
//! action = "publish"             # optional action type, matched against [windows]
//! kind = "http"                  # http (default) | command
//! method = "POST"                # GET (default), HEAD, POST, PUT, PATCH, DELETE, OPTIONS
//! url = "https://api.example.com/videos/{{fetch.id}}"   # {{step.output}}: an earlier step's output
//! service = "youtube"            # required; a [services] entry
//! credential = "google"          # optional; a [credentials] entry (bearer token)
//! headers = { "Content-Type" = "application/json" }
//! body = "..."
//! extract = { id = "/data/id" }  # output name -> JSON pointer ("" or starting with "/")
//!
//! [[jobs.steps]]
//! name = "render"
//! kind = "command"
//! argv = ["./render.sh", "--fast"]   # non-empty
//! cwd = "scripts"
//! env = { QUALITY = "high" }
//! timeout = "10m"                # default 10 min
//! credentials = ["google"]       # fresh tokens injected as ACCESS_TOKEN_<NAME>
//! ```
//!
//! Placeholders (`{{step.output}}`) are checked in http URLs, header values and bodies;
//! the URL must parse once each placeholder is replaced by `x`.
//!
//! A cron job has no single interval, and the time the runner starts is not known here,
//! so its interval is measured from a fixed reference instant (Monday 2024-01-01 00:00 in
//! the runner's zone): the largest gap between successive occurrences over the following
//! eight days (at least two occurrences, at most 4096). A week is covered so that a
//! weekdays-only schedule gets a threshold spanning the weekend, instead of a heartbeat
//! alarm every Saturday.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveTime, TimeZone};
use chrono_tz::Tz;
use secrecy::SecretString;

use super::duration;
use super::raw::{self, RawEntry, RawKind, RawTable, Span};
use super::{
    BreakerConfig, CatchUp, CommandStep, Config, CredentialConfig, Diagnostic, Diagnostics,
    HttpStep, Jitter, JobConfig, Overlap, Patterns, RetryMode, RetryPolicy, RunnerSettings,
    ScheduleConfig, SecretResolver, ServiceConfig, StepConfig, StepKind, Url, WindowConfig,
};

const TOP_KEYS: &[&str] = &[
    "runner",
    "patterns",
    "retry",
    "windows",
    "services",
    "credentials",
    "jobs",
];
const RUNNER_KEYS: &[&str] = &[
    "state_dir",
    "time_zone",
    "monitor_interval",
    "memory_warn_mb",
    "memory_fatal_mb",
    "shutdown_grace",
    "breaker_alert_after",
];
const PATTERN_KEYS: &[&str] = &[
    "retry",
    "jitter",
    "retry_budget",
    "proactive_refresh",
    "heartbeat",
    "isolation",
    "checkpoints",
    "windows",
    "breakers",
];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "base",
    "cap",
    "retry_after_cap",
    "budget_ratio",
    "budget_min_retries",
];
const WINDOW_KEYS: &[&str] = &["start", "end"];
const SERVICE_KEYS: &[&str] = &["health_url", "call_timeout", "breaker"];
const BREAKER_KEYS: &[&str] = &[
    "failure_threshold",
    "failure_rate",
    "window_calls",
    "cooldown",
    "max_cooldown",
];
const CREDENTIAL_KEYS: &[&str] = &[
    "token_url",
    "client_id",
    "client_secret",
    "refresh_token",
    "skew",
    "scope",
];
const SECRET_KEYS: &[&str] = &["env", "file"];
const JOB_KEYS: &[&str] = &[
    "name",
    "every",
    "cron",
    "start_jitter",
    "overlap",
    "catch_up",
    "catch_up_window",
    "deadline",
    "heartbeat_threshold",
    "retry",
    "steps",
];
const STEP_KEYS: &[&str] = &["name", "action", "kind"];
const HTTP_KEYS: &[&str] = &[
    "method",
    "url",
    "service",
    "credential",
    "headers",
    "body",
    "extract",
];
const COMMAND_KEYS: &[&str] = &["argv", "cwd", "env", "timeout", "credentials"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

const MIB: u64 = 1024 * 1024;
/// 1 TiB: a memory limit above this is a unit mistake.
const MAX_MEMORY_MB: i64 = 1 << 20;
/// A default deadline never exceeds this (a run stuck for longer is dead, not slow).
const MAX_DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);
/// How old a missed slot may be and still be caught up, unless a job says otherwise.
const DEFAULT_CATCH_UP_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// The default deadline of a cron job is at most this.
const CRON_DEFAULT_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// How far past the reference instant cron gaps are measured.
const CRON_HORIZON_DAYS: i64 = 8;
/// At most this many occurrences are examined (bounds the work for `* * * * * *`).
const CRON_MAX_OCCURRENCES: usize = 4096;

/// Parses and validates a runner configuration file's text.
pub fn parse_config(
    text: &str,
    file: &Path,
    secrets: &dyn SecretResolver,
) -> Result<Config, Diagnostics> {
    parse_config_value(text, file, &[], secrets).map(|(config, _)| config)
}

/// Like [`parse_config`], but top-level sections named in `extra` are not errors; they
/// are returned untouched for the caller (the simulator's `[world]`, `[faults]`, ...)
/// to validate itself.
pub fn parse_config_value(
    text: &str,
    file: &Path,
    extra: &[&str],
    secrets: &dyn SecretResolver,
) -> Result<(Config, toml::Table), Diagnostics> {
    let mut v = Validator {
        text,
        file,
        dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        secrets,
        diags: Diagnostics::default(),
    };
    let doc = match raw::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            v.report(e.span.map(|s| s.start), "", e.message, None);
            return Err(v.diags);
        }
    };

    let mut rest = toml::Table::new();
    let mut known: Vec<&str> = TOP_KEYS.to_vec();
    known.extend(extra.iter().filter(|k| !TOP_KEYS.contains(k)));
    for e in &doc.entries {
        if TOP_KEYS.contains(&e.key.as_str()) {
            continue;
        }
        if extra.contains(&e.key.as_str()) {
            rest.insert(e.key.clone(), e.value.to_toml());
        } else {
            v.unknown_key(e, "", &known);
        }
    }

    let runner = v.runner(&doc);
    let patterns = v.patterns(&doc);
    let retry = match v.table(&doc, "", "retry") {
        Some(t) => v.retry_policy(t, "retry", RetryPolicy::default()),
        None => RetryPolicy::default(),
    };
    let windows = v.windows(&doc);
    let services = v.services(&doc);
    let (credentials, credential_names) = v.credentials(&doc);
    let refs = Refs {
        zone: runner.time_zone,
        retry,
        services: services.keys().cloned().collect(),
        credentials: credential_names,
    };
    let jobs = v.jobs(&doc, &refs);

    if v.diags.is_empty() {
        let config = Config {
            runner,
            patterns,
            retry,
            windows,
            services,
            credentials,
            jobs,
        };
        Ok((config, rest))
    } else {
        v.diags.sort();
        Err(v.diags)
    }
}

/// What jobs may refer to.
struct Refs {
    zone: Tz,
    retry: RetryPolicy,
    services: BTreeSet<String>,
    credentials: BTreeSet<String>,
}

struct Validator<'a> {
    text: &'a str,
    file: &'a Path,
    /// Relative paths resolve against this.
    dir: PathBuf,
    secrets: &'a dyn SecretResolver,
    diags: Diagnostics,
}

/// `path.key`, or `key` at the top level.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `` `a`, `b`, `c` ``.
fn list<'s>(items: impl IntoIterator<Item = &'s str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

const NAME_HINT: &str = "use letters, digits, `_` and `-` only";

/// Edit distance (insertions, deletions, substitutions and swaps of neighbours, the
/// commonest typos) over lowercased characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `given`, if it is close enough to be a likely typo.
fn closest<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(given, c);
        let limit = (given.chars().count().max(c.chars().count()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// "did you mean `x`? " or nothing.
pub fn did_you_mean<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    match closest(given, candidates) {
        Some(c) => format!("did you mean `{c}`? "),
        None => String::new(),
    }
}

/// Placeholders every step may use: the run's id (stable across a resume), its due
/// time (RFC 3339) and the job's name. A step named `run` or `job` shadows nothing: these
/// names are checked first.
const BUILTIN_PLACEHOLDERS: [(&str, &str); 3] = [("run", "id"), ("run", "due"), ("job", "name")];

/// Splits `{{step.output}}` placeholders out of `text`. Returns the text with each
/// placeholder replaced by `x`, and the placeholders found, or a message.
fn placeholders(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("unclosed placeholder: `{{` without `}}`".to_string());
        };
        let inner = after[..close].trim();
        match inner.split_once('.') {
            Some((step, output)) if is_name(step) && is_name(output) => {
                found.push((step.to_string(), output.to_string()));
            }
            _ => return Err(format!("malformed placeholder `{{{{{inner}}}}}`")),
        }
        out.push('x');
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok((out, found))
}

/// The largest gap between successive occurrences of `cron` after the fixed reference
/// instant (see the module docs); `Err` with a message when it does not repeat.
fn cron_max_gap(cron: &croner::Cron, zone: Tz) -> Result<Duration, String> {
    let start = zone
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .earliest()
        .ok_or_else(|| "the reference instant does not exist in this zone".to_string())?;
    let horizon = start + chrono::Duration::days(CRON_HORIZON_DAYS);
    let never = || "it never fires".to_string();
    let mut prev = cron
        .find_next_occurrence(&start, false)
        .map_err(|_| never())?;
    let mut max_gap = None;
    for _ in 0..CRON_MAX_OCCURRENCES {
        let Ok(next) = cron.find_next_occurrence(&prev, false) else {
            break;
        };
        if let Ok(gap) = (next - prev).to_std() {
            max_gap = max_gap.max(Some(gap));
        }
        if next > horizon {
            break;
        }
        prev = next;
    }
    max_gap.ok_or_else(|| "it fires at most once".to_string())
}

impl Validator<'_> {
    fn report(&mut self, at: Option<usize>, key: &str, message: String, hint: Option<String>) {
        let mut d = Diagnostic::at_offset(self.file, self.text, at, key, message);
        if let Some(h) = hint {
            d = d.hint(h);
        }
        self.diags.push(d);
    }

    fn err(&mut self, span: &Span, key: &str, message: impl Into<String>) {
        self.report(Some(span.start), key, message.into(), None);
    }

    fn err_hint(
        &mut self,
        span: &Span,
        key: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.report(Some(span.start), key, message.into(), Some(hint.into()));
    }

    fn unknown_key(&mut self, e: &RawEntry, path: &str, known: &[&str]) {
        let hint = format!(
            "{}valid keys here: {}",
            did_you_mean(&e.key, known.iter().copied()),
            list(known.iter().copied())
        );
        self.err_hint(
            &e.key_span,
            &join(path, &e.key),
            format!("unknown key `{}`", e.key),
            hint,
        );
    }

    fn check_keys(&mut self, t: &RawTable, path: &str, known: &[&str]) {
        for e in &t.entries {
            if !known.contains(&e.key.as_str()) {
                self.unknown_key(e, path, known);
            }
        }
    }

    fn wrong_type(&mut self, e: &RawEntry, path: &str, want: &str, hint: Option<&str>) {
        let message = format!("must be {want}, not {}", e.value.kind.type_name());
        self.report(
            Some(e.value.span.start),
            &join(path, &e.key),
            message,
            hint.map(str::to_string),
        );
    }

    fn missing(&mut self, t: &RawTable, path: &str, key: &str, hint: impl Into<String>) {
        let at = if t.span.is_empty() {
            t.entries.first().map(|e| e.key_span.start)
        } else {
            Some(t.span.start)
        };
        self.report(
            at,
            &join(path, key),
            format!("missing required key `{key}`"),
            Some(hint.into()),
        );
    }

    fn table<'t>(&mut self, t: &'t RawTable, path: &str, key: &str) -> Option<&'t RawTable> {
        let e = t.get(key)?;
        match &e.value.kind {
            RawKind::Table(inner) => Some(inner),
            _ => {
                self.wrong_type(e, path, "a table", None);
                None
            }
        }
    }

    fn string<'t>(&mut self, t: &'t RawTable, path: &str, key: &str) -> Option<(&'t str, Span)> {
        let e = t.get(key)?;
        match &e.value.kind {
            RawKind::String(s) => Some((s.as_str(), e.value.span.clone())),
            _ => {
                self.wrong_type(e, path, "a string", None);
                None
            }
        }
    }

    fn required_string<'t>(
        &mut self,
        t: &'t RawTable,
        path: &str,
        key: &str,
        hint: &str,
    ) -> Option<(&'t str, Span)> {
        if t.get(key).is_none() {
            self.missing(t, path, key, hint);
            return None;
        }
        self.string(t, path, key)
    }

    /// A name (`[A-Za-z0-9_-]+`) under `key`.
    fn name<'t>(&mut self, t: &'t RawTable, path: &str, key: &str) -> Option<(&'t str, Span)> {
        let (name, span) =
            self.required_string(t, path, key, "give it a name such as \"nightly-backup\"")?;
        if !is_name(name) {
            self.err_hint(
                &span,
                &join(path, key),
                format!("invalid name `{name}`"),
                NAME_HINT,
            );
            return None;
        }
        Some((name, span))
    }

    fn boolean(&mut self, t: &RawTable, path: &str, key: &str) -> Option<bool> {
        let e = t.get(key)?;
        match e.value.kind {
            RawKind::Boolean(b) => Some(b),
            _ => {
                self.wrong_type(e, path, "a boolean", Some("write true or false"));
                None
            }
        }
    }

    fn integer(
        &mut self,
        t: &RawTable,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<(i64, Span)> {
        let e = t.get(key)?;
        let RawKind::Integer(n) = e.value.kind else {
            self.wrong_type(e, path, "an integer", None);
            return None;
        };
        if n < min || n > max {
            self.err(
                &e.value.span,
                &join(path, key),
                format!("must be between {min} and {max}, not {n}"),
            );
            return None;
        }
        Some((n, e.value.span.clone()))
    }

    fn u32_in(&mut self, t: &RawTable, path: &str, key: &str, min: u32, max: u32) -> Option<u32> {
        let (n, _) = self.integer(t, path, key, i64::from(min), i64::from(max))?;
        u32::try_from(n).ok()
    }

    /// A number in `[0, 1]` (or `(0, 1]` when `zero_ok` is false).
    fn fraction(&mut self, t: &RawTable, path: &str, key: &str, zero_ok: bool) -> Option<f64> {
        let e = t.get(key)?;
        let x = match e.value.kind {
            RawKind::Float(x) => x,
            RawKind::Integer(n) => n as f64,
            _ => {
                self.wrong_type(e, path, "a number", None);
                return None;
            }
        };
        let low_ok = if zero_ok { x >= 0.0 } else { x > 0.0 };
        if !(low_ok && x <= 1.0) {
            let range = if zero_ok {
                "between 0.0 and 1.0"
            } else {
                "above 0.0 and at most 1.0"
            };
            self.err(
                &e.value.span,
                &join(path, key),
                format!("must be {range}, not {x}"),
            );
            return None;
        }
        Some(x)
    }

    fn duration(&mut self, t: &RawTable, path: &str, key: &str) -> Option<(Duration, Span)> {
        let e = t.get(key)?;
        let RawKind::String(s) = &e.value.kind else {
            self.wrong_type(e, path, "a duration string", Some(duration::HINT));
            return None;
        };
        match duration::parse(s) {
            Ok(d) => Some((d, e.value.span.clone())),
            Err(message) => {
                self.err_hint(&e.value.span, &join(path, key), message, duration::HINT);
                None
            }
        }
    }

    fn positive_duration(
        &mut self,
        t: &RawTable,
        path: &str,
        key: &str,
    ) -> Option<(Duration, Span)> {
        let (d, span) = self.duration(t, path, key)?;
        if d.is_zero() {
            self.err(&span, &join(path, key), "must be longer than zero");
            return None;
        }
        Some((d, span))
    }

    fn choice(
        &mut self,
        t: &RawTable,
        path: &str,
        key: &str,
        options: &[&'static str],
    ) -> Option<&'static str> {
        let (s, span) = self.string(t, path, key)?;
        if let Some(o) = options.iter().find(|o| **o == s) {
            return Some(o);
        }
        let hint = format!(
            "{}one of {}",
            did_you_mean(s, options.iter().copied()),
            list(options.iter().copied())
        );
        self.err_hint(
            &span,
            &join(path, key),
            format!("unknown value `{s}`"),
            hint,
        );
        None
    }

    fn url(&mut self, t: &RawTable, path: &str, key: &str) -> Option<Url> {
        let (s, span) = self.string(t, path, key)?;
        match parse_url(s) {
            Ok(u) => Some(u),
            Err(message) => {
                self.err_hint(&span, &join(path, key), message, URL_HINT);
                None
            }
        }
    }

    fn time_of_day(&mut self, t: &RawTable, path: &str, key: &str) -> Option<NaiveTime> {
        let e = t.get(key)?;
        const HINT: &str = "write a local time as \"HH:MM\" or \"HH:MM:SS\", e.g. \"09:00\"";
        match &e.value.kind {
            RawKind::String(s) => {
                let parsed = NaiveTime::parse_from_str(s, "%H:%M")
                    .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"));
                match parsed {
                    Ok(time) => Some(time),
                    Err(_) => {
                        self.err_hint(
                            &e.value.span,
                            &join(path, key),
                            format!("invalid time of day `{s}`"),
                            HINT,
                        );
                        None
                    }
                }
            }
            RawKind::Datetime(d) if d.date.is_none() && d.offset.is_none() => {
                let time = d.time.and_then(|t| {
                    NaiveTime::from_hms_opt(
                        u32::from(t.hour),
                        u32::from(t.minute),
                        u32::from(t.second),
                    )
                });
                if time.is_none() {
                    self.err_hint(
                        &e.value.span,
                        &join(path, key),
                        format!("invalid time of day `{d}`"),
                        HINT,
                    );
                }
                time
            }
            _ => {
                self.wrong_type(e, path, "a time of day", Some(HINT));
                None
            }
        }
    }

    /// A path, made absolute against the configuration file's directory.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn runner(&mut self, doc: &RawTable) -> RunnerSettings {
        let mut s = RunnerSettings {
            state_dir: self.resolve("state"),
            time_zone: Tz::UTC,
            monitor_interval: Duration::from_secs(60),
            memory_warn_bytes: 1024 * MIB,
            memory_fatal_bytes: 2048 * MIB,
            shutdown_grace: Duration::from_secs(30),
            breaker_alert_after: Duration::from_secs(3600),
        };
        let Some(t) = self.table(doc, "", "runner") else {
            return s;
        };
        let p = "runner";
        self.check_keys(t, p, RUNNER_KEYS);
        if let Some((dir, span)) = self.string(t, p, "state_dir") {
            if dir.trim().is_empty() {
                self.err(&span, "runner.state_dir", "must not be empty");
            } else {
                s.state_dir = self.resolve(dir);
            }
        }
        if let Some((zone, span)) = self.string(t, p, "time_zone") {
            match zone.parse::<Tz>() {
                Ok(z) => s.time_zone = z,
                Err(_) => {
                    let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
                    let hint = format!(
                        "{}use an IANA zone name such as \"Europe/Berlin\" or \"America/New_York\"",
                        did_you_mean(zone, names)
                    );
                    self.err_hint(
                        &span,
                        "runner.time_zone",
                        format!("unknown time zone `{zone}`"),
                        hint,
                    );
                }
            }
        }
        if let Some((d, _)) = self.positive_duration(t, p, "monitor_interval") {
            s.monitor_interval = d;
        }
        if let Some((d, _)) = self.duration(t, p, "shutdown_grace") {
            s.shutdown_grace = d;
        }
        if let Some((d, _)) = self.positive_duration(t, p, "breaker_alert_after") {
            s.breaker_alert_after = d;
        }
        let warn = self.integer(t, p, "memory_warn_mb", 1, MAX_MEMORY_MB);
        let fatal = self.integer(t, p, "memory_fatal_mb", 1, MAX_MEMORY_MB);
        let warn_mb = warn.as_ref().map_or(1024, |(n, _)| *n);
        let fatal_mb = fatal.as_ref().map_or(2048, |(n, _)| *n);
        if fatal_mb < warn_mb {
            let (key, span) = match (&fatal, &warn) {
                (Some((_, span)), _) => ("runner.memory_fatal_mb", span),
                (None, Some((_, span))) => ("runner.memory_warn_mb", span),
                (None, None) => ("runner", &t.span),
            };
            self.err_hint(
                span,
                key,
                format!("memory_fatal_mb ({fatal_mb}) is below memory_warn_mb ({warn_mb})"),
                "the fatal limit must be at least the warning limit",
            );
        }
        s.memory_warn_bytes = u64::try_from(warn_mb).unwrap_or(1024) * MIB;
        s.memory_fatal_bytes = u64::try_from(fatal_mb).unwrap_or(2048) * MIB;
        s
    }

    fn patterns(&mut self, doc: &RawTable) -> Patterns {
        let mut pat = Patterns::ALL;
        let Some(t) = self.table(doc, "", "patterns") else {
            return pat;
        };
        let p = "patterns";
        self.check_keys(t, p, PATTERN_KEYS);
        match self.choice(t, p, "retry", &["off", "immediate", "backoff"]) {
            Some("off") => pat.retry = RetryMode::Off,
            Some("immediate") => pat.retry = RetryMode::Immediate,
            Some(_) => pat.retry = RetryMode::Backoff,
            None => {}
        }
        match self.choice(t, p, "jitter", &["none", "equal", "full", "decorrelated"]) {
            Some("none") => pat.jitter = Jitter::None,
            Some("equal") => pat.jitter = Jitter::Equal,
            Some("decorrelated") => pat.jitter = Jitter::Decorrelated,
            Some(_) => pat.jitter = Jitter::Full,
            None => {}
        }
        let switches: [(&str, &mut bool); 7] = [
            ("retry_budget", &mut pat.retry_budget),
            ("proactive_refresh", &mut pat.proactive_refresh),
            ("heartbeat", &mut pat.heartbeat),
            ("isolation", &mut pat.isolation),
            ("checkpoints", &mut pat.checkpoints),
            ("windows", &mut pat.windows),
            ("breakers", &mut pat.breakers),
        ];
        for (key, slot) in switches {
            if let Some(b) = self.boolean(t, p, key) {
                *slot = b;
            }
        }
        pat
    }

    /// `[retry]` or a job's partial override of it, on top of `base`.
    fn retry_policy(&mut self, t: &RawTable, p: &str, base: RetryPolicy) -> RetryPolicy {
        let mut r = base;
        self.check_keys(t, p, RETRY_KEYS);
        if let Some(n) = self.u32_in(t, p, "max_attempts", 1, 20) {
            r.max_attempts = n;
        }
        let base_set = self.positive_duration(t, p, "base");
        let cap_set = self.positive_duration(t, p, "cap");
        if let Some((d, _)) = &base_set {
            r.base = *d;
        }
        if let Some((d, _)) = &cap_set {
            r.cap = *d;
        }
        if r.cap < r.base {
            let (key, span) = match (&cap_set, &base_set) {
                (Some((_, span)), _) => ("cap", span),
                (None, Some((_, span))) => ("base", span),
                (None, None) => ("cap", &t.span),
            };
            self.err_hint(
                span,
                &join(p, key),
                format!(
                    "cap ({}) is shorter than base ({})",
                    duration::format(r.cap),
                    duration::format(r.base)
                ),
                "the largest backoff must be at least the first",
            );
        }
        if let Some((d, _)) = self.duration(t, p, "retry_after_cap") {
            r.retry_after_cap = d;
        }
        if let Some(x) = self.fraction(t, p, "budget_ratio", true) {
            r.budget_ratio = x;
        }
        if let Some(n) = self.u32_in(t, p, "budget_min_retries", 0, 10_000) {
            r.budget_min_retries = n;
        }
        r
    }

    fn windows(&mut self, doc: &RawTable) -> BTreeMap<String, WindowConfig> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(doc, "", "windows") else {
            return out;
        };
        for e in &t.entries {
            let p = join("windows", &e.key);
            if !is_name(&e.key) {
                self.err_hint(
                    &e.key_span,
                    &p,
                    format!("invalid action name `{}`", e.key),
                    NAME_HINT,
                );
            }
            let RawKind::Table(w) = &e.value.kind else {
                self.wrong_type(
                    e,
                    "windows",
                    "a table",
                    Some("write it as { start = \"09:00\", end = \"22:00\" }"),
                );
                continue;
            };
            self.check_keys(w, &p, WINDOW_KEYS);
            for key in WINDOW_KEYS {
                if w.get(key).is_none() {
                    self.missing(
                        w,
                        &p,
                        key,
                        "a window needs `start` and `end`, e.g. \"09:00\"",
                    );
                }
            }
            let start = self.time_of_day(w, &p, "start");
            let end = self.time_of_day(w, &p, "end");
            if let (Some(start), Some(end)) = (start, end) {
                if start == end {
                    let span = w
                        .get("end")
                        .map_or(w.span.clone(), |x| x.value.span.clone());
                    self.err_hint(
                        &span,
                        &join(&p, "end"),
                        "window is empty: `start` equals `end`",
                        "an action allowed all day needs no window; remove it",
                    );
                } else {
                    out.insert(e.key.clone(), WindowConfig { start, end });
                }
            }
        }
        out
    }

    fn services(&mut self, doc: &RawTable) -> BTreeMap<String, ServiceConfig> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(doc, "", "services") else {
            return out;
        };
        for e in &t.entries {
            let p = join("services", &e.key);
            if !is_name(&e.key) {
                self.err_hint(
                    &e.key_span,
                    &p,
                    format!("invalid service name `{}`", e.key),
                    NAME_HINT,
                );
            }
            let RawKind::Table(s) = &e.value.kind else {
                self.wrong_type(
                    e,
                    "services",
                    "a table",
                    Some("write it as a [services.NAME] section"),
                );
                continue;
            };
            self.check_keys(s, &p, SERVICE_KEYS);
            let health_url = self.url(s, &p, "health_url");
            let call_timeout = self
                .positive_duration(s, &p, "call_timeout")
                .map_or(Duration::from_secs(30), |(d, _)| d);
            let breaker = match self.table(s, &p, "breaker") {
                Some(b) => self.breaker(b, &join(&p, "breaker")),
                None => BreakerConfig::default(),
            };
            out.insert(
                e.key.clone(),
                ServiceConfig {
                    name: e.key.clone(),
                    health_url,
                    call_timeout,
                    breaker,
                },
            );
        }
        out
    }

    fn breaker(&mut self, t: &RawTable, p: &str) -> BreakerConfig {
        let mut b = BreakerConfig::default();
        self.check_keys(t, p, BREAKER_KEYS);
        if let Some(n) = self.u32_in(t, p, "failure_threshold", 1, 1000) {
            b.failure_threshold = n;
        }
        if let Some(x) = self.fraction(t, p, "failure_rate", false) {
            b.failure_rate = x;
        }
        if let Some(n) = self.u32_in(t, p, "window_calls", 1, 10_000) {
            b.window_calls = n;
        }
        let cooldown = self.positive_duration(t, p, "cooldown");
        let max_cooldown = self.positive_duration(t, p, "max_cooldown");
        if let Some((d, _)) = &cooldown {
            b.cooldown = *d;
        }
        if let Some((d, _)) = &max_cooldown {
            b.max_cooldown = *d;
        }
        if b.max_cooldown < b.cooldown {
            let (key, span) = match (&max_cooldown, &cooldown) {
                (Some((_, span)), _) => ("max_cooldown", span),
                (None, Some((_, span))) => ("cooldown", span),
                (None, None) => ("max_cooldown", &t.span),
            };
            self.err_hint(
                span,
                &join(p, key),
                format!(
                    "max_cooldown ({}) is shorter than cooldown ({})",
                    duration::format(b.max_cooldown),
                    duration::format(b.cooldown)
                ),
                "repeated trips lengthen the cooldown up to max_cooldown, so it must be at least cooldown",
            );
        }
        b
    }

    /// The credentials that validated, and the names of all declared ones (so that a
    /// reference to a broken credential is not reported a second time).
    fn credentials(
        &mut self,
        doc: &RawTable,
    ) -> (BTreeMap<String, CredentialConfig>, BTreeSet<String>) {
        let mut out = BTreeMap::new();
        let mut names = BTreeSet::new();
        let Some(t) = self.table(doc, "", "credentials") else {
            return (out, names);
        };
        for e in &t.entries {
            let p = join("credentials", &e.key);
            if !is_name(&e.key) {
                self.err_hint(
                    &e.key_span,
                    &p,
                    format!("invalid credential name `{}`", e.key),
                    NAME_HINT,
                );
            }
            let RawKind::Table(c) = &e.value.kind else {
                self.wrong_type(
                    e,
                    "credentials",
                    "a table",
                    Some("write it as a [credentials.NAME] section"),
                );
                continue;
            };
            names.insert(e.key.clone());
            self.check_keys(c, &p, CREDENTIAL_KEYS);
            if c.get("token_url").is_none() {
                self.missing(
                    c,
                    &p,
                    "token_url",
                    "the OAuth2 token endpoint, e.g. \"https://oauth2.googleapis.com/token\"",
                );
            }
            let token_url = self.url(c, &p, "token_url");
            let client_id = self
                .required_string(c, &p, "client_id", "the OAuth2 client id of your app")
                .map(|(s, _)| s.to_string());
            let client_secret = c.get("client_secret").and_then(|s| self.secret(s, &p));
            let refresh_token = match c.get("refresh_token") {
                Some(s) => self.secret(s, &p),
                None => {
                    self.missing(c, &p, "refresh_token", SECRET_HINT);
                    None
                }
            };
            let skew = self
                .duration(c, &p, "skew")
                .map_or(Duration::from_secs(300), |(d, _)| d);
            let scope = self.string(c, &p, "scope").map(|(s, _)| s.to_string());
            if let (Some(token_url), Some(client_id), Some(refresh_token)) =
                (token_url, client_id, refresh_token)
            {
                out.insert(
                    e.key.clone(),
                    CredentialConfig {
                        name: e.key.clone(),
                        token_url,
                        client_id,
                        client_secret,
                        refresh_token,
                        skew,
                        scope,
                    },
                );
            }
        }
        (out, names)
    }

    /// A secret: a literal, `{ env = "NAME" }` or `{ file = "PATH" }`. Messages name the
    /// variable or file, never the value.
    fn secret(&mut self, e: &RawEntry, path: &str) -> Option<SecretString> {
        let key = join(path, &e.key);
        let span = &e.value.span;
        let t = match &e.value.kind {
            RawKind::String(s) => {
                if s.trim().is_empty() {
                    self.err_hint(span, &key, "secret is empty", SECRET_HINT);
                    return None;
                }
                return Some(SecretString::from(s.clone()));
            }
            RawKind::Table(t) => t,
            _ => {
                self.wrong_type(e, path, "a secret", Some(SECRET_HINT));
                return None;
            }
        };
        self.check_keys(t, &key, SECRET_KEYS);
        match (t.get("env"), t.get("file")) {
            (Some(_), Some(_)) | (None, None) => {
                self.err_hint(
                    span,
                    &key,
                    "a secret reference needs exactly one of `env` and `file`",
                    SECRET_HINT,
                );
                None
            }
            (Some(_), None) => {
                let (name, name_span) = self.string(t, &key, "env")?;
                match self.secrets.env(name) {
                    Some(v) if !v.trim().is_empty() => Some(SecretString::from(v)),
                    Some(_) => {
                        self.err_hint(
                            &name_span,
                            &join(&key, "env"),
                            format!("environment variable `{name}` is empty"),
                            format!("set {name} to the secret before starting the runner"),
                        );
                        None
                    }
                    None => {
                        self.err_hint(
                            &name_span,
                            &join(&key, "env"),
                            format!("environment variable `{name}` is not set"),
                            format!(
                                "export {name} before starting the runner, or keep the secret in a file with {{ file = \"PATH\" }}"
                            ),
                        );
                        None
                    }
                }
            }
            (None, Some(_)) => {
                let (file, file_span) = self.string(t, &key, "file")?;
                let abs = self.resolve(file);
                match self.secrets.file(&abs) {
                    Ok(contents) if !contents.trim().is_empty() => {
                        Some(SecretString::from(contents.trim().to_string()))
                    }
                    Ok(_) => {
                        self.err_hint(
                            &file_span,
                            &join(&key, "file"),
                            format!("secret file `{}` is empty", abs.display()),
                            "write the secret into it (surrounding whitespace is ignored)",
                        );
                        None
                    }
                    Err(err) => {
                        self.err_hint(
                            &file_span,
                            &join(&key, "file"),
                            format!("cannot read secret file `{}`: {}", abs.display(), err.kind()),
                            "create it with the secret as its only content, readable by the runner; relative paths start at the config file's directory",
                        );
                        None
                    }
                }
            }
        }
    }

    fn jobs(&mut self, doc: &RawTable, refs: &Refs) -> Vec<JobConfig> {
        let mut out = Vec::new();
        const JOBS_HINT: &str =
            "add a [[jobs]] section with a `name`, `every` or `cron`, and [[jobs.steps]]";
        let Some(e) = doc.get("jobs") else {
            self.report(
                None,
                "jobs",
                "at least one job is required".to_string(),
                Some(JOBS_HINT.to_string()),
            );
            return out;
        };
        let RawKind::Array(items) = &e.value.kind else {
            self.wrong_type(
                e,
                "",
                "an array of tables",
                Some("write each job as a [[jobs]] section"),
            );
            return out;
        };
        if items.is_empty() {
            self.err_hint(
                &e.value.span,
                "jobs",
                "at least one job is required",
                JOBS_HINT,
            );
            return out;
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("jobs[{i}]");
            let RawKind::Table(t) = &item.kind else {
                self.err_hint(
                    &item.span,
                    &p,
                    format!("must be a table, not {}", item.kind.type_name()),
                    "write each job as a [[jobs]] section",
                );
                continue;
            };
            if let Some(job) = self.job(t, &p, refs, &mut seen) {
                out.push(job);
            }
        }
        out
    }

    fn job(
        &mut self,
        t: &RawTable,
        p: &str,
        refs: &Refs,
        seen: &mut BTreeMap<String, usize>,
    ) -> Option<JobConfig> {
        self.check_keys(t, p, JOB_KEYS);
        let name = self.name(t, p, "name");
        if let Some((name, span)) = &name {
            let line = super::diagnostic::line_col(self.text, span.start).0;
            if let Some(first) = seen.get(*name) {
                self.err_hint(
                    span,
                    &join(p, "name"),
                    format!("duplicate job name `{name}`"),
                    format!(
                        "the first job named `{name}` is on line {first}; job names must be unique"
                    ),
                );
            } else {
                seen.insert(name.to_string(), line);
            }
        }

        // Schedule: exactly one of `every` and `cron`.
        let schedule = match (t.get("every"), t.get("cron")) {
            (Some(every), Some(cron)) => {
                let later = if every.key_span.start > cron.key_span.start {
                    every
                } else {
                    cron
                };
                self.err_hint(
                    &later.key_span,
                    &join(p, &later.key),
                    "`every` and `cron` are mutually exclusive",
                    "keep one: `every` for a fixed interval, `cron` for calendar times",
                );
                None
            }
            (None, None) => {
                let at = (!t.span.is_empty()).then_some(t.span.start);
                self.report(
                    at,
                    p,
                    "missing a schedule".to_string(),
                    Some(
                        "set `every` (e.g. \"30m\") or `cron` (e.g. \"*/30 * * * *\")".to_string(),
                    ),
                );
                None
            }
            (Some(_), None) => self
                .positive_duration(t, p, "every")
                .map(|(d, _)| (ScheduleConfig::Every(d), d, false)),
            (None, Some(_)) => self.cron(t, p, refs.zone),
        };

        let start_jitter = self.duration(t, p, "start_jitter");
        if let (Some((ScheduleConfig::Every(interval), _, _)), Some((jitter, span))) =
            (&schedule, &start_jitter)
            && jitter >= interval
        {
            self.err_hint(
                span,
                &join(p, "start_jitter"),
                format!(
                    "start_jitter ({}) is not shorter than the interval ({})",
                    duration::format(*jitter),
                    duration::format(*interval)
                ),
                "a jitter as long as the interval can push a run into the next one's slot",
            );
        }
        let overlap = match self.choice(t, p, "overlap", &["skip", "queue"]) {
            Some("queue") => Overlap::Queue,
            _ => Overlap::Skip,
        };
        let catch_up = match self.choice(t, p, "catch_up", &["latest", "all", "none"]) {
            Some("all") => CatchUp::All,
            Some("none") => CatchUp::None,
            _ => CatchUp::Latest,
        };
        let catch_up_window = self
            .positive_duration(t, p, "catch_up_window")
            .map_or(DEFAULT_CATCH_UP_WINDOW, |(d, _)| d);
        let deadline = self.positive_duration(t, p, "deadline");
        let heartbeat = self.positive_duration(t, p, "heartbeat_threshold");
        if let (Some((ScheduleConfig::Every(interval), _, _)), Some((threshold, span))) =
            (&schedule, &heartbeat)
            && threshold < interval
        {
            self.err_hint(
                    span,
                    &join(p, "heartbeat_threshold"),
                    format!(
                        "heartbeat_threshold ({}) is shorter than the interval ({})",
                        duration::format(*threshold),
                        duration::format(*interval)
                    ),
                    "the job would be reported overdue between every two runs; twice the interval is the default",
                );
        }
        let retry = self
            .table(t, p, "retry")
            .map(|r| self.retry_policy(r, &join(p, "retry"), refs.retry));
        let steps = self.steps(t, p, refs);

        let (name, _) = name?;
        let (schedule, interval, is_cron) = schedule?;
        let default_deadline = if is_cron {
            interval.min(CRON_DEFAULT_DEADLINE)
        } else {
            interval.min(MAX_DEFAULT_DEADLINE)
        };
        Some(JobConfig {
            name: name.to_string(),
            schedule,
            start_jitter: start_jitter.map_or(Duration::ZERO, |(d, _)| d),
            overlap,
            catch_up,
            catch_up_window,
            deadline: deadline.map_or(default_deadline, |(d, _)| d),
            heartbeat_threshold: heartbeat.map_or(interval.saturating_mul(2), |(d, _)| d),
            retry,
            steps: steps?,
        })
    }

    /// A cron schedule, its nominal interval (largest gap) and `true`.
    fn cron(
        &mut self,
        t: &RawTable,
        p: &str,
        zone: Tz,
    ) -> Option<(ScheduleConfig, Duration, bool)> {
        let (expr, span) = self.string(t, p, "cron")?;
        let key = join(p, "cron");
        const HINT: &str = "five fields: minute hour day-of-month month day-of-week (a sixth, leading field is seconds), e.g. \"*/15 * * * *\"";
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            self.err_hint(
                &span,
                &key,
                format!("invalid cron expression `{expr}`: it has {fields} fields"),
                HINT,
            );
            return None;
        }
        let cron = match croner::Cron::from_str(expr) {
            Ok(c) => c,
            Err(e) => {
                let detail = match &e {
                    croner::errors::CronError::ComponentError(m)
                    | croner::errors::CronError::InvalidPattern(m)
                    | croner::errors::CronError::IllegalCharacters(m) => m.clone(),
                    other => other.to_string(),
                };
                let detail = detail.trim().trim_end_matches('.').to_lowercase();
                self.err_hint(
                    &span,
                    &key,
                    format!("invalid cron expression `{expr}`: {detail}"),
                    HINT,
                );
                return None;
            }
        };
        match cron_max_gap(&cron, zone) {
            Ok(gap) => Some((ScheduleConfig::Cron(expr.to_string()), gap, true)),
            Err(why) => {
                self.err_hint(
                    &span,
                    &key,
                    format!("cron expression `{expr}` is not a repeating schedule: {why}"),
                    HINT,
                );
                None
            }
        }
    }

    fn steps(&mut self, job: &RawTable, p: &str, refs: &Refs) -> Option<Vec<StepConfig>> {
        const HINT: &str = "add [[jobs.steps]] sections after the job, each with a `name`";
        let Some(e) = job.get("steps") else {
            self.missing(job, p, "steps", HINT);
            return None;
        };
        let RawKind::Array(items) = &e.value.kind else {
            self.wrong_type(e, p, "an array of tables", Some(HINT));
            return None;
        };
        if items.is_empty() {
            self.err_hint(
                &e.value.span,
                &join(p, "steps"),
                "a job needs at least one step",
                HINT,
            );
            return None;
        }
        // All step names up front, to tell "a later step" from "no such step".
        let all_names: Vec<&str> = items
            .iter()
            .filter_map(|s| match &s.kind {
                RawKind::Table(t) => match t.get("name").map(|n| &n.value.kind) {
                    Some(RawKind::String(n)) => Some(n.as_str()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let mut earlier: Vec<String> = Vec::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let sp = format!("{p}.steps[{i}]");
            let RawKind::Table(t) = &item.kind else {
                self.err_hint(
                    &item.span,
                    &sp,
                    format!("must be a table, not {}", item.kind.type_name()),
                    HINT,
                );
                ok = false;
                continue;
            };
            let ctx = StepCtx {
                path: &sp,
                earlier: &earlier,
                all: &all_names,
                refs,
            };
            let step = self.step(t, &ctx);
            if let Some((name, span)) = self.name(t, &sp, "name") {
                if earlier.iter().any(|n| n == name) {
                    let first = items
                        .iter()
                        .find_map(|s| match &s.kind {
                            RawKind::Table(t) => t
                                .get("name")
                                .filter(|n| n.value.kind == RawKind::String(name.to_string()))
                                .map(|n| {
                                    super::diagnostic::line_col(self.text, n.value.span.start).0
                                }),
                            _ => None,
                        })
                        .unwrap_or(0);
                    self.err_hint(
                        &span,
                        &join(&sp, "name"),
                        format!("duplicate step name `{name}`"),
                        format!("the first step named `{name}` is on line {first}; step names must be unique within a job"),
                    );
                } else {
                    earlier.push(name.to_string());
                }
            }
            match step {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn step(&mut self, t: &RawTable, ctx: &StepCtx<'_>) -> Option<StepConfig> {
        let p = ctx.path;
        // `name` is read (and checked for duplicates) by the caller.
        let name = match t.get("name").map(|n| &n.value.kind) {
            Some(RawKind::String(n)) => Some(n.clone()),
            _ => None,
        };
        let action = match self.string(t, p, "action") {
            Some((a, span)) if a.trim().is_empty() => {
                self.err_hint(
                    &span,
                    &join(p, "action"),
                    "must not be empty",
                    "remove it: a step without an action runs anytime",
                );
                None
            }
            Some((a, _)) => Some(a.to_string()),
            None => None,
        };
        let kind = if t.get("kind").is_some() {
            self.choice(t, p, "kind", &["http", "command"])
        } else {
            Some("http")
        };
        let (own, other, this_kind, other_kind) = match kind {
            Some("command") => (COMMAND_KEYS, HTTP_KEYS, "a command step", "http"),
            Some(_) => (
                HTTP_KEYS,
                COMMAND_KEYS,
                "an http step (the default kind)",
                "command",
            ),
            None => {
                // Unknown kind: report only keys valid for no kind.
                let all: Vec<&str> = STEP_KEYS
                    .iter()
                    .chain(HTTP_KEYS)
                    .chain(COMMAND_KEYS)
                    .copied()
                    .collect();
                self.check_keys(t, p, &all);
                return None;
            }
        };
        let valid: Vec<&str> = STEP_KEYS.iter().chain(own).copied().collect();
        for e in &t.entries {
            if valid.contains(&e.key.as_str()) {
                continue;
            }
            if other.contains(&e.key.as_str()) {
                self.err_hint(
                    &e.key_span,
                    &join(p, &e.key),
                    format!("`{}` is only valid for {other_kind} steps", e.key),
                    format!(
                        "this is {this_kind}; set kind = \"{other_kind}\" or remove `{}`",
                        e.key
                    ),
                );
            } else {
                self.unknown_key(e, p, &valid);
            }
        }
        let kind = if kind == Some("command") {
            StepKind::Command(self.command_step(t, ctx)?)
        } else {
            StepKind::Http(self.http_step(t, ctx)?)
        };
        Some(StepConfig {
            name: name?,
            action,
            kind,
        })
    }

    /// Checks the placeholders of a string-valued field; returns the text with each
    /// placeholder replaced by `x`, or `None` after reporting.
    fn check_placeholders(
        &mut self,
        text: &str,
        span: &Span,
        key: &str,
        ctx: &StepCtx<'_>,
    ) -> Option<String> {
        const HINT: &str = "placeholders look like {{step.output}}, naming an earlier step of this job and one of its outputs, or {{run.id}}, {{run.due}}, {{job.name}}";
        let (replaced, found) = match placeholders(text) {
            Ok(x) => x,
            Err(message) => {
                self.err_hint(span, key, message, HINT);
                return None;
            }
        };
        let mut ok = true;
        let earlier_list = if ctx.earlier.is_empty() {
            "this is the first step, so it cannot use any".to_string()
        } else {
            format!(
                "earlier steps: {}",
                list(ctx.earlier.iter().map(String::as_str))
            )
        };
        for (step, output) in found {
            if ctx.earlier.contains(&step)
                || BUILTIN_PLACEHOLDERS.contains(&(step.as_str(), output.as_str()))
            {
                continue;
            }
            ok = false;
            if ctx.all.contains(&step.as_str()) {
                self.err_hint(
                    span,
                    key,
                    format!("placeholder `{{{{{step}.{output}}}}}` uses step `{step}`, which does not run before this step"),
                    format!("a step can only use outputs of the steps above it; {earlier_list}"),
                );
            } else {
                self.err_hint(
                    span,
                    key,
                    format!("placeholder `{{{{{step}.{output}}}}}` names no step of this job"),
                    format!(
                        "{}{earlier_list}",
                        did_you_mean(&step, ctx.earlier.iter().map(String::as_str))
                    ),
                );
            }
        }
        ok.then_some(replaced)
    }

    fn reference(
        &mut self,
        t: &RawTable,
        p: &str,
        key: &str,
        names: &BTreeSet<String>,
        what: &str,
        section: &str,
    ) -> Option<String> {
        let (name, span) = self.string(t, p, key)?;
        self.check_reference(name, &span, &join(p, key), names, what, section)
    }

    fn check_reference(
        &mut self,
        name: &str,
        span: &Span,
        key: &str,
        names: &BTreeSet<String>,
        what: &str,
        section: &str,
    ) -> Option<String> {
        if names.contains(name) {
            return Some(name.to_string());
        }
        let defined = if names.is_empty() {
            format!("no {what}s are defined")
        } else {
            format!(
                "defined {what}s: {}",
                list(names.iter().map(String::as_str))
            )
        };
        self.err_hint(
            span,
            key,
            format!("unknown {what} `{name}`"),
            match closest(name, names.iter().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`? {defined}"),
                None => format!("{defined}; declare it in a [{section}.{name}] section"),
            },
        );
        None
    }

    fn http_step(&mut self, t: &RawTable, ctx: &StepCtx<'_>) -> Option<HttpStep> {
        let p = ctx.path;
        let mut ok = true;
        let method = match self.string(t, p, "method") {
            None => Some("GET".to_string()),
            Some((m, _)) if METHODS.contains(&m) => Some(m.to_string()),
            Some((m, span)) => {
                let upper = m.to_ascii_uppercase();
                let hint = if METHODS.contains(&upper.as_str()) {
                    format!("methods are upper case: `{upper}`")
                } else {
                    format!("one of {}", list(METHODS.iter().copied()))
                };
                self.err_hint(
                    &span,
                    &join(p, "method"),
                    format!("invalid http method `{m}`"),
                    hint,
                );
                None
            }
        };
        let url = match self.required_string(t, p, "url", URL_HINT) {
            Some((u, span)) => {
                let key = join(p, "url");
                match self.check_placeholders(u, &span, &key, ctx) {
                    Some(replaced) => match parse_url(&replaced) {
                        Ok(_) => Some(u.to_string()),
                        Err(message) => {
                            self.err_hint(&span, &key, message, URL_HINT);
                            None
                        }
                    },
                    None => None,
                }
            }
            None => None,
        };
        let service = if t.get("service").is_none() {
            self.missing(t, p, "service", "an http step names the [services] entry it calls (for its breaker, budget and timeout)");
            None
        } else {
            self.reference(t, p, "service", &ctx.refs.services, "service", "services")
        };
        let credential = if t.get("credential").is_some() {
            let c = self.reference(
                t,
                p,
                "credential",
                &ctx.refs.credentials,
                "credential",
                "credentials",
            );
            ok &= c.is_some();
            c
        } else {
            None
        };
        let mut headers = Vec::new();
        if let Some(h) = self.table(t, p, "headers") {
            let hp = join(p, "headers");
            for e in &h.entries {
                let key = join(&hp, &e.key);
                if http::HeaderName::from_bytes(e.key.as_bytes()).is_err() {
                    self.err(
                        &e.key_span,
                        &key,
                        format!("invalid header name `{}`", e.key),
                    );
                    ok = false;
                }
                let RawKind::String(v) = &e.value.kind else {
                    self.wrong_type(e, &hp, "a string", None);
                    ok = false;
                    continue;
                };
                match self.check_placeholders(v, &e.value.span, &key, ctx) {
                    Some(replaced) if http::HeaderValue::from_str(&replaced).is_err() => {
                        self.err_hint(
                            &e.value.span,
                            &key,
                            "invalid header value",
                            "header values are visible ASCII text without line breaks",
                        );
                        ok = false;
                    }
                    Some(_) => headers.push((e.key.clone(), v.clone())),
                    None => ok = false,
                }
            }
        }
        let body = match self.string(t, p, "body") {
            Some((b, span)) => {
                let checked = self.check_placeholders(b, &span, &join(p, "body"), ctx);
                ok &= checked.is_some();
                Some(b.to_string())
            }
            None => None,
        };
        let mut extract = BTreeMap::new();
        if let Some(x) = self.table(t, p, "extract") {
            let xp = join(p, "extract");
            for e in &x.entries {
                let key = join(&xp, &e.key);
                if !is_name(&e.key) {
                    self.err_hint(
                        &e.key_span,
                        &key,
                        format!("invalid output name `{}`", e.key),
                        NAME_HINT,
                    );
                    ok = false;
                }
                let RawKind::String(ptr) = &e.value.kind else {
                    self.wrong_type(e, &xp, "a JSON pointer string", None);
                    ok = false;
                    continue;
                };
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    self.err_hint(
                        &e.value.span,
                        &key,
                        format!("invalid JSON pointer `{ptr}`"),
                        format!("a JSON pointer starts with `/`, e.g. \"/{ptr}\" (or is \"\" for the whole response)"),
                    );
                    ok = false;
                    continue;
                }
                extract.insert(e.key.clone(), ptr.clone());
            }
        }
        if !ok {
            return None;
        }
        Some(HttpStep {
            method: method?,
            url: url?,
            headers,
            body,
            service: service?,
            credential,
            extract,
        })
    }

    fn command_step(&mut self, t: &RawTable, ctx: &StepCtx<'_>) -> Option<CommandStep> {
        let p = ctx.path;
        let mut ok = true;
        const ARGV_HINT: &str =
            "the program and its arguments, e.g. [\"sh\", \"-c\", \"echo hello\"]";
        let argv = match t.get("argv") {
            None => {
                self.missing(t, p, "argv", ARGV_HINT);
                None
            }
            Some(e) => match &e.value.kind {
                RawKind::Array(items) if items.is_empty() => {
                    self.err_hint(
                        &e.value.span,
                        &join(p, "argv"),
                        "must not be empty",
                        ARGV_HINT,
                    );
                    None
                }
                RawKind::Array(items) => {
                    let mut argv = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        match &item.kind {
                            RawKind::String(s) => argv.push(s.clone()),
                            other => {
                                self.err_hint(
                                    &item.span,
                                    &format!("{}[{i}]", join(p, "argv")),
                                    format!("must be a string, not {}", other.type_name()),
                                    ARGV_HINT,
                                );
                            }
                        }
                    }
                    if argv.first().is_some_and(|a| a.trim().is_empty()) {
                        self.err_hint(
                            &items[0].span,
                            &format!("{}[0]", join(p, "argv")),
                            "the program name is empty",
                            ARGV_HINT,
                        );
                        None
                    } else {
                        (argv.len() == items.len()).then_some(argv)
                    }
                }
                _ => {
                    self.wrong_type(e, p, "an array of strings", Some(ARGV_HINT));
                    None
                }
            },
        };
        let cwd = self.string(t, p, "cwd").map(|(c, _)| self.resolve(c));
        let mut env = Vec::new();
        if let Some(vars) = self.table(t, p, "env") {
            let ep = join(p, "env");
            for e in &vars.entries {
                let key = join(&ep, &e.key);
                if e.key.is_empty() || e.key.contains('=') || e.key.contains('\0') {
                    self.err(
                        &e.key_span,
                        &key,
                        format!("invalid environment variable name `{}`", e.key),
                    );
                    ok = false;
                }
                match &e.value.kind {
                    RawKind::String(v) => env.push((e.key.clone(), v.clone())),
                    _ => {
                        self.wrong_type(e, &ep, "a string", None);
                        ok = false;
                    }
                }
            }
        }
        let timeout = self
            .positive_duration(t, p, "timeout")
            .map_or(Duration::from_secs(600), |(d, _)| d);
        let mut credentials = Vec::new();
        if let Some(e) = t.get("credentials") {
            let cp = join(p, "credentials");
            match &e.value.kind {
                RawKind::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let key = format!("{cp}[{i}]");
                        let RawKind::String(name) = &item.kind else {
                            self.err(
                                &item.span,
                                &key,
                                format!("must be a string, not {}", item.kind.type_name()),
                            );
                            ok = false;
                            continue;
                        };
                        match self.check_reference(
                            name,
                            &item.span,
                            &key,
                            &ctx.refs.credentials,
                            "credential",
                            "credentials",
                        ) {
                            Some(n) => credentials.push(n),
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    self.wrong_type(e, p, "an array of credential names", None);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        Some(CommandStep {
            argv: argv?,
            cwd,
            env,
            timeout,
            credentials,
        })
    }
}

/// [`Url::parse`], with a clearer message for the commonest mistake.
fn parse_url(text: &str) -> Result<Url, String> {
    if !text.contains("://") {
        return Err("not an absolute url: the scheme (https://) is missing".to_string());
    }
    Url::parse(text)
}

const URL_HINT: &str = "an absolute http(s) URL such as \"https://api.example.com/v1/items\"";
const SECRET_HINT: &str = "a secret is a string, { env = \"NAME\" } or { file = \"PATH\" }";

/// Where a step is, and what it may refer to.
struct StepCtx<'a> {
    path: &'a str,
    /// Names of the steps before this one.
    earlier: &'a [String],
    /// Names of all steps of the job.
    all: &'a [&'a str],
    refs: &'a Refs,
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::config::NoSecretSources;

    const OFFLINE: &str = include_str!("../../../examples/offline.toml");
    const HTTP_OAUTH: &str = include_str!("../../../examples/http-oauth.toml");

    /// Answers the secrets `examples/http-oauth.toml` refers to.
    struct FakeSecrets;

    impl SecretResolver for FakeSecrets {
        fn env(&self, name: &str) -> Option<String> {
            match name {
                "GOOGLE_CLIENT_SECRET" => Some("client-s3cret".to_string()),
                "BLOG_REFRESH_TOKEN" => Some("blog-refresh-s3cret".to_string()),
                _ => None,
            }
        }
        fn file(&self, path: &Path) -> std::io::Result<String> {
            if path == Path::new("/etc/steadfast/secrets/google.refresh") {
                Ok("  google-refresh-s3cret\n".to_string())
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            }
        }
    }

    fn parse(text: &str) -> Result<Config, Diagnostics> {
        parse_config(text, Path::new("/etc/steadfast/runner.toml"), &FakeSecrets)
    }

    #[test]
    fn offline_example_parses_with_defaults_filled_in() {
        let c = parse_config(OFFLINE, Path::new("/srv/offline.toml"), &NoSecretSources)
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(c.runner.state_dir, PathBuf::from("/srv/state/offline"));
        assert_eq!(c.runner.time_zone, Tz::UTC);
        assert_eq!(c.runner.memory_fatal_bytes, 2048 * MIB);
        assert_eq!(c.patterns, Patterns::ALL);
        assert_eq!(c.retry, RetryPolicy::default());
        let names: Vec<_> = c.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["clock", "disk-report", "heartbeat-file"]);
        for job in &c.jobs {
            let ScheduleConfig::Every(every) = job.schedule else {
                panic!("offline jobs use `every`");
            };
            assert!((60..=300).contains(&every.as_secs()), "{}", job.name);
            assert!(
                job.steps
                    .iter()
                    .all(|s| matches!(s.kind, StepKind::Command(_)))
            );
        }
        let clock = &c.jobs[0];
        assert_eq!(clock.deadline, Duration::from_secs(60));
        assert_eq!(clock.heartbeat_threshold, Duration::from_secs(120));
        assert_eq!(clock.overlap, Overlap::Skip);
        let StepKind::Command(date) = &clock.steps[0].kind else {
            unreachable!()
        };
        assert_eq!(date.argv, ["date", "-u"]);
        assert_eq!(date.timeout, Duration::from_secs(10));
        let hb = &c.jobs[2];
        assert_eq!(hb.heartbeat_threshold, Duration::from_secs(600));
        let retry = hb.retry.unwrap();
        assert_eq!(
            (retry.max_attempts, retry.base),
            (3, Duration::from_secs(2))
        );
        assert_eq!(
            retry.cap,
            RetryPolicy::default().cap,
            "unset keys come from [retry]"
        );
    }

    #[test]
    fn http_oauth_example_parses_and_resolves_secrets() {
        let c = parse(HTTP_OAUTH).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(c.runner.time_zone, chrono_tz::Europe::Berlin);
        assert_eq!(c.runner.state_dir, PathBuf::from("/etc/steadfast/state"));
        assert_eq!(
            c.windows["publish"],
            WindowConfig {
                start: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            }
        );
        assert_eq!(c.services["youtube"].call_timeout, Duration::from_secs(120));
        assert_eq!(c.services["blog"].breaker.failure_threshold, 5);
        assert_eq!(c.services["blog"].breaker.window_calls, 20);
        assert_eq!(
            c.services["mail"].breaker.max_cooldown,
            Duration::from_secs(7200)
        );
        let google = &c.credentials["google"];
        assert_eq!(
            google.refresh_token.expose_secret(),
            "google-refresh-s3cret"
        );
        assert_eq!(
            google.client_secret.as_ref().map(|s| s.expose_secret()),
            Some("client-s3cret")
        );
        assert_eq!(
            c.credentials["blog"].refresh_token.expose_secret(),
            "blog-refresh-s3cret"
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug must not show secrets"
        );

        let yt = &c.jobs[0];
        assert_eq!(yt.retry.unwrap().max_attempts, 3);
        let StepKind::Command(render) = &yt.steps[0].kind else {
            unreachable!()
        };
        assert_eq!(render.cwd, Some(PathBuf::from("/etc/steadfast/scripts")));
        let StepKind::Http(upload) = &yt.steps[2].kind else {
            unreachable!()
        };
        assert_eq!(upload.method, "POST");
        assert_eq!(
            upload.headers,
            [("Content-Type".to_string(), "application/json".to_string())]
        );
        assert_eq!(yt.steps[2].action.as_deref(), Some("publish"));

        let blog = &c.jobs[1];
        assert_eq!(
            blog.schedule,
            ScheduleConfig::Cron("15 9-21 * * 1-5".to_string())
        );
        // Weekdays only: the largest gap is Friday 21:15 -> Monday 09:15 (60 h), so the
        // default deadline is the 15 min cap.
        assert_eq!(blog.deadline, Duration::from_secs(15 * 60));
        let StepKind::Http(draft) = &blog.steps[0].kind else {
            unreachable!()
        };
        assert_eq!(draft.method, "GET", "GET is the default");
        assert_eq!(draft.extract["slug"], "/drafts/0/slug");
        assert_eq!(c.jobs[2].heartbeat_threshold, Duration::from_secs(30 * 60));
    }

    #[test]
    fn windows_accept_toml_local_times_too() {
        let text = OFFLINE.replace(
            "[runner]",
            "[windows]\npost = { start = 22:30:00, end = \"06:00\" }\n[runner]",
        );
        let c = parse(&text).unwrap_or_else(|d| panic!("{d}"));
        let post = c.windows["post"];
        assert_eq!(post.start, NaiveTime::from_hms_opt(22, 30, 0).unwrap());
        assert!(post.end < post.start, "a window may span midnight");
    }

    #[test]
    fn cron_threshold_spans_the_weekend() {
        let text = "[[jobs]]\nname = \"j\"\ncron = \"0 9 * * 1-5\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n";
        let c = parse(text).unwrap_or_else(|d| panic!("{d}"));
        // Friday 09:00 -> Monday 09:00 is 72 h; a naive "gap between the next two
        // occurrences" from a Monday would say 24 h and alarm every weekend.
        assert_eq!(
            c.jobs[0].heartbeat_threshold,
            Duration::from_secs(2 * 72 * 3600)
        );
        let every_minute = text.replace("0 9 * * 1-5", "* * * * *");
        let c = parse(&every_minute).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(c.jobs[0].heartbeat_threshold, Duration::from_secs(120));
        assert_eq!(c.jobs[0].deadline, Duration::from_secs(60));
    }

    #[test]
    fn extra_sections_are_returned_for_the_caller() {
        let text = format!("[world]\nseed = 7\n[faults.dns]\nrate = 0.1\n{OFFLINE}");
        let (config, extra) = parse_config_value(
            &text,
            Path::new("scenario.toml"),
            &["world", "faults"],
            &NoSecretSources,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(config.jobs.len(), 3);
        assert_eq!(extra["world"]["seed"].as_integer(), Some(7));
        assert_eq!(extra["faults"]["dns"]["rate"].as_float(), Some(0.1));
        let err = parse_config(&text, Path::new("scenario.toml"), &NoSecretSources).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.0.iter().all(|d| d.message.starts_with("unknown key")));
    }

    #[test]
    fn secret_values_never_reach_diagnostics() {
        // A literal secret next to mistakes in the same credential.
        let text = "[credentials.c]\ntoken_url = \"nope\"\nclient_id = 5\nclient_secret = \"hunter2-literal\"\nrefresh_token = { file = \"secrets/google.refresh\", env = \"BLOG_REFRESH_TOKEN\" }\n";
        let err = parse(text).unwrap_err().to_string();
        for secret in [
            "hunter2-literal",
            "google-refresh-s3cret",
            "blog-refresh-s3cret",
        ] {
            assert!(!err.contains(secret), "{err}");
        }
        assert!(err.contains("exactly one of `env` and `file`"), "{err}");
    }

    #[test]
    fn did_you_mean_finds_near_misses_only() {
        assert_eq!(closest("crn", JOB_KEYS.iter().copied()), Some("cron"));
        assert_eq!(closest("evrey", JOB_KEYS.iter().copied()), Some("every"));
        assert_eq!(closest("colour", JOB_KEYS.iter().copied()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("evrey", "every"), 1);
    }

    #[test]
    fn placeholders_are_split_out() {
        let (text, found) = placeholders("https://h/{{a.b}}/x?{{ c.d }}").unwrap();
        assert_eq!(text, "https://h/x/x?x");
        assert_eq!(found, [("a".into(), "b".into()), ("c".into(), "d".into())]);
        assert!(placeholders("{{a.b").is_err());
        assert!(placeholders("{{ab}}").is_err());
    }
}
