//! tinyproxy for tests: a real HTTP proxy per test, on a free loopback port, with its own
//! configuration and log (optionally requiring basic authentication), stopped when dropped.
//!
//! [`Tinyproxy::start`] writes a configuration (`Listen 127.0.0.1`, `Allow 127.0.0.1`, no
//! `ConnectPort` line, so `CONNECT` reaches any port, `LogLevel Connect`), runs `tinyproxy -d
//! -c <file>` and waits until it accepts connections. [`Tinyproxy::tunnels_to`] reads its log:
//! the `CONNECT host:port` requests it received, the proof that a client went through it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 10;

/// A running tinyproxy; dropping it stops it and removes its folder.
#[derive(Debug)]
pub struct Tinyproxy {
    child: Child,
    port: u16,
    credentials: Option<(String, String)>,
    log: PathBuf,
    _dir: TempDir,
}

impl Tinyproxy {
    /// A proxy without authentication.
    ///
    /// # Panics
    /// When tinyproxy is not installed (with the command that installs it) or does not start.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A proxy that requires basic authentication with this user and password (anything
    /// else gets `407 Proxy Authentication Required`).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_owned(), password.to_owned())))
    }

    fn launch(credentials: Option<(String, String)>) -> Self {
        crate::tools::require("tinyproxy", "tinyproxy");
        let dir = tempfile::Builder::new()
            .prefix("tinyproxy-")
            .tempdir()
            .expect("temp dir for tinyproxy");
        let log = dir.path().join("tinyproxy.log");
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.path().join("tinyproxy.conf");
            let mut text = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 200\nAllow 127.0.0.1\n\
                 LogFile \"{}\"\nLogLevel Connect\n",
                log.display()
            );
            if let Some((user, password)) = &credentials {
                text.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            std::fs::write(&conf, text).expect("tinyproxy.conf");
            let mut child = Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run tinyproxy: {e}"));
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    return Self {
                        child,
                        port,
                        credentials,
                        log,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    // The port was taken meanwhile: another one.
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "tinyproxy did not accept connections within {READY_TIMEOUT:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tinyproxy could not start on a free port in {START_ATTEMPTS} attempts");
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://[user:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// `http://127.0.0.1:PORT`, without the credentials.
    pub fn url_without_credentials(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many `CONNECT` requests for `host:port` it logged.
    pub fn tunnels_to(&self, host: &str, port: u16) -> usize {
        let needle = format!("CONNECT {host}:{port} ");
        self.log()
            .lines()
            .filter(|l| l.contains("Request (file descriptor") && l.contains(&needle))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
