//! What the production connector trusts: the operating system's root certificates,
//! the webpki (Mozilla) roots compiled into the binary, and extra CA certificates from
//! PEM files (a home server's self-signed or private CA).

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, TrustAnchor};

/// Which built-in root sets to trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Roots {
    /// The system store and the webpki roots (an empty system store is fine).
    #[default]
    SystemAndWebpki,
    /// The system store only; an empty one is a startup error.
    System,
    /// The webpki roots only.
    Webpki,
}

impl Roots {
    /// Every value, as written in config.
    pub const NAMES: [&str; 3] = ["system+webpki", "system", "webpki"];

    /// The value named `text` in config.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "system+webpki" => Some(Self::SystemAndWebpki),
            "system" => Some(Self::System),
            "webpki" => Some(Self::Webpki),
            _ => None,
        }
    }

    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemAndWebpki => "system+webpki",
            Self::System => "system",
            Self::Webpki => "webpki",
        }
    }

    fn system(self) -> bool {
        matches!(self, Self::SystemAndWebpki | Self::System)
    }

    fn webpki(self) -> bool {
        matches!(self, Self::SystemAndWebpki | Self::Webpki)
    }
}

/// The CA certificates of one PEM file, already parsed into trust anchors.
#[derive(Clone)]
pub struct CaFile {
    /// Where they came from.
    pub path: PathBuf,
    anchors: Vec<TrustAnchor<'static>>,
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("certificates", &self.anchors.len())
            .finish()
    }
}

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM section is broken.
    #[error("{} is not valid pem: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: pem::Error,
    },
    /// No `CERTIFICATE` section in the file.
    #[error("{} contains no certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A `CERTIFICATE` section that is not a usable X.509 certificate.
    #[error("certificate {index} in {} is not usable: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 0-based position among the file's certificates.
        index: usize,
        /// Why.
        source: rustls::Error,
    },
}

impl CaFile {
    /// Reads every `CERTIFICATE` section of the PEM file at `path` (other sections,
    /// say a private key, are skipped); at least one is required.
    pub fn read(path: &Path) -> Result<Self, CaFileError> {
        let bytes = std::fs::read(path).map_err(|source| CaFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = RootCertStore::empty();
        for (index, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
            let cert = cert.map_err(|source| CaFileError::Pem {
                path: path.to_path_buf(),
                source,
            })?;
            store.add(cert).map_err(|source| CaFileError::Invalid {
                path: path.to_path_buf(),
                index,
                source,
            })?;
        }
        if store.is_empty() {
            return Err(CaFileError::NoCertificate {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            anchors: store.roots,
        })
    }

    /// How many certificates the file holds.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Never true: [`CaFile::read`] requires a certificate.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// `[tls]`: what HTTPS connections trust.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// The built-in root sets.
    pub roots: Roots,
    /// Extra CA certificates, trusted in addition to `roots`.
    pub ca_files: Vec<CaFile>,
}

/// Why the trusted roots could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `roots = "system"` and the system store gave nothing usable.
    #[error(
        "the system certificate store has no usable certificate ({skipped} unparsable, {errors} load error(s)) (hint: set roots = \"system+webpki\" in [tls], or install the system's ca certificates)"
    )]
    NoSystemRoots {
        /// Certificates found but not parsable.
        skipped: usize,
        /// Errors while loading the store.
        errors: usize,
    },
}

/// Where the trusted roots came from, for the startup log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootCounts {
    /// From the system store.
    pub system: usize,
    /// Found in the system store but not parsable (skipped).
    pub system_skipped: usize,
    /// Errors while loading the system store (not fatal unless nothing was loaded).
    pub system_errors: usize,
    /// From the webpki roots.
    pub webpki: usize,
    /// From `ca_files`.
    pub ca_files: usize,
}

/// What the system store gave: certificates and how many errors came with them.
#[derive(Debug, Default)]
pub struct SystemCerts {
    /// DER certificates, not yet parsed.
    pub certs: Vec<CertificateDer<'static>>,
    /// Errors while loading (unreadable files and such).
    pub errors: usize,
}

/// Loads the operating system's store (`rustls-native-certs`: on Linux the OpenSSL
/// locations, honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub fn load_system() -> SystemCerts {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::debug!(target: "steadfast::tls", error = %e, "system certificate store");
    }
    SystemCerts {
        certs: loaded.certs,
        errors: loaded.errors.len(),
    }
}

