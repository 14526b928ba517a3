//! The daemon's own configuration sections, kept in the same file as the core's.
//!
//! The core's parser rejects unknown keys, so the daemon asks it to hand back
//! `[notify]`, `[http]`, `[logs]` and `[tls]` raw ([`steadfast_core::config::parse_config_value`])
//! and validates them here, with the same diagnostics: every problem at once, each with
//! file, line (of the section), key path and hint.
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::tls::{CaFile, CaFileError, Roots, TlsSettings};
use steadfast_core::config::{Config, Diagnostic, Diagnostics, SecretResolver, Url, duration};

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

/// Validates the raw daemon sections returned by the core parser.
pub fn parse(
    rest: &toml::Table,
    config: &Config,
    text: &str,
    file: &Path,
    secrets: &dyn SecretResolver,
) -> Result<DaemonSettings, Diagnostics> {
    let mut v = V {
        text,
        file,
        dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        secrets,
        diags: Diagnostics::default(),
    };
    let mut out = DaemonSettings::default();
    if let Some(value) = rest.get("notify") {
        out.notify = v.notify(value, config);
    }
    if let Some(value) = rest.get("http") {
        out.http = v.http(value);
    }
    if let Some(value) = rest.get("logs") {
        out.logs = v.logs(value);
    }
    if let Some(value) = rest.get("tls") {
        out.tls = v.tls(value);
    }
    if v.diags.is_empty() {
        Ok(out)
    } else {
        Err(v.diags)
    }
}

struct V<'a> {
    text: &'a str,
    file: &'a Path,
    dir: PathBuf,
    secrets: &'a dyn SecretResolver,
    diags: Diagnostics,
}

