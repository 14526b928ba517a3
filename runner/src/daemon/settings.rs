//! The daemon's own configuration sections, read with the core's reader in the same
//! pass as the core's sections.
//!
//! `[notify]`, `[http]`, `[logs]` and `[tls]` are declared next to the core's sections
//! and read through the same [`Table`], so their problems come with the same
//! file:line:col, key path and hint, in one list with the core's. Secret URLs go
//! through the core's one secret resolver. [`parse`] also checks what only the daemon
//! can: that `state_dir` is (or can become) a directory.
//!
//! ```toml
//! [notify]
//! dedup_window = "1h"        # the same alert again within this is dropped
//! max_per_hour = 20          # at most this many alerts per hour, all kinds together
//! [[notify.webhooks]]
//! format = "ntfy"            # json | ntfy | slack
//! url = { env = "NTFY_URL" } # or a plain string, or { file = "secrets/ntfy.url" }
//! [notify.pings]             # healthchecks.io-style: <url>/start, <url>, <url>/fail
//! clock = { file = "secrets/hc-clock.url" }
//!
//! [http]
//! listen = "127.0.0.1:9464"  # /healthz and /metrics
//!
//! [logs]
//! file_max_mb = 10           # rotate the log file at this size...
//! files = 5                  # ...keeping this many
//!
//! [tls]                      # what https steps, token endpoints and webhooks trust
//! roots = "system+webpki"    # "system+webpki" (default) | "system" | "webpki"
//! ca_files = ["certs/home-ca.pem"]  # extra PEM CA certificates (a private CA)
//! ```
//!
//! `[tls]`: "system" is the operating system's store, "webpki" the Mozilla roots built
//! into the binary. Unparsable certificates in the system store are skipped; with
//! `roots = "system"` an empty store stops the daemon at start. `ca_files` paths are
//! relative to the config file's directory; each must hold at least one PEM
//! certificate, and `check` reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::env::tls::{CaFile, CaFileError, Roots, TlsSettings};
use steadfast_core::config::raw::{RawEntry, RawKind, RawTable, Span};
use steadfast_core::config::{
    self, Config, Diagnostics, ReadOptions, Reader, SecretResolver, Source, Table, Url,
    did_you_mean, parse_document, read_config,
};

/// The top-level sections the daemon reads itself.
pub const SECTIONS: &[&str] = &["notify", "http", "logs", "tls"];

/// Everything the daemon adds to the core's configuration.
#[derive(Debug, Clone, Default)]
pub struct DaemonSettings {
    /// Alerts and pings.
    pub notify: NotifySettings,
    /// The HTTP endpoint; off unless `[http]` is present.
    pub http: Option<HttpSettings>,
    /// The log file.
    pub logs: LogSettings,
    /// What HTTPS connections trust.
    pub tls: TlsSettings,
}

/// `[notify]`.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Where alerts go (each gets every alert).
    pub webhooks: Vec<Webhook>,
    /// The same alert (kind, job, service) within this window is sent once.
    pub dedup_window: Duration,
    /// At most this many alerts per rolling hour, so a flapping world cannot page
    /// someone a thousand times.
    pub max_per_hour: u32,
    /// Job -> healthchecks-style ping URL.
    pub pings: BTreeMap<String, SecretUrl>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            dedup_window: Duration::from_secs(3600),
            max_per_hour: 20,
            pings: BTreeMap::new(),
        }
    }
}

/// A webhook notifier.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The body shape.
    pub format: WebhookFormat,
    /// Where to POST.
    pub url: SecretUrl,
}

/// The body shape a webhook expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The alert as a JSON object.
    Json,
    /// ntfy: the message as plain text, title and priority in headers.
    Ntfy,
    /// Slack-compatible incoming webhook: `{"text": ...}` (also Mattermost, Discord's
    /// `/slack` endpoint, Rocket.Chat).
    Slack,
}

impl WebhookFormat {
    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ntfy => "ntfy",
            Self::Slack => "slack",
        }
    }
}

