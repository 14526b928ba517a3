//! The production environment: the OS clock, TCP (and TLS), the real disk, this
//! process's memory, real processes, and `tracing` logs.

use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use super::process::ProcessSpawner;
use super::tls::{self, RootCounts, TlsError, TlsSettings};
use steadfast_core::env::{
    Connector, Database, Env, FileSystem, MemoryProbe, NetError, NetErrorKind, SeededRng, Target,
    WallClock,
};
use steadfast_core::event::TracingSink;

/// The production environment.
#[derive(Debug, Clone)]
pub struct TokioEnv {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rng: SeededRng,
    connector: TcpConnector,
}

impl TokioEnv {
    /// An environment seeded from the OS, trusting the system and webpki roots.
    pub fn new() -> Self {
        Self::with_seed(SeededRng::from_os())
    }

    /// An environment with a fixed RNG (reproducible jitter, e.g. in tests).
    pub fn with_seed(rng: SeededRng) -> Self {
        Self::with_connector(rng, TcpConnector::new())
    }

    /// An environment with this RNG and connector (say, one built from `[tls]`).
    pub fn with_connector(rng: SeededRng, connector: TcpConnector) -> Self {
        Self {
            inner: Arc::new(Inner { rng, connector }),
        }
    }
}

impl Default for TokioEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Env for TokioEnv {
    type Clock = SystemClock;
    type Connector = TcpConnector;
    type Fs = DiskFs;
    type Memory = ProcessMemory;
    type Spawner = ProcessSpawner;
    type Events = TracingSink;
    type Db = FileDb;

    fn clock(&self) -> &SystemClock {
        &SystemClock
    }
    fn rng(&self) -> &SeededRng {
        &self.inner.rng
    }
    fn connector(&self) -> &TcpConnector {
        &self.inner.connector
    }
    fn fs(&self) -> &DiskFs {
        &DiskFs
    }
    fn memory(&self) -> &ProcessMemory {
        &ProcessMemory
    }
    fn spawner(&self) -> &ProcessSpawner {
        &ProcessSpawner
    }
    fn events(&self) -> &TracingSink {
        &TracingSink
    }
    fn db(&self) -> &FileDb {
        &FileDb
    }
}

/// The store's file: `state_dir/state.db`, SQLite in WAL mode with `synchronous = FULL`
/// (a committed transaction survives a power cut), owner-only permissions.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileDb;

/// The store's file name inside the state directory.
pub const DB_FILE: &str = "state.db";

impl FileDb {
    /// Opens the store of `state_dir` for reading only (`runner status` beside a daemon).
    pub fn open_read_only(state_dir: &Path) -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            state_dir.join(DB_FILE),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }
}

impl Database for FileDb {
    fn open(&self, state_dir: &Path) -> rusqlite::Result<rusqlite::Connection> {
        let path = state_dir.join(DB_FILE);
        let cannot = |e: io::Error| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("{}: {e}", path.display())),
            )
        };
        std::fs::create_dir_all(state_dir).map_err(cannot)?;
        // Created owner-only before SQLite opens it: the store holds refresh tokens.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(cannot)?;
        let conn = rusqlite::Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A damaged page would otherwise surface mid-run, in whichever query reads it
        // first; checked once here, the runner refuses to start instead (bounded: a
        // handful of findings is enough to say it is corrupt).
        let verdict: String = conn.query_row("PRAGMA quick_check(5)", [], |r| r.get(0))?;
        if verdict != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("{} is corrupt: {verdict}", path.display())),
            ));
        }
        Ok(conn)
    }

    async fn commit<T: Send>(
        &self,
        _label: &'static str,
        commit: impl FnOnce() -> rusqlite::Result<T> + Send,
    ) -> rusqlite::Result<T> {
        commit()
    }
}

/// The OS wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// TCP with optional TLS (rustls; system, webpki and configured CA roots).
#[derive(Clone)]
pub struct TcpConnector {
    tls: tokio_rustls::TlsConnector,
    roots: RootCounts,
}

impl std::fmt::Debug for TcpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnector")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl TcpConnector {
    /// A connector trusting the system and webpki roots (the `[tls]` defaults); an
    /// empty or unreadable system store leaves the webpki roots.
    pub fn new() -> Self {
        let (roots, counts) = tls::root_store(&TlsSettings::default(), tls::load_system)
            .unwrap_or_else(|_| unreachable!("only roots = \"system\" can fail"));
        Self::from_roots(roots, counts)
    }

    /// A connector trusting what `settings` says. Fails when `roots = "system"` and
    /// the system store has no usable certificate.
    pub fn with_settings(settings: &TlsSettings) -> Result<Self, TlsError> {
        let (roots, counts) = tls::root_store(settings, tls::load_system)?;
        tracing::info!(
            target: "steadfast",
            roots = settings.roots.as_str(),
            system = counts.system,
            system_skipped = counts.system_skipped,
            system_errors = counts.system_errors,
            webpki = counts.webpki,
            ca_files = counts.ca_files,
            "tls roots loaded"
        );
        Ok(Self::from_roots(roots, counts))
    }

    /// Where the trusted roots came from.
    pub fn roots(&self) -> RootCounts {
        self.roots
    }

    fn from_roots(roots: rustls::RootCertStore, counts: RootCounts) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"));
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            roots: counts,
        }
    }
}

impl Default for TcpConnector {
    fn default() -> Self {
        Self::new()
    }
}

/// A plain or TLS stream.
#[derive(Debug)]
pub enum MaybeTls {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn net_error(target: &Target, kind: NetErrorKind, detail: impl std::fmt::Display) -> NetError {
    NetError {
        kind,
        target: target.to_string(),
        detail: detail.to_string(),
    }
}

impl Connector for TcpConnector {
    type Stream = MaybeTls;

    async fn connect(&self, target: &Target) -> Result<MaybeTls, NetError> {
        let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| net_error(target, NetErrorKind::Dns, e))?
            .collect();
        if addrs.is_empty() {
            return Err(net_error(target, NetErrorKind::Dns, "no addresses"));
        }
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => {
                let kind = match e.kind() {
                    io::ErrorKind::ConnectionRefused => NetErrorKind::Refused,
                    io::ErrorKind::ConnectionReset => NetErrorKind::Reset,
                    io::ErrorKind::TimedOut => NetErrorKind::TimedOut,
                    _ => NetErrorKind::Other,
                };
                return Err(net_error(target, kind, e));
            }
            (None, None) => return Err(net_error(target, NetErrorKind::Dns, "no addresses")),
        };
        let _ = stream.set_nodelay(true);
        if !target.tls {
            return Ok(MaybeTls::Plain(stream));
        }
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| net_error(target, NetErrorKind::Tls, e))?;
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| net_error(target, NetErrorKind::Tls, e))?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }
}

/// The real disk. Blocking calls run on tokio's blocking pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFs;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

impl FileSystem for DiskFs {
    async fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        tokio::fs::read(path).await
    }

    async fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let path = path.to_path_buf();
        let data = data.to_vec();
        blocking(move || {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut file = opts.open(&path)?;
            file.write_all(&data)
        })
        .await
    }

    async fn sync(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .sync_all()
        })
        .await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        tokio::fs::rename(from, to).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || std::fs::File::open(path)?.sync_all()).await
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        tokio::fs::create_dir_all(path).await
    }
}

/// This process's resident memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessMemory;

impl MemoryProbe for ProcessMemory {
    fn resident_bytes(&self) -> u64 {
        memory_stats::memory_stats()
            .map(|s| s.physical_mem as u64)
            .unwrap_or(0)
    }
}