impl V<'_> {
    fn report(&mut self, key: &str, message: impl Into<String>, hint: Option<&str>) {
        let section = key.split(['.', '[']).next().unwrap_or(key);
        let offset = find_section(self.text, section);
        let mut d = Diagnostic::at_offset(self.file, self.text, offset, key, message);
        if let Some(h) = hint {
            d = d.hint(h);
        }
        self.diags.push(d);
    }

    fn table<'t>(&mut self, value: &'t toml::Value, key: &str) -> Option<&'t toml::Table> {
        match value.as_table() {
            Some(t) => Some(t),
            None => {
                self.report(key, "expected a table", None);
                None
            }
        }
    }

    fn unknown(&mut self, table: &toml::Table, key: &str, known: &[&str]) {
        for k in table.keys() {
            if !known.contains(&k.as_str()) {
                let hint = format!("known keys: {}", known.join(", "));
                self.report(
                    &format!("{key}.{k}"),
                    format!("unknown key `{k}`"),
                    Some(&hint),
                );
            }
        }
    }

    fn duration(&mut self, value: &toml::Value, key: &str) -> Option<Duration> {
        match value.as_str().map(duration::parse) {
            Some(Ok(d)) if !d.is_zero() => Some(d),
            Some(Ok(_)) => {
                self.report(key, "must be longer than zero", None);
                None
            }
            Some(Err(e)) => {
                self.report(key, e, Some("write durations like \"90s\" or \"1h\""));
                None
            }
            None => {
                self.report(key, "expected a duration string", Some("e.g. \"1h\""));
                None
            }
        }
    }

    fn positive(&mut self, value: &toml::Value, key: &str, max: i64) -> Option<i64> {
        match value.as_integer() {
            Some(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                self.report(
                    key,
                    format!("expected a whole number from 1 to {max}"),
                    None,
                );
                None
            }
        }
    }

    /// A URL given inline or as `{ env = "NAME" }` / `{ file = "PATH" }`.
    fn secret_url(&mut self, value: &toml::Value, key: &str) -> Option<SecretUrl> {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Table(t) if t.len() == 1 && t.contains_key("env") => {
                let name = t.get("env").and_then(toml::Value::as_str).unwrap_or("");
                match self.secrets.env(name) {
                    Some(v) => v.trim().to_string(),
                    None => {
                        self.report(
                            key,
                            format!("environment variable `{name}` is not set"),
                            Some("set it in the environment the daemon starts in"),
                        );
                        return None;
                    }
                }
            }
            toml::Value::Table(t) if t.len() == 1 && t.contains_key("file") => {
                let rel = t.get("file").and_then(toml::Value::as_str).unwrap_or("");
                let path = self.dir.join(rel);
                match self.secrets.file(&path) {
                    Ok(v) => v.trim().to_string(),
                    Err(e) => {
                        self.report(
                            key,
                            format!("failed to read {}: {e}", path.display()),
                            Some("paths are relative to the config file's directory"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.report(
                    key,
                    "expected a url string, { env = \"NAME\" } or { file = \"PATH\" }",
                    None,
                );
                return None;
            }
        };
        // Never quote the value: the URL is the secret.
        match Url::parse(&text) {
            Ok(u) => Some(SecretUrl(u)),
            Err(e) => {
                self.report(key, e, Some("an absolute http(s) url"));
                None
            }
        }
    }

    fn notify(&mut self, value: &toml::Value, config: &Config) -> NotifySettings {
        let mut out = NotifySettings::default();
        let Some(t) = self.table(value, "notify") else {
            return out;
        };
        self.unknown(
            t,
            "notify",
            &["webhooks", "dedup_window", "max_per_hour", "pings"],
        );
        if let Some(v) = t.get("dedup_window")
            && let Some(d) = self.duration(v, "notify.dedup_window")
        {
            out.dedup_window = d;
        }
        if let Some(v) = t.get("max_per_hour")
            && let Some(n) = self.positive(v, "notify.max_per_hour", 10_000)
        {
            out.max_per_hour = n as u32;
        }
        match t.get("webhooks") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let key = format!("notify.webhooks[{i}]");
                    let Some(w) = self.table(item, &key) else {
                        continue;
                    };
                    self.unknown(w, &key, &["format", "url"]);
                    let format = match w.get("format").and_then(toml::Value::as_str) {
                        None | Some("json") => Some(WebhookFormat::Json),
                        Some("ntfy") => Some(WebhookFormat::Ntfy),
                        Some("slack") => Some(WebhookFormat::Slack),
                        Some(other) => {
                            self.report(
                                &format!("{key}.format"),
                                format!("unknown format `{other}`"),
                                Some("json, ntfy or slack"),
                            );
                            None
                        }
                    };
                    let url = match w.get("url") {
                        Some(u) => self.secret_url(u, &format!("{key}.url")),
                        None => {
                            self.report(&format!("{key}.url"), "missing url", None);
                            None
                        }
                    };
                    if let (Some(format), Some(url)) = (format, url) {
                        out.webhooks.push(Webhook { format, url });
                    }
                }
            }
            Some(_) => self.report(
                "notify.webhooks",
                "expected an array of tables",
                Some("write each as [[notify.webhooks]]"),
            ),
        }
        if let Some(v) = t.get("pings")
            && let Some(p) = self.table(v, "notify.pings")
        {
            for (job, url) in p {
                let key = format!("notify.pings.{job}");
                if !config.jobs.iter().any(|j| &j.name == job) {
                    self.report(
                        &key,
                        format!("no job named `{job}`"),
                        Some("ping keys are job names"),
                    );
                    continue;
                }
                if let Some(u) = self.secret_url(url, &key) {
                    out.pings.insert(job.clone(), u);
                }
            }
        }
        out
    }

    fn http(&mut self, value: &toml::Value) -> Option<HttpSettings> {
        let t = self.table(value, "http")?;
        self.unknown(t, "http", &["listen"]);
        let text = match t.get("listen") {
            None => DEFAULT_LISTEN,
            Some(v) => match v.as_str() {
                Some(s) => s,
                None => {
                    self.report("http.listen", "expected \"host:port\"", None);
                    return None;
                }
            },
        };
        match text.parse::<SocketAddr>() {
            Ok(listen) => Some(HttpSettings { listen }),
            Err(e) => {
                self.report(
                    "http.listen",
                    format!("invalid address: {e}"),
                    Some("e.g. \"127.0.0.1:9464\"; bind beyond localhost only behind a firewall"),
                );
                None
            }
        }
    }

    fn logs(&mut self, value: &toml::Value) -> LogSettings {
        let mut out = LogSettings::default();
        let Some(t) = self.table(value, "logs") else {
            return out;
        };
        self.unknown(t, "logs", &["file_max_mb", "files"]);
        if let Some(v) = t.get("file_max_mb")
            && let Some(n) = self.positive(v, "logs.file_max_mb", 1024)
        {
            out.file_max_bytes = n as u64 * 1024 * 1024;
        }
        if let Some(v) = t.get("files")
            && let Some(n) = self.positive(v, "logs.files", 100)
        {
            out.files = n as u32;
        }
        out
    }

    fn tls(&mut self, value: &toml::Value) -> TlsSettings {
        let mut out = TlsSettings::default();
        let Some(t) = self.table(value, "tls") else {
            return out;
        };
        self.unknown(t, "tls", &["roots", "ca_files"]);
        if let Some(v) = t.get("roots") {
            let hint = format!("one of \"{}\"", Roots::NAMES.join("\", \""));
            match v.as_str() {
                Some(name) => match Roots::parse(name) {
                    Some(roots) => out.roots = roots,
                    None => {
                        self.report("tls.roots", format!("unknown roots `{name}`"), Some(&hint))
                    }
                },
                None => self.report("tls.roots", "expected a string", Some(&hint)),
            }
        }
        match t.get("ca_files") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(file) = self.ca_file(item, &format!("tls.ca_files[{i}]")) {
                        out.ca_files.push(file);
                    }
                }
            }
            Some(_) => self.report(
                "tls.ca_files",
                "expected an array of file paths",
                Some("e.g. ca_files = [\"certs/home-ca.pem\"]"),
            ),
        }
        out
    }

    fn ca_file(&mut self, value: &toml::Value, key: &str) -> Option<CaFile> {
        let Some(rel) = value.as_str() else {
            self.report(key, "expected a file path", None);
            return None;
        };
        match CaFile::read(&self.dir.join(rel)) {
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
                self.report(key, e.to_string(), Some(hint));
                None
            }
        }
    }
}

