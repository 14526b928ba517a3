//! A whole file: TOML syntax first, then the runner's sections, read together with any
//! sections the caller adds (the daemon's `[notify]`, the simulator's `[world]`).

use std::path::Path;

use chrono_tz::Tz;

use super::raw::{self, RawTable};
use super::reader::{Reader, Table};
use super::source::Source;
use super::{
    Config, Diagnostics, SecretResolver, credentials, jobs, patterns, retry, runner_settings,
    services, windows,
};

/// The top-level sections the runner's core reads.
pub const SECTIONS: &[&str] = &[
    "runner",
    "patterns",
    "retry",
    "windows",
    "services",
    "credentials",
    "jobs",
];

/// How [`read_config`] reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Read cron schedules in this zone and make it the runner's, whatever `[runner]
    /// time_zone` says (the simulator's world has its own zone).
    pub zone: Option<Tz>,
}

/// Parses and validates a runner configuration file's text (the core sections only;
/// any other top-level key is an error).
///
/// # Errors
///
/// Every problem in the file, in file order.
pub fn parse_config(
    text: &str,
    file: &Path,
    secrets: &dyn SecretResolver,
) -> Result<Config, Diagnostics> {
    let source = Source::new(file, text)?;
    let doc = parse_document(&source)?;
    let reader = Reader::new(&source, secrets);
    let top = reader.table(&doc, "", SECTIONS);
    top.finish();
    let config = read_config(&top, ReadOptions::default());
    reader.finish(config)
}

/// The TOML syntax tree, or the first syntax error (after one, the parser's guesses
/// about the rest of the file produce confusing follow-on errors).
///
/// # Errors
///
/// One diagnostic: where the syntax error is, what it is, and a hint.
pub fn parse_document(source: &Source) -> Result<RawTable, Diagnostics> {
    raw::parse(source.text()).map_err(|e| {
        let mut d = source.diagnostic(e.span.map(|s| s.start), "", e.message);
        d.hint = Some(e.hint);
        Diagnostics(vec![d])
    })
}

/// Reads the core's sections from the top-level table `top` (which the caller
/// declared with at least [`SECTIONS`] and finishes itself). `None` when a problem was
/// reported.
pub fn read_config(top: &Table<'_>, options: ReadOptions) -> Option<Config> {
    let before = top.reader().error_count();
    let mut runner = runner_settings::read(
        top.table("runner", runner_settings::KEYS),
        top.reader().resolve("state"),
    );
    if let Some(zone) = options.zone {
        runner.time_zone = zone;
    }
    let patterns = patterns::read(top.table("patterns", patterns::KEYS));
    let retry = top
        .table("retry", retry::KEYS)
        .map_or_else(retry::RetryPolicy::default, |t| {
            retry::read(&t, retry::RetryPolicy::default())
        });
    let windows = windows::read(top);
    let services = services::read(top);
    let (credentials, credential_names) = credentials::read(top);
    let refs = jobs::Refs {
        zone: runner.time_zone,
        retry,
        services: services.keys().cloned().collect(),
        credentials: credential_names,
    };
    let jobs = jobs::read(top, &refs);
    (top.reader().error_count() == before).then_some(Config {
        runner,
        patterns,
        retry,
        windows,
        services,
        credentials,
        jobs,
    })
}
