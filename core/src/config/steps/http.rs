//! An http step: method, URL, headers, body, service, credential, extract and expect,
//! each read by its own function.

use std::collections::BTreeMap;

use super::super::credentials::CredentialId;
use super::super::names;
use super::super::raw::RawKind;
use super::super::reader::{Table, join};
use super::super::services::ServiceId;
use super::super::template::Template;
use super::super::url::{URL_HINT, Url};
use super::expect::{self, Expect};
use super::{StepCtx, reference, template};

/// An HTTP call.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpStep {
    /// Method, e.g. `GET`.
    pub method: http::Method,
    /// URL; may contain `{{step.key}}` placeholders filled from earlier outputs.
    pub url: Template,
    /// Headers, in order; values may contain placeholders.
    pub headers: Vec<(http::HeaderName, Template)>,
    /// Body; may contain placeholders.
    pub body: Option<Template>,
    /// The service it calls (breaker, budget, timeout).
    pub service: ServiceId,
    /// The credential whose bearer token it sends.
    pub credential: Option<CredentialId>,
    /// Values to keep from a JSON response: output name -> JSON pointer.
    pub extract: BTreeMap<String, String>,
    /// What an answer must hold to count as done (every `extract` pointer included).
    pub expect: Expect,
}

/// The keys of an http step.
pub(crate) const KEYS: &[&str] = &[
    "method",
    "url",
    "service",
    "credential",
    "headers",
    "body",
    "extract",
    "expect",
];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// At most this many headers and extracted outputs per step.
pub const MAX_HEADERS: usize = 64;

