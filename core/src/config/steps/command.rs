//! A command step: argv, cwd, env, timeout and credentials, each read by its own
//! function.

use std::path::PathBuf;
use std::time::Duration;

use super::super::credentials::CredentialId;
use super::super::raw::RawKind;
use super::super::reader::{Table, join};
use super::super::template::Template;
use super::{StepCtx, reference, template};

/// A local command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandStep {
    /// Program and arguments; arguments may contain placeholders.
    pub argv: Vec<Template>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Timeout (default 10 min).
    pub timeout: Duration,
    /// Credentials whose fresh access tokens are injected as `ACCESS_TOKEN_<NAME>`.
    pub credentials: Vec<CredentialId>,
}

/// The keys of a command step.
pub(crate) const KEYS: &[&str] = &["argv", "cwd", "env", "timeout", "credentials"];
/// At most this many arguments, environment variables or credentials.
pub const MAX_ITEMS: usize = 1_024;
const ARGV_HINT: &str = "the program and its arguments, e.g. [\"sh\", \"-c\", \"echo hello\"]";

/// Reads a command step; `None` when anything is wrong (each reported).
pub(crate) fn read(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<CommandStep> {
    let argv = argv(t, ctx);
    let cwd = t.string("cwd").map(|(c, _)| t.reader().resolve(c));
    let env = env(t);
    let timeout = t
        .positive_duration("timeout")
        .map_or(Duration::from_secs(600), |(d, _)| d);
    let credentials = credentials(t, ctx);
    Some(CommandStep {
        argv: argv?,
        cwd,
        env: env?,
        timeout,
        credentials: credentials?,
    })
}

/// `argv`: a non-empty array of templates whose first is a program name.
fn argv(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<Vec<Template>> {
    if t.entry("argv").is_none() {
        t.missing("argv", ARGV_HINT);
        return None;
    }
    let items = t.strings("argv", MAX_ITEMS, ARGV_HINT)?;
    let Some((program, program_span)) = items.first() else {
        let span = t
            .entry("argv")
            .map(|e| e.value.span.clone())
            .unwrap_or_default();
        t.error_hint(&span, "argv", "must not be empty", ARGV_HINT);
        return None;
    };
    if program.trim().is_empty() {
        t.error_hint(
            program_span,
            "argv[0]",
            "the program name is empty",
            ARGV_HINT,
        );
        return None;
    }
    let mut argv = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, (arg, span)) in items.iter().enumerate() {
        match template(t, arg, span, &t.key(&format!("argv[{i}]")), ctx) {
            Some(a) => argv.push(a),
            None => ok = false,
        }
    }
    ok.then_some(argv)
}

/// `env`: variable name -> value.
fn env(t: &Table<'_>) -> Option<Vec<(String, String)>> {
    let Some(e) = t.entry("env") else {
        return Some(Vec::new());
    };
    let RawKind::Table(vars) = &e.value.kind else {
        t.wrong_type(e, "a table", None);
        return None;
    };
    if vars.entries.len() > MAX_ITEMS {
        t.error(
            &e.value.span,
            "env",
            format!(
                "{} variables, more than the {MAX_ITEMS} allowed",
                vars.entries.len()
            ),
        );
        return None;
    }
    let ep = t.key("env");
    let reader = t.reader();
    let mut out = Vec::with_capacity(vars.entries.len());
    let mut ok = true;
    for e in &vars.entries {
        let key = join(&ep, &e.key);
        if e.key.is_empty() || e.key.contains('=') || e.key.contains('\0') {
            reader.error(
                &e.key_span,
                &key,
                format!("invalid environment variable name `{}`", e.key),
            );
            ok = false;
        }
        match &e.value.kind {
            RawKind::String(v) => out.push((e.key.clone(), v.clone())),
            other => {
                reader.report(
                    Some(e.value.span.start),
                    &key,
                    format!("must be a string, not {}", other.type_name()),
                    None,
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `credentials`: declared `[credentials]` entries.
fn credentials(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<Vec<CredentialId>> {
    let Some(e) = t.entry("credentials") else {
        return Some(Vec::new());
    };
    let RawKind::Array(items) = &e.value.kind else {
        t.wrong_type(e, "an array of credential names", None);
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().take(MAX_ITEMS).enumerate() {
        let key = t.key(&format!("credentials[{i}]"));
        let RawKind::String(name) = &item.kind else {
            t.reader().error(
                &item.span,
                &key,
                format!("must be a string, not {}", item.kind.type_name()),
            );
            ok = false;
            continue;
        };
        match reference(
            t,
            name,
            &item.span,
            &key,
            &ctx.refs.credentials,
            "credential",
            "credentials",
        ) {
            Some(n) => out.push(CredentialId::from(n)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}
