//! `[[jobs.steps]]`: what a job does, step by step.
//!
//! # Layout
//! - [`http`]: an HTTP call (method, URL, headers, body, service, credential, extract).
//! - [`command`]: a local command (argv, cwd, env, timeout, credentials).
//! - [`expect`]: an http step's output contract (status, non-empty body, JSON pointers).
//!
//! This module reads what every step has (`name`, `action`, `kind`), checks names are
//! unique within the job, and checks placeholders against the steps before.

pub mod command;
pub mod expect;
pub mod http;

use std::collections::BTreeSet;

use super::jobs::Refs;
use super::raw::Span;
use super::reader::Table;
use super::suggest::{did_you_mean, list};
use super::template::{self, Template};

pub use command::CommandStep;
pub use expect::Expect;
pub use http::HttpStep;

/// One step of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// Unique within the job.
    pub name: String,
    /// Action type (for time windows), e.g. `publish` or `research`.
    pub action: Option<String>,
    /// What the step does.
    pub kind: StepKind,
    /// The earlier steps that must be done before this one runs; `None`: every step
    /// before it.
    pub needs: Option<Vec<String>>,
}

/// The kinds of step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// An HTTP call.
    Http(HttpStep),
    /// A local command.
    Command(CommandStep),
}

impl StepConfig {
    /// Every template of the step (to find the steps it depends on).
    pub fn templates(&self) -> Vec<&Template> {
        match &self.kind {
            StepKind::Http(h) => {
                let mut t = vec![&h.url];
                t.extend(h.headers.iter().map(|(_, v)| v));
                t.extend(h.body.as_ref());
                t
            }
            StepKind::Command(c) => c.argv.iter().collect(),
        }
    }
}

/// The keys every step has.
const KEYS: &[&str] = &["name", "action", "kind", "needs"];
/// At most this many steps per job.
pub const MAX_STEPS: usize = 100;
const HINT: &str = "add [[jobs.steps]] sections after the job, each with a `name`";

/// Where a step is, and what it may refer to.
#[derive(Debug)]
pub(crate) struct StepCtx<'a> {
    /// Names of the steps before this one.
    pub(crate) earlier: &'a [String],
    /// Names of all steps of the job.
    pub(crate) all: &'a BTreeSet<&'a str>,
    pub(crate) refs: &'a Refs,
}