/// Reads an http step; `None` when anything is wrong (each reported).
pub(crate) fn read(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<HttpStep> {
    let method = method(t);
    let url = url(t, ctx);
    let service = service(t, ctx);
    let credential = credential(t, ctx);
    let headers = headers(t, ctx);
    let body = body(t, ctx);
    let extract = extract(t);
    let expect = match &extract {
        Some(x) => expect::read(t, x.values()),
        None => expect::read(t, std::iter::empty()),
    };
    Some(HttpStep {
        method: method?,
        url: url?,
        headers: headers?,
        body: body?,
        service: service?,
        credential: credential?,
        extract: extract?,
        expect: expect?,
    })
}

/// `method`, upper case, one of [`METHODS`] (default GET).
fn method(t: &Table<'_>) -> Option<http::Method> {
    let Some((m, span)) = t.string("method") else {
        return t.entry("method").is_none().then_some(http::Method::GET);
    };
    if METHODS.contains(&m) {
        return http::Method::from_bytes(m.as_bytes()).ok();
    }
    let upper = m.to_ascii_uppercase();
    let hint = if METHODS.contains(&upper.as_str()) {
        format!("methods are upper case: `{upper}`")
    } else {
        format!("one of {}", super::list(METHODS.iter().copied()))
    };
    let shown = if m.len() > 16 {
        "(too long to show)"
    } else {
        m
    };
    t.error_hint(
        &span,
        "method",
        format!("invalid http method `{shown}`"),
        hint,
    );
    None
}

/// `url`: a template that is an absolute URL once its placeholders are filled.
fn url(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<Template> {
    let (u, span) = t.required_string("url", URL_HINT)?;
    let key = t.key("url");
    let parsed = template(t, u, &span, &key, ctx)?;
    match Url::parse_config(&parsed.sample()) {
        Ok(_) => Some(parsed),
        Err(message) => {
            t.error_hint(&span, "url", message, URL_HINT);
            None
        }
    }
}

/// `service`: a declared `[services]` entry.
fn service(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<ServiceId> {
    if t.entry("service").is_none() {
        t.missing(
            "service",
            "an http step names the [services] entry it calls (for its breaker, budget and timeout)",
        );
        return None;
    }
    let (name, span) = t.string("service")?;
    let name = reference(
        t,
        name,
        &span,
        &t.key("service"),
        &ctx.refs.services,
        "service",
        "services",
    )?;
    Some(ServiceId::from(name))
}

/// `credential`: a declared `[credentials]` entry, if any. `Some(None)` when absent.
fn credential(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<Option<CredentialId>> {
    if t.entry("credential").is_none() {
        return Some(None);
    }
    let (name, span) = t.string("credential")?;
    let name = reference(
        t,
        name,
        &span,
        &t.key("credential"),
        &ctx.refs.credentials,
        "credential",
        "credentials",
    )?;
    Some(Some(CredentialId::from(name)))
}

/// `headers`: valid names, template values that are valid once filled.
fn headers(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<Vec<(http::HeaderName, Template)>> {
    let Some(e) = t.entry("headers") else {
        return Some(Vec::new());
    };
    let RawKind::Table(h) = &e.value.kind else {
        t.wrong_type(e, "a table", None);
        return None;
    };
    let hp = t.key("headers");
    if h.entries.len() > MAX_HEADERS {
        t.error(
            &e.value.span,
            "headers",
            format!(
                "{} headers, more than the {MAX_HEADERS} allowed",
                h.entries.len()
            ),
        );
        return None;
    }
    let reader = t.reader();
    let mut out = Vec::with_capacity(h.entries.len());
    let mut ok = true;
    for e in &h.entries {
        let key = join(&hp, &e.key);
        let name = http::HeaderName::from_bytes(e.key.as_bytes());
        if name.is_err() {
            reader.error(
                &e.key_span,
                &key,
                format!("invalid header name `{}`", e.key),
            );
            ok = false;
        }
        let RawKind::String(v) = &e.value.kind else {
            reader.report(
                Some(e.value.span.start),
                &key,
                format!("must be a string, not {}", e.value.kind.type_name()),
                None,
            );
            ok = false;
            continue;
        };
        match template(t, v, &e.value.span, &key, ctx) {
            Some(value) if http::HeaderValue::from_str(&value.sample()).is_err() => {
                reader.error_hint(
                    &e.value.span,
                    &key,
                    "invalid header value",
                    "header values are visible ASCII text without line breaks",
                );
                ok = false;
            }
            Some(value) => {
                if let Ok(name) = name {
                    out.push((name, value));
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `body`: a template. `Some(None)` when absent.
fn body(t: &Table<'_>, ctx: &StepCtx<'_>) -> Option<Option<Template>> {
    let Some((b, span)) = t.string("body") else {
        return t.entry("body").is_none().then_some(None);
    };
    template(t, b, &span, &t.key("body"), ctx).map(Some)
}

/// `extract`: output name -> JSON pointer.
fn extract(t: &Table<'_>) -> Option<BTreeMap<String, String>> {
    let Some(e) = t.entry("extract") else {
        return Some(BTreeMap::new());
    };
    let RawKind::Table(x) = &e.value.kind else {
        t.wrong_type(e, "a table", None);
        return None;
    };
    if x.entries.len() > MAX_HEADERS {
        t.error(
            &e.value.span,
            "extract",
            format!(
                "{} outputs, more than the {MAX_HEADERS} allowed",
                x.entries.len()
            ),
        );
        return None;
    }
    let xp = t.key("extract");
    let reader = t.reader();
    let mut out = BTreeMap::new();
    let mut ok = true;
    for e in &x.entries {
        let key = join(&xp, &e.key);
        if let Err((message, hint)) = names::check(&e.key, "output name") {
            reader.error_hint(&e.key_span, &key, message, hint);
            ok = false;
        }
        let RawKind::String(ptr) = &e.value.kind else {
            reader.report(
                Some(e.value.span.start),
                &key,
                format!(
                    "must be a JSON pointer string, not {}",
                    e.value.kind.type_name()
                ),
                None,
            );
            ok = false;
            continue;
        };
        if !ptr.is_empty() && !ptr.starts_with('/') {
            reader.error_hint(
                &e.value.span,
                &key,
                format!("invalid JSON pointer `{ptr}`"),
                format!("a JSON pointer starts with `/`, e.g. \"/{ptr}\" (or is \"\" for the whole response)"),
            );
            ok = false;
            continue;
        }
        out.insert(e.key.clone(), ptr.clone());
    }
    ok.then_some(out)
}