/// A URL that is itself a secret (Slack webhooks, ntfy topics and ping URLs grant
/// whoever knows them the right to post): `Debug` shows only scheme and host.
#[derive(Clone)]
pub struct SecretUrl(pub Url);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.0.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}/[redacted]", self.0.authority())
    }
}

/// `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Address to bind; 127.0.0.1 unless the owner says otherwise.
    pub listen: SocketAddr,
}

/// `[logs]`.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    /// Rotate the file when it would pass this size.
    pub file_max_bytes: u64,
    /// Files kept, the current one included.
    pub files: u32,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            file_max_bytes: 10 * 1024 * 1024,
            files: 5,
        }
    }
}

/// The default endpoint address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// At most this many webhooks.
const MAX_WEBHOOKS: usize = 100;
/// At most this many CA files.
const MAX_CA_FILES: usize = 100;

/// Reads a whole configuration file: the core's sections and the daemon's, in one
/// pass with one list of problems.
///
/// # Errors
///
/// Every problem in the file, in file order.
pub fn parse(
    source: &Source,
    secrets: &dyn SecretResolver,
) -> Result<(Config, DaemonSettings), Diagnostics> {
    let doc = parse_document(source)?;
    let reader = Reader::new(source, secrets);
    let keys = [config::SECTIONS, SECTIONS].concat();
    let top = reader.table(&doc, "", &keys);
    top.finish();
    let config = read_config(&top, ReadOptions::default());
    let daemon = read(&top, config.as_ref());
    if let Some(config) = &config {
        check_state_dir(&top, config);
    }
    reader.finish(config.zip(daemon))
}

/// Reads the daemon's sections from the top-level table. `config` is `None` when the
/// core's sections had problems (the pings' job names are then not checked).
pub fn read(top: &Table<'_>, config: Option<&Config>) -> Option<DaemonSettings> {
    let before = top.reader().error_count();
    let jobs: Option<BTreeSet<&str>> =
        config.map(|c| c.jobs.iter().map(|j| j.name.as_str()).collect());
    let out = DaemonSettings {
        notify: top
            .table("notify", NOTIFY_KEYS)
            .map(|t| notify(&t, jobs.as_ref()))
            .unwrap_or_default(),
        http: match top.table("http", &["listen"]) {
            Some(t) => http(&t),
            None => None,
        },
        logs: top
            .table("logs", &["file_max_mb", "files"])
            .map(|t| logs(&t))
            .unwrap_or_default(),
        tls: top
            .table("tls", &["roots", "ca_files"])
            .map(|t| tls(&t))
            .unwrap_or_default(),
    };
    (top.reader().error_count() == before).then_some(out)
}

/// `state_dir` must be a directory or creatable as one: a path through a file passed
/// `check` and failed only when the daemon started.
fn check_state_dir(top: &Table<'_>, config: &Config) {
    let dir = &config.runner.state_dir;
    let Some(blocker) = dir.ancestors().find(|p| p.exists()) else {
        return;
    };
    if blocker.is_dir() {
        return;
    }
    let span = top.raw().get("runner").and_then(|r| match &r.value.kind {
        RawKind::Table(t) => t.get("state_dir").map(|e| e.value.span.clone()),
        _ => None,
    });
    let message = if blocker == dir {
        format!("state directory `{}` is a file", dir.display())
    } else {
        format!(
            "state directory `{}` cannot be created: `{}` is a file",
            dir.display(),
            blocker.display()
        )
    };
    top.reader().report(
        span.map(|s| s.start),
        "runner.state_dir",
        message,
        Some("point state_dir at a directory (it is created when missing); relative paths start at the config file's directory".to_string()),
    );
}

const NOTIFY_KEYS: &[&str] = &["webhooks", "dedup_window", "max_per_hour", "pings"];

