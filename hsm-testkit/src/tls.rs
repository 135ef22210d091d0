//! Real TLS peers for the suite: an in-process rustls server and an `openssl s_server` process,
//! both requiring a client certificate that chains to a given root.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use hsm_core::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

use crate::pki::{Identity, TestCa, cert_pem, sha256_hex};
use crate::tools;

/// A TLS protocol version to pin both peers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.3.
    Tls13,
    /// TLS 1.2.
    Tls12,
}

impl Version {
    /// The rustls version.
    pub fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            Self::Tls13 => &rustls::version::TLS13,
            Self::Tls12 => &rustls::version::TLS12,
        }
    }

    fn openssl_flag(self) -> &'static str {
        match self {
            Self::Tls13 => "-tls1_3",
            Self::Tls12 => "-tls1_2",
        }
    }
}

/// The aws-lc-rs provider, shared by the test peers.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls server on a free loopback port that requires a client certificate chaining to
/// `client_root`, completes each handshake, reads the client's request (one record), and
/// answers with `verified <sha256 of the client leaf>\n`.
#[derive(Debug)]
pub struct RustlsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    server_root: CertificateDer<'static>,
}

impl RustlsServer {
    /// Starts the server on its own thread.
    ///
    /// # Panics
    /// When the configuration is refused or no port can be bound.
    pub fn start(client_root: &CertificateDer<'static>, version: Version) -> Self {
        let ca = TestCa::new("hsm-testkit server root");
        let server = ca.issue_server();
        let mut roots = RootCertStore::empty();
        roots.add(client_root.clone()).expect("client root");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version.rustls()])
            .expect("server versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(server.chain.clone(), server.private_key())
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // A failed handshake is the client's to report; the server carries on.
                    let _ = serve(config.clone(), stream);
                }
            })
        };
        Self {
            addr,
            stop,
            thread: Some(thread),
            server_root: ca.cert().clone(),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root that issued the server's certificate (clients trust it).
    pub fn server_root(&self) -> &CertificateDer<'static> {
        &self.server_root
    }
}

impl Drop for RustlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(config: Arc<ServerConfig>, stream: TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = ServerConnection::new(config)?;
    let mut tls = StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    // Read the request before answering: closing with unread data would reset the connection.
    let mut request = [0u8; 256];
    let _ = tls.read(&mut request)?;
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no client certificate")?;
    let reply = format!("verified {}\n", sha256_hex(leaf));
    tls.write_all(reply.as_bytes())?;
    tls.conn.send_close_notify();
    tls.conn.complete_io(&mut tls.sock)?;
    Ok(())
}

/// What a client saw of a completed connection.
#[derive(Debug)]
pub struct Outcome {
    /// The negotiated protocol version.
    pub version: rustls::ProtocolVersion,
    /// The negotiated cipher suite.
    pub cipher_suite: rustls::CipherSuite,
    /// Everything the server sent until it closed.
    pub reply: String,
}

/// Connects to `addr` as `localhost` with `config`, sends `request`, and reads the reply until
/// the server closes.
///
/// # Errors
/// Any TLS or I/O error, including a rejected client certificate or a failing key handle.
pub fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    request: &[u8],
) -> Result<Outcome, std::io::Error> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    tls.write_all(request)?;
    tls.flush()?;
    let mut reply = Vec::new();
    match tls.read_to_end(&mut reply) {
        Ok(_) => {}
        // openssl s_server -www closes without close_notify; what arrived is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    let _ = tls.sock.shutdown(Shutdown::Both);
    Ok(Outcome {
        version: tls
            .conn
            .protocol_version()
            .ok_or(std::io::Error::other("no version"))?,
        cipher_suite: tls
            .conn
            .negotiated_cipher_suite()
            .map(|s| s.suite())
            .ok_or(std::io::Error::other("no cipher suite"))?,
        reply: String::from_utf8_lossy(&reply).into_owned(),
    })
}

/// `openssl s_server -Verify 1 -verify_return_error -www` on a free loopback port, pinned to one
/// TLS version, requiring a client certificate that chains to the given root. Its `-www` page
/// includes the client certificate it verified. Killed on drop.
#[derive(Debug)]
pub struct OpensslServer {
    child: Child,
    addr: SocketAddr,
    server_root: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl OpensslServer {
    /// Starts `openssl s_server` and waits until it accepts connections.
    ///
    /// # Panics
    /// When openssl is missing or does not start.
    pub fn start(client_root: &CertificateDer<'static>, version: Version) -> Self {
        tools::require("openssl", "openssl");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("hsm-testkit openssl server root");
        let server: Identity = ca.issue_server();
        write(dir.path(), "server.pem", &server.chain_pem);
        write(dir.path(), "server.key", &server.key_pem);
        write(dir.path(), "client-root.pem", &cert_pem(client_root));
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let accept = format!("127.0.0.1:{port}");
            let mut child = Command::new("openssl")
                .args([
                    "s_server",
                    "-accept",
                    &accept,
                    "-cert",
                    "server.pem",
                    "-key",
                    "server.key",
                ])
                .args([
                    "-CAfile",
                    "client-root.pem",
                    "-Verify",
                    "1",
                    "-verify_return_error",
                ])
                .args([version.openssl_flag(), "-www"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn openssl s_server");
            let stdout = child.stdout.take().expect("piped stdout");
            let (ready_tx, ready_rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.trim() == "ACCEPT" {
                        let _ = ready_tx.send(());
                    }
                }
            });
            // Generous: this guards against a hang, it does not time anything.
            if ready_rx.recv_timeout(Duration::from_secs(60)).is_ok() {
                return Self {
                    child,
                    addr: accept.parse().expect("socket address"),
                    server_root: ca.cert().clone(),
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let output = child.wait_with_output().expect("s_server output");
            last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        panic!("openssl s_server did not start: {last_error}");
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root that issued the server's certificate.
    pub fn server_root(&self) -> &CertificateDer<'static> {
        &self.server_root
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).expect("write test file");
}

/// A loopback port that was free a moment ago (callers retry if another process takes it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}
