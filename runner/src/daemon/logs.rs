//! Logs: JSON lines to stdout and to a size-bounded rotating file in the state
//! directory, with known secret values redacted on the way out.
//!
//! The core's events never carry secrets; redaction is the second line of defence for
//! what the daemon does not control (a library's error text quoting a header, say).
//! The file is bounded (`files` x `file_max_bytes`) so weeks of logs never fill the
//! Mac Mini's disk; rotation happens only between lines.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// The log file's name under the state directory; older files get `.1`, `.2`, ...
pub const LOG_FILE: &str = "runner.log";

/// A size-bounded set of log files: `runner.log`, `runner.log.1`, ... `runner.log.{files-1}`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    files: u32,
    state: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Logs to `dir/runner.log`, rotating when a line would pass `max_bytes`, keeping
    /// `files` files in all (at least 1).
    pub fn new(dir: &Path, max_bytes: u64, files: u32) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let me = Self {
            path: dir.join(LOG_FILE),
            max_bytes: max_bytes.max(1),
            files: files.max(1),
            state: Mutex::new(None),
        };
        let open = me.open()?;
        *me.lock() = Some(open);
        Ok(me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> io::Result<Open> {
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&self.path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Open { file, written })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self) -> io::Result<()> {
        if self.files == 1 {
            return std::fs::remove_file(&self.path).or_else(ignore_missing);
        }
        std::fs::remove_file(self.numbered(self.files - 1)).or_else(ignore_missing)?;
        for n in (1..self.files - 1).rev() {
            std::fs::rename(self.numbered(n), self.numbered(n + 1)).or_else(ignore_missing)?;
        }
        std::fs::rename(&self.path, self.numbered(1)).or_else(ignore_missing)
    }

    /// Writes one line (or any chunk) whole, rotating first if it would not fit.
    pub fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let needs_rotation = match state.as_ref() {
            Some(open) => open.written > 0 && open.written + buf.len() as u64 > self.max_bytes,
            None => true,
        };
        if needs_rotation {
            *state = None;
            self.rotate()?;
            *state = Some(self.open()?);
        }
        if let Some(open) = state.as_mut() {
            // A line longer than a whole file is cut, so the bound holds.
            let take = buf.len().min(self.max_bytes as usize);
            open.file.write_all(&buf[..take])?;
            open.written += take as u64;
        }
        Ok(())
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Replaces known secret values, and anything after `Bearer `, with `[redacted]`.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// Values shorter than this are not redacted (they would mangle ordinary words).
const MIN_SECRET_LEN: usize = 6;

impl Redactor {
    /// Redacts these values (short ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    /// The secret values of a configuration: client secrets and refresh tokens.
    pub fn from_config(config: &steadfast_core::config::Config) -> Self {
        use secrecy::ExposeSecret;
        let mut values = Vec::new();
        for cred in config.credentials.values() {
            values.push(cred.refresh_token.expose_secret().to_string());
            if let Some(s) = &cred.client_secret {
                values.push(s.expose_secret().to_string());
            }
        }
        Self::new(values)
    }

    /// `line` with every secret replaced.
    pub fn redact<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        let needs = self.secrets.iter().any(|s| line.contains(s.as_str()))
            || line.contains("Bearer ")
            || line.contains("bearer ");
        if !needs {
            return std::borrow::Cow::Borrowed(line);
        }
        let mut out = line.to_string();
        for s in self.secrets.iter() {
            out = out.replace(s.as_str(), "[redacted]");
        }
        for marker in ["Bearer ", "bearer "] {
            let mut from = 0;
            while let Some(i) = out[from..].find(marker) {
                let start = from + i + marker.len();
                let end = out[start..]
                    .find(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == ',')
                    .map_or(out.len(), |e| start + e);
                out.replace_range(start..end, "[redacted]");
                from = start + "[redacted]".len();
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// The `tracing` writer: each formatted line goes, redacted, to stdout (optional)
/// and to the rotating file (optional).
#[derive(Debug, Clone)]
pub struct LogWriter {
    file: Option<Arc<RotatingFile>>,
    stdout: bool,
    redactor: Redactor,
}

impl LogWriter {
    /// A writer to stdout and/or a rotating file.
    pub fn new(file: Option<Arc<RotatingFile>>, stdout: bool, redactor: Redactor) -> Self {
        Self {
            file,
            stdout,
            redactor,
        }
    }
}

/// One event's worth of output, flushed whole when dropped.
#[derive(Debug)]
pub struct LineWriter {
    sink: LogWriter,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let line = self.sink.redactor.redact(&text);
        if self.sink.stdout {
            let mut out = io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        if let Some(file) = &self.sink.file {
            let _ = file.write_line(line.as_bytes());
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            sink: self.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("steadfast-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn rotation_keeps_n_files_of_at_most_m_bytes() {
        let dir = temp("rotate");
        let f = RotatingFile::new(&dir, 100, 3).unwrap();
        for i in 0..100 {
            f.write_line(format!("line {i:04} padding padding\n").as_bytes())
                .unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["runner.log", "runner.log.1", "runner.log.2"]);
        for n in &names {
            let text = std::fs::read_to_string(dir.join(n)).unwrap();
            assert!(text.len() <= 100, "{n} has {} bytes", text.len());
            assert!(text.ends_with('\n'), "{n} ends mid-line");
        }
        let newest = std::fs::read_to_string(dir.join("runner.log")).unwrap();
        assert!(newest.contains("line 0099"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unbounded_log_would_grow_past_the_bound() {
        // The naive habit, appending forever, against the same input.
        let dir = temp("naive");
        std::fs::create_dir_all(&dir).unwrap();
        let mut naive = File::create(dir.join("naive.log")).unwrap();
        let f = RotatingFile::new(&dir, 1000, 2).unwrap();
        for i in 0..500 {
            let line = format!("line {i:04} padding padding\n");
            naive.write_all(line.as_bytes()).unwrap();
            f.write_line(line.as_bytes()).unwrap();
        }
        let naive_len = std::fs::metadata(dir.join("naive.log")).unwrap().len();
        let ours: u64 = ["runner.log", "runner.log.1"]
            .iter()
            .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
            .sum();
        assert!(naive_len > 2000 && ours <= 2000, "{naive_len} vs {ours}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_and_bearer_tokens_are_redacted() {
        let r = Redactor::new(["s3cr3t-refresh".to_string(), "abc".to_string()]);
        let line =
            r#"{"detail":"sent s3cr3t-refresh with Authorization: Bearer eyJhbGc.x.y, abc"}"#;
        let out = r.redact(line);
        assert!(
            !out.contains("s3cr3t-refresh") && !out.contains("eyJhbGc"),
            "{out}"
        );
        assert!(out.contains("abc"), "short values stay: {out}");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