fn notify(t: &Table<'_>, jobs: Option<&BTreeSet<&str>>) -> NotifySettings {
    let mut out = NotifySettings::default();
    t.finish();
    if let Some((d, _)) = t.positive_duration("dedup_window") {
        out.dedup_window = d;
    }
    if let Some(n) = t.u32_in("max_per_hour", 1, 10_000) {
        out.max_per_hour = n;
    }
    if let Some((_, hooks)) = t.array_of_tables(
        "webhooks",
        MAX_WEBHOOKS,
        &["format", "url"],
        "write each as [[notify.webhooks]]",
    ) {
        for w in hooks.iter().flatten() {
            w.finish();
            let format = match w.entry("format") {
                None => Some(WebhookFormat::Json),
                Some(_) => match w.choice("format", &["json", "ntfy", "slack"]) {
                    Some("ntfy") => Some(WebhookFormat::Ntfy),
                    Some("slack") => Some(WebhookFormat::Slack),
                    Some(_) => Some(WebhookFormat::Json),
                    None => None,
                },
            };
            if w.entry("url").is_none() {
                w.missing("url", "the webhook's URL, e.g. { env = \"NTFY_URL\" }");
            }
            let url = secret_url(w, "url");
            if let (Some(format), Some(url)) = (format, url) {
                out.webhooks.push(Webhook { format, url });
            }
        }
    }
    if let Some(e) = t.entry("pings") {
        let RawKind::Table(pings) = &e.value.kind else {
            t.wrong_type(
                e,
                "a table",
                Some("write it as [notify.pings] with job = url"),
            );
            return out;
        };
        let keys: Vec<&'static str> = Vec::new();
        let reader = t.reader();
        for p in &pings.entries {
            let key = format!("notify.pings.{}", p.key);
            if let Some(jobs) = jobs
                && !jobs.contains(p.key.as_str())
            {
                reader.error_hint(
                    &p.key_span,
                    &key,
                    format!("no job named `{}`", p.key),
                    format!(
                        "{}ping keys are job names",
                        did_you_mean(&p.key, jobs.iter().copied())
                    ),
                );
                continue;
            }
            // One entry read as a one-key table so the secret reader sees it.
            let one = RawTable {
                span: p.key_span.clone(),
                entries: vec![p.clone()],
            };
            let table = reader.table(&one, "notify.pings", &keys);
            if let Some(u) = secret_url_entry(&table, p) {
                out.pings.insert(p.key.clone(), u);
            }
        }
    }
    out
}

/// A URL that is itself a secret: a string, `{ env = "NAME" }` or `{ file = "PATH" }`.
fn secret_url(t: &Table<'_>, key: &'static str) -> Option<SecretUrl> {
    let e = t.entry(key)?;
    secret_url_entry(t, e)
}

fn secret_url_entry(t: &Table<'_>, e: &RawEntry) -> Option<SecretUrl> {
    let secret = t.secret_of(e)?;
    // Never quote the value: the URL is the secret.
    match Url::parse(secret.expose_secret().trim()) {
        Ok(u) => Some(SecretUrl(u)),
        Err(message) => {
            t.reader().error_hint(
                &e.value.span,
                &t.key(&e.key),
                message,
                "an absolute http(s) url",
            );
            None
        }
    }
}

fn http(t: &Table<'_>) -> Option<HttpSettings> {
    t.finish();
    let (text, span) = match t.string("listen") {
        Some(x) => x,
        None if t.entry("listen").is_some() => return None,
        None => (DEFAULT_LISTEN, t.span().clone()),
    };
    match text.parse::<SocketAddr>() {
        Ok(listen) => Some(HttpSettings { listen }),
        Err(e) => {
            t.error_hint(
                &span,
                "listen",
                format!("invalid address: {e}"),
                "e.g. \"127.0.0.1:9464\"; bind beyond localhost only behind a firewall",
            );
            None
        }
    }
}

fn logs(t: &Table<'_>) -> LogSettings {
    let mut out = LogSettings::default();
    t.finish();
    if let Some(n) = t.u32_in("file_max_mb", 1, 1024) {
        out.file_max_bytes = u64::from(n) * 1024 * 1024;
    }
    if let Some(n) = t.u32_in("files", 1, 100) {
        out.files = n;
    }
    out
}