/// The byte offset of `[section` (or `[[section`) in the text, for a line number.
fn find_section(text: &str, section: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start().trim_start_matches('[');
        if line.trim_start().starts_with('[')
            && t.starts_with(section)
            && t[section.len()..].starts_with([']', '.'])
        {
            return Some(offset + (line.len() - line.trim_start().len()));
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::OsSecrets;
    use steadfast_core::config::parse_config_value;

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
        assert!(err.contains(":9"), "line of [notify] expected:\n{err}");
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
        let (config, rest) =
            parse_config_value(&text, file, SECTIONS, &OsSecrets).map_err(|d| d.to_string())?;
        parse(&rest, &config, &text, file, &OsSecrets).map_err(|d| d.to_string())
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
                "/tmp/steadfast-test/runner.toml:8:1: `tls.roots`: unknown roots `mozilla`"
            ),
            "{err}"
        );
        assert!(
            err.contains("(hint: one of \"system+webpki\", \"system\", \"webpki\")"),
            "{err}"
        );
    }

    #[test]
    fn tls_unreadable_ca_file_names_the_path() {
        let file = config_dir("tls-missing");
        let missing = file.parent().unwrap().join("certs/missing.pem");
        let err = parse_at(&file, "[tls]\nca_files = [\"certs/missing.pem\"]\n").unwrap_err();
        let expected = format!(
            "{}:8:1: `tls.ca_files[0]`: failed to read {}:",
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
            "{}:8:1: `tls.ca_files[0]`: {} contains no certificate (hint: a PEM file with -----BEGIN CERTIFICATE----- sections)",
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
                "runner.toml:8:1: `tls.verify`: unknown key `verify` (hint: known keys: roots, ca_files)"
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
            "`tls.roots`: expected a string",
            "`tls.ca_files[0]`: failed to read",
            "`tls.ca_files[1]`: expected a file path",
            "`tls.extra`: unknown key",
        ] {
            assert!(err.contains(needle), "missing {needle} in:\n{err}");
        }
    }
}