/// Reads a job's steps; `None` if any is invalid (each reported).
pub(crate) fn read(job: &Table<'_>, refs: &Refs) -> Option<Vec<StepConfig>> {
    if job.entry("steps").is_none() {
        job.missing("steps", HINT);
        return None;
    }
    let all_keys: Vec<&'static str> = KEYS
        .iter()
        .chain(http::KEYS)
        .chain(command::KEYS)
        .copied()
        .collect();
    let (span, tables) = job.array_of_tables("steps", MAX_STEPS, &all_keys, HINT)?;
    if tables.is_empty() {
        job.error_hint(&span, "steps", "a job needs at least one step", HINT);
        return None;
    }
    // All step names up front, to tell "a later step" from "no such step".
    let all: BTreeSet<&str> = tables
        .iter()
        .flatten()
        .filter_map(|t| t.raw().get("name"))
        .filter_map(|n| match &n.value.kind {
            super::raw::RawKind::String(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let mut earlier: Vec<String> = Vec::new();
    let mut first_line: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    let mut ok = tables.iter().all(Option::is_some);
    for t in tables.iter().flatten() {
        let ctx = StepCtx {
            earlier: &earlier,
            all: &all,
            refs,
        };
        let step = step(t, &ctx);
        if let Some((name, span)) = t.name("name", "name") {
            match earlier.iter().position(|n| n == name) {
                Some(i) => t.error_hint(
                    &span,
                    "name",
                    format!("duplicate step name `{name}`"),
                    format!(
                        "the first step named `{name}` is on line {}; step names must be unique within a job",
                        first_line[i]
                    ),
                ),
                None => {
                    earlier.push(name.to_string());
                    first_line.push(t.reader().line_of(span.start));
                }
            }
        }
        match step {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn step(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<StepConfig> {
    // `name` is read (and checked for duplicates) by the caller.
    let name = match t.raw().get("name").map(|n| &n.value.kind) {
        Some(super::raw::RawKind::String(n)) => Some(n.clone()),
        _ => None,
    };
    let action = match t.string("action") {
        Some((a, span)) if a.trim().is_empty() => {
            t.error_hint(
                &span,
                "action",
                "must not be empty",
                "remove it: a step without an action runs anytime",
            );
            None
        }
        Some((a, span)) => match super::names::check(a, "action name") {
            Ok(()) => Some(a.to_string()),
            Err((message, hint)) if a.len() > super::names::MAX_NAME_CHARS => {
                t.error_hint(&span, "action", message, hint);
                None
            }
            Err(_) => Some(a.to_string()),
        },
        None => None,
    };
    let kind = if t.entry("kind").is_some() {
        t.choice("kind", &["http", "command"])
    } else {
        Some("http")
    };
    let (own, other, this_kind, other_kind) = match kind {
        Some("command") => (command::KEYS, http::KEYS, "a command step", "http"),
        Some(_) => (
            http::KEYS,
            command::KEYS,
            "an http step (the default kind)",
            "command",
        ),
        None => {
            // Unknown kind: report only keys valid for no kind.
            t.finish();
            return None;
        }
    };
    let valid: Vec<&'static str> = KEYS.iter().chain(own).copied().collect();
    for e in &t.raw().entries {
        if valid.contains(&e.key.as_str()) {
            continue;
        }
        if other.contains(&e.key.as_str()) {
            t.error_hint(
                &e.key_span,
                &e.key,
                format!("`{}` is only valid for {other_kind} steps", e.key),
                format!(
                    "this is {this_kind}; set kind = \"{other_kind}\" or remove `{}`",
                    e.key
                ),
            );
        } else {
            t.error_hint(
                &e.key_span,
                &e.key,
                format!("unknown key `{}`", e.key),
                format!(
                    "{}valid keys here: {}",
                    did_you_mean(&e.key, valid.iter().copied()),
                    list(valid.iter().copied())
                ),
            );
        }
    }
    let needs = needs(t, ctx);
    let kind = if kind == Some("command") {
        StepKind::Command(command::read(t, ctx)?)
    } else {
        StepKind::Http(http::read(t, ctx)?)
    };
    let step = StepConfig {
        name: name?,
        action,
        kind,
        needs: needs?,
    };
    needs_every_output_owner(t, &step, ctx)?;
    Some(step)
}

/// `needs`: names of earlier steps. `Some(None)` when absent (every step before).
fn needs(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<Option<Vec<String>>> {
    const HINT: &str = "needs = [\"fetch\"] lists earlier steps of this job that must be done first; leave it out to need every step before, or write needs = [] for none";
    if t.entry("needs").is_none() {
        return Some(None);
    }
    let items = t.strings("needs", MAX_STEPS, HINT)?;
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, (name, span)) in items.into_iter().enumerate() {
        let key = format!("needs[{i}]");
        let shown = if name.len() > super::names::MAX_NAME_CHARS {
            "(too long to show)"
        } else {
            name
        };
        if ctx.earlier.iter().any(|e| e == name) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
            continue;
        }
        ok = false;
        let earlier_list = if ctx.earlier.is_empty() {
            "this is the first step, so it can need none".to_string()
        } else {
            format!(
                "earlier steps: {}",
                list(ctx.earlier.iter().map(String::as_str))
            )
        };
        let message = if ctx.all.contains(name) {
            format!("step `{shown}` does not run before this step")
        } else {
            format!("`{shown}` names no step of this job")
        };
        t.error_hint(
            &span,
            &key,
            message,
            format!(
                "{}a step can only need the steps above it; {earlier_list}",
                did_you_mean(name, ctx.earlier.iter().map(String::as_str))
            ),
        );
    }
    ok.then_some(Some(out))
}

/// A step whose `needs` is explicit must list every step whose outputs it uses.
fn needs_every_output_owner(t: &Table<'_>, step: &StepConfig, ctx: &StepCtx<'_>) -> Option<()> {
    let Some(needs) = &step.needs else {
        return Some(());
    };
    let span = t.entry("needs").map(|e| e.value.span.clone())?;
    let mut ok = true;
    let owners: BTreeSet<&str> = step
        .templates()
        .into_iter()
        .flat_map(|tpl| tpl.refs())
        .map(|(owner, _)| owner)
        .filter(|owner| ctx.earlier.iter().any(|e| e == owner))
        .collect();
    for owner in owners {
        if !needs.iter().any(|n| n == owner) {
            t.error_hint(
                &span,
                "needs",
                format!("uses outputs of step `{owner}` but does not need it"),
                format!("add \"{owner}\" to needs: a step cannot use what a skipped step did not produce"),
            );
            ok = false;
        }
    }
    ok.then_some(())
}

/// Parses a template-valued field and checks its placeholders name earlier steps;
/// `None` after reporting.
pub(crate) fn template(
    t: &Table<'_>,
    text: &str,
    span: &Span,
    key: &str,
    ctx: &StepCtx<'_>,
) -> Option<Template> {
    const HINT: &str = "placeholders look like {{step.output}}, naming an earlier step of this job and one of its outputs, or {{run.id}}, {{run.due}}, {{job.name}}";
    let parsed = match Template::parse(text) {
        Ok(x) => x,
        Err(e) => {
            t.reader().error_hint(span, key, e.to_string(), HINT);
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
    for (step, output) in parsed.refs() {
        if ctx.earlier.iter().any(|e| e == step) || template::BUILTIN.contains(&(step, output)) {
            continue;
        }
        ok = false;
        if ctx.all.contains(step) {
            t.reader().error_hint(
                span,
                key,
                format!("placeholder `{{{{{step}.{output}}}}}` uses step `{step}`, which does not run before this step"),
                format!("a step can only use outputs of the steps above it; {earlier_list}"),
            );
        } else {
            t.reader().error_hint(
                span,
                key,
                format!("placeholder `{{{{{step}.{output}}}}}` names no step of this job"),
                format!(
                    "{}{earlier_list}",
                    did_you_mean(step, ctx.earlier.iter().map(String::as_str))
                ),
            );
        }
    }
    ok.then_some(parsed)
}

/// Resolves a reference to a declared name; `None` after reporting.
pub(crate) fn reference<'n>(
    t: &Table<'_>,
    name: &'n str,
    span: &Span,
    key: &str,
    names: &BTreeSet<String>,
    what: &str,
    section: &str,
) -> Option<&'n str> {
    if names.contains(name) {
        return Some(name);
    }
    let defined = if names.is_empty() {
        format!("no {what}s are defined")
    } else {
        format!(
            "defined {what}s: {}",
            list(names.iter().map(String::as_str))
        )
    };
    let shown = if name.len() > super::names::MAX_NAME_CHARS {
        "(too long to show)"
    } else {
        name
    };
    t.reader().error_hint(
        span,
        key,
        format!("unknown {what} `{shown}`"),
        match super::suggest::closest(name, names.iter().map(String::as_str)) {
            Some(c) => format!("did you mean `{c}`? {defined}"),
            None => format!("{defined}; declare it in a [{section}.{shown}] section"),
        },
    );
    None
}