fn tls(t: &Table<'_>) -> TlsSettings {
    let mut out = TlsSettings::default();
    t.finish();
    if let Some(name) = t.choice("roots", &Roots::NAMES)
        && let Some(roots) = Roots::parse(name)
    {
        out.roots = roots;
    }
    let hint = "e.g. ca_files = [\"certs/home-ca.pem\"]";
    for (i, item) in t
        .string_items("ca_files", MAX_CA_FILES, hint)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if let Some((rel, span)) = item
            && let Some(file) = ca_file(t, rel, &span, &format!("ca_files[{i}]"))
        {
            out.ca_files.push(file);
        }
    }
    out
}

fn ca_file(t: &Table<'_>, rel: &str, span: &Span, key: &str) -> Option<CaFile> {
    match CaFile::read(&t.reader().resolve(rel)) {
        Ok(file) => Some(file),
        Err(e) => {
            let hint = match e {
                CaFileError::Read { .. } => "paths are relative to the config file's directory",
                CaFileError::Pem { .. } | CaFileError::NoCertificate { .. } => {
                    "a PEM file with -----BEGIN CERTIFICATE----- sections"
                }
                CaFileError::Invalid { .. } => {
                    "each CERTIFICATE section must be an x.509 certificate"
                }
            };
            t.error_hint(span, key, e.to_string(), hint);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::secrets::OsSecrets;

    const BASE: &str = "[[jobs]]\nname = \"a\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n";

    fn parse_text(extra: &str) -> Result<DaemonSettings, String> {
        parse_at(Path::new("/tmp/steadfast-test/runner.toml"), extra)
    }

    #[test]
    fn absent_sections_give_defaults() {
        let s = parse_text("").unwrap();
        assert!(s.notify.webhooks.is_empty() && s.http.is_none());
        assert_eq!(s.logs.files, 5);
    }

    #[test]
    fn full_sections_parse() {
        let s = parse_text(
            "[notify]\ndedup_window = \"10m\"\nmax_per_hour = 3\n[[notify.webhooks]]\nformat = \"slack\"\nurl = \"https://hooks.example.com/T/B/secretpart\"\n[notify.pings]\na = \"https://hc-ping.com/uuid\"\n[http]\nlisten = \"127.0.0.1:0\"\n[logs]\nfile_max_mb = 1\nfiles = 2\n",
        )
        .unwrap();
        assert_eq!(s.notify.webhooks[0].format, WebhookFormat::Slack);
        assert_eq!(s.notify.max_per_hour, 3);
        assert_eq!(s.notify.dedup_window, Duration::from_secs(600));
        assert!(s.notify.pings.contains_key("a"));
        assert_eq!(s.logs.file_max_bytes, 1024 * 1024);
        assert!(s.http.is_some());
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("secretpart") && !debug.contains("uuid"),
            "{debug}"
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_line() {
        let err = parse_text(
            "[notify]\nbogus = 1\n[[notify.webhooks]]\nformat = \"pager\"\nurl = \"ftp://x/\"\n[notify.pings]\nnope = \"https://x/\"\n[http]\nlisten = \"localhost\"\n",
        )
        .unwrap_err();
        for needle in [
            "notify.bogus",
            "notify.webhooks[0].format",
            "notify.webhooks[0].url",
            "notify.pings.nope",
            "http.listen",
        ] {
            assert!(err.contains(needle), "missing {needle} in:\n{err}");
        }
        assert!(
            err.contains("runner.toml:9:1: `notify.bogus`: unknown key `bogus`"),
            "the key's own line and column expected:\n{err}"
        );
    }

    /// A scratch directory holding `runner.toml`'s neighbours; returns the config path.
    fn config_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("steadfast-settings-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        dir.join("runner.toml")
    }

    fn parse_at(file: &Path, extra: &str) -> Result<DaemonSettings, String> {
        let text = format!("{BASE}{extra}");
        let source = Source::new(file, text).map_err(|d| d.to_string())?;
        parse(&source, &OsSecrets)
            .map(|(_, daemon)| daemon)
            .map_err(|d| d.to_string())
    }

    fn write_ca(path: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(path, params.self_signed(&key).unwrap().pem()).unwrap();
    }

    #[test]
    fn tls_defaults_to_system_and_webpki() {
        let s = parse_text("").unwrap();
        assert_eq!(s.tls.roots, Roots::SystemAndWebpki);
        assert!(s.tls.ca_files.is_empty());
    }

    #[test]
    fn tls_section_parses_with_ca_files_relative_to_the_config() {
        let file = config_dir("tls-ok");
        let dir = file.parent().unwrap();
        write_ca(&dir.join("certs/home-ca.pem"));
        let s = parse_at(
            &file,
            "[tls]\nroots = \"system\"\nca_files = [\"certs/home-ca.pem\"]\n",
        )
        .unwrap();
        assert_eq!(s.tls.roots, Roots::System);
        assert_eq!(s.tls.ca_files.len(), 1);
        assert_eq!(s.tls.ca_files[0].path, dir.join("certs/home-ca.pem"));
        assert_eq!(s.tls.ca_files[0].len(), 1);
    }

    #[test]
    fn tls_bad_roots_value_lists_the_valid_ones() {
        let err = parse_text("[tls]\nroots = \"mozilla\"\n").unwrap_err();
        assert!(
            err.contains(
                "/tmp/steadfast-test/runner.toml:9:9: `tls.roots`: unknown value `mozilla`"
            ),
            "{err}"
        );
        assert!(
            err.contains("(hint: one of `system+webpki`, `system`, `webpki`)"),
            "{err}"
        );
    }

    #[test]
    fn tls_unreadable_ca_file_names_the_path() {
        let file = config_dir("tls-missing");
        let missing = file.parent().unwrap().join("certs/missing.pem");
        let err = parse_at(&file, "[tls]\nca_files = [\"certs/missing.pem\"]\n").unwrap_err();
        let expected = format!(
            "{}:9:13: `tls.ca_files[0]`: failed to read {}:",
            file.display(),
            missing.display()
        );
        assert!(err.contains(&expected), "{err}");
        assert!(
            err.contains("(hint: paths are relative to the config file's directory)"),
            "{err}"
        );
    }

    #[test]
    fn tls_ca_file_without_a_certificate_names_the_path() {
        let file = config_dir("tls-empty");
        let empty = file.parent().unwrap().join("certs/notes.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = parse_at(&file, "[tls]\nca_files = [\"certs/notes.pem\"]\n").unwrap_err();
        let expected = format!(
            "{}:9:13: `tls.ca_files[0]`: {} contains no certificate (hint: a PEM file with -----BEGIN CERTIFICATE----- sections)",
            file.display(),
            empty.display()
        );
        assert!(err.contains(&expected), "{err}");
    }

    #[test]
    fn tls_unknown_key_is_rejected() {
        let err = parse_text("[tls]\nverify = false\n").unwrap_err();
        assert!(
            err.contains(
                "runner.toml:9:1: `tls.verify`: unknown key `verify` (hint: valid keys here: `roots`, `ca_files`)"
            ),
            "{err}"
        );
    }

    #[test]
    fn tls_reports_every_problem_at_once() {
        let file = config_dir("tls-all");
        let err = parse_at(
            &file,
            "[logs]\nfiles = 0\n[tls]\nroots = 1\nca_files = [\"certs/a.pem\", 7]\nextra = true\n",
        )
        .unwrap_err();
        for needle in [
            "`logs.files`",
            "`tls.roots`: must be a string, not an integer",
            "`tls.ca_files[0]`: failed to read",
            "`tls.ca_files[1]`: must be a string, not an integer",
            "`tls.extra`: unknown key",
        ] {
            assert!(err.contains(needle), "missing {needle} in:\n{err}");
        }
    }
}
