//! HTTPS against a private CA, for real: a CA and a server certificate for 127.0.0.1
//! made at test time (rcgen), a tokio-rustls server answering HTTP/1.1, and the
//! production connector built from a `[tls]` section, through the runner's own HTTP
//! client and through a whole job run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use runner::daemon::env::{DaemonEnv, Fanout};
use runner::daemon::settings::{self, DaemonSettings};
use runner::env::tokio::TcpConnector;
use runner::secrets::OsSecrets;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use steadfast_core::alert::CollectAlerts;
use steadfast_core::config::{Source, Url};
use steadfast_core::env::NetErrorKind;
use steadfast_core::event::{EventKind, MemorySink, Outcome};
use steadfast_core::http::{HttpError, Method, Request};
use steadfast_core::scheduler::Runner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &str = "{\"pong\":true}";
/// A config needs a job; the first test sends its request directly.
const IDLE_JOB: &str = "[[jobs]]\nname = \"idle\"\nevery = \"1h\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("steadfast-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    dir
}

/// A private CA (its PEM written to `ca_pem`) and a server config for 127.0.0.1
/// signed by it.
fn private_ca(ca_pem: &Path) -> rustls::ServerConfig {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(ca_pem, ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap()
}

/// A TLS server on 127.0.0.1 answering every request with 200 and [`BODY`]; returns
/// its port and the count of completed handshakes.
async fn serve(config: rustls::ServerConfig) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, handshakes)
}

/// The daemon settings of `body` in `dir/runner.toml`, read the way `runner run` does.
fn daemon_settings(dir: &Path, body: &str) -> (steadfast_core::config::Config, DaemonSettings) {
    let file = dir.join("runner.toml");
    let text = format!("[runner]\nstate_dir = \"state\"\nmonitor_interval = \"1h\"\n{body}");
    std::fs::write(&file, &text).unwrap();
    let source = Source::new(&file, text).unwrap_or_else(|d| panic!("{d}"));
    settings::parse(&source, &OsSecrets).unwrap_or_else(|d| panic!("{d}"))
}

fn get(port: u16) -> Request {
    Request::new(
        Method::GET,
        Url::parse(&format!("https://127.0.0.1:{port}/ping")).unwrap(),
    )
}

#[tokio::test]
async fn a_configured_ca_file_is_trusted_and_the_default_roots_are_not() {
    let dir = scratch("client");
    let (port, handshakes) = serve(private_ca(&dir.join("certs/home-ca.pem"))).await;
    let (_, daemon) = daemon_settings(
        &dir,
        &format!("[tls]\nroots = \"webpki\"\nca_files = [\"certs/home-ca.pem\"]\n{IDLE_JOB}"),
    );
    let trusting = TcpConnector::with_settings(&daemon.tls).unwrap();
    assert_eq!(trusting.roots().ca_files, 1);

    let resp = steadfast_core::http::send(&trusting, &get(port), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, BODY.as_bytes());
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);

    // System and webpki roots, no CA file: the private CA is unknown.
    let err = steadfast_core::http::send(&TcpConnector::new(), &get(port), Duration::from_secs(10))
        .await
        .unwrap_err();
    let HttpError::Connect(net) = &err else {
        panic!("expected a connect error, got {err:?}");
    };
    assert_eq!(net.kind, NetErrorKind::Tls, "{net}");
    assert!(net.detail.contains("certificate"), "{net}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_https_step_runs_through_the_configured_roots() {
    let dir = scratch("job");
    let (port, handshakes) = serve(private_ca(&dir.join("certs/home-ca.pem"))).await;
    let jobs = format!(
        "[retry]\nbase = \"10ms\"\ncap = \"50ms\"\n[services.home]\ncall_timeout = \"5s\"\n[[jobs]]\nname = \"poll\"\nevery = \"1h\"\nretry = {{ max_attempts = 1 }}\n[[jobs.steps]]\nname = \"get\"\nurl = \"https://127.0.0.1:{port}/ping\"\nservice = \"home\"\n"
    );
    let run = |config, env| async move {
        let runner = Runner::new(env, config, Arc::new(CollectAlerts::default()))
            .await
            .unwrap();
        runner.run_once("poll").await.expect("job exists")
    };

    let (config, daemon) = daemon_settings(
        &dir,
        &format!("[tls]\nca_files = [\"certs/home-ca.pem\"]\n{jobs}"),
    );
    let connector = TcpConnector::with_settings(&daemon.tls).unwrap();
    let events = Arc::new(MemorySink::default());
    let env = DaemonEnv::with_connector(connector, Fanout::default().with(events.clone()));
    let outcome = run(config, env).await;
    assert_eq!(outcome.kind(), Outcome::Succeeded, "{:#?}", events.drain());
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);

    let (config, _) = daemon_settings(&dir, &jobs);
    let events = Arc::new(MemorySink::default());
    let env = DaemonEnv::new(Fanout::default().with(events.clone()));
    let outcome = run(config, env).await;
    let events = events.drain();
    assert_ne!(outcome.kind(), Outcome::Succeeded, "{events:#?}");
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::AttemptFailed)
        .collect();
    assert!(!failed.is_empty(), "{events:#?}");
    let detail = failed[0].detail.as_deref().unwrap_or_default();
    assert!(detail.contains("certificate"), "{detail}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}