/// The root store for `settings`; `system` is called only when the system store is
/// wanted (tests pass their own).
pub fn root_store(
    settings: &TlsSettings,
    system: impl FnOnce() -> SystemCerts,
) -> Result<(RootCertStore, RootCounts), TlsError> {
    let mut store = RootCertStore::empty();
    let mut counts = RootCounts::default();
    if settings.roots.system() {
        let loaded = system();
        let (added, skipped) = store.add_parsable_certificates(loaded.certs);
        counts.system = added;
        counts.system_skipped = skipped;
        counts.system_errors = loaded.errors;
        if added == 0 && settings.roots == Roots::System {
            return Err(TlsError::NoSystemRoots {
                skipped,
                errors: loaded.errors,
            });
        }
    }
    if settings.roots.webpki() {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        counts.webpki = webpki_roots::TLS_SERVER_ROOTS.len();
    }
    for file in &settings.ca_files {
        store.roots.extend(file.anchors.iter().cloned());
        counts.ca_files += file.len();
    }
    Ok((store, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("steadfast-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn settings(roots: Roots) -> TlsSettings {
        TlsSettings {
            roots,
            ca_files: Vec::new(),
        }
    }

    #[test]
    fn roots_names_round_trip() {
        for name in Roots::NAMES {
            assert_eq!(Roots::parse(name).map(Roots::as_str), Some(name));
        }
        assert_eq!(Roots::parse("System"), None);
    }

    #[test]
    fn an_empty_system_store_is_fatal_only_for_system_alone() {
        let empty = || SystemCerts {
            certs: Vec::new(),
            errors: 2,
        };
        let err = root_store(&settings(Roots::System), empty).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no usable certificate"), "{text}");
        assert!(text.contains("2 load error(s)"), "{text}");
        assert!(
            text.contains("hint: set roots = \"system+webpki\""),
            "{text}"
        );

        let (store, counts) = root_store(&settings(Roots::SystemAndWebpki), empty).unwrap();
        assert_eq!(counts.system, 0);
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len());
    }

    #[test]
    fn unparsable_system_certificates_are_skipped_and_counted() {
        let ca = CertificateDer::from_pem_slice(ca_pem().as_bytes()).unwrap();
        let system = || SystemCerts {
            certs: vec![CertificateDer::from(vec![1, 2, 3]), ca],
            errors: 0,
        };
        let (store, counts) = root_store(&settings(Roots::System), system).unwrap();
        assert_eq!((counts.system, counts.system_skipped), (1, 1));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn webpki_alone_never_reads_the_system_store() {
        let (_, counts) = root_store(&settings(Roots::Webpki), || {
            panic!("the system store was read")
        })
        .unwrap();
        assert_eq!(counts.webpki, webpki_roots::TLS_SERVER_ROOTS.len());
    }

    #[test]
    fn ca_files_add_their_certificates() {
        let dir = scratch("ca");
        let path = dir.join("two.pem");
        std::fs::write(&path, format!("{}{}", ca_pem(), ca_pem())).unwrap();
        let file = CaFile::read(&path).unwrap();
        assert_eq!(file.len(), 2);
        let s = TlsSettings {
            roots: Roots::Webpki,
            ca_files: vec![file],
        };
        let (store, counts) = root_store(&s, SystemCerts::default).unwrap();
        assert_eq!(counts.ca_files, 2);
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 2);
    }

    #[test]
    fn ca_file_errors_name_the_path() {
        let dir = scratch("bad");
        let missing = dir.join("missing.pem");
        let err = CaFile::read(&missing).unwrap_err();
        assert!(matches!(err, CaFileError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let key_only = dir.join("key.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key_only, key.serialize_pem()).unwrap();
        let err = CaFile::read(&key_only).unwrap_err();
        assert!(matches!(err, CaFileError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("key.pem contains no certificate"));

        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = CaFile::read(&garbage).unwrap_err();
        assert!(
            matches!(err, CaFileError::Invalid { index: 0, .. }),
            "{err}"
        );
    }

    /// `load_system` on this machine. CI runs on the same kind of Debian machine as
    /// development (`ca-certificates` installed, about 145 roots), so asserting a
    /// non-empty store is acceptable; on a machine without a system store this test
    /// fails by design rather than silently testing nothing.
    #[test]
    fn the_system_store_loads_on_this_machine() {
        let (_, counts) = root_store(&settings(Roots::System), load_system).unwrap();
        assert!(counts.system > 0, "{counts:?}");
    }
}
