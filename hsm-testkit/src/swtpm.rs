//! swtpm for tests: a software TPM 2.0 per test, on free loopback ports, stopped when dropped.
//!
//! [`Swtpm::start`] runs
//! `swtpm socket --tpm2 --tpmstate dir=<fresh temp dir> --server type=tcp,port=P,bindaddr=127.0.0.1
//! --ctrl type=tcp,port=P+1,bindaddr=127.0.0.1 --flags not-need-init,startup-clear` and waits until
//! both ports accept connections. The control port is always the server port plus one: that is
//! where the `swtpm` and `mssim` TCTIs (tpm2-tss, tss-esapi) look for it. [`Swtpm::tcti`] gives the
//! TCTI string for tpm2-tools and tss-esapi, [`Swtpm::tpm2`] runs a tpm2-tools command against
//! this TPM, and [`Swtpm::restart`] simulates a power cycle on the same state directory and ports
//! (persistent objects survive; transient objects and sessions do not).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting swtpm may take to accept connections before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Fresh port pairs tried by [`Swtpm::start`] when another process wins a port first.
const START_ATTEMPTS: usize = 10;
const INSTALL_HINT: &str = "swtpm not found: apt install swtpm swtpm-tools tpm2-tools \
                            (./scripts/test.sh does this for you)";

/// A running swtpm (TPM 2.0) process on loopback TCP ports; dropping it stops the process and
/// removes the temporary directories it owns.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    state_dir: PathBuf,
    /// The state directory when [`Swtpm::start`] made it (kept alive, removed on drop).
    _owned_state: Option<TempDir>,
    /// swtpm's log and the working directory of [`Swtpm::tpm2`].
    scratch: TempDir,
}

impl Swtpm {
    /// Starts swtpm with a fresh, empty state directory on free loopback ports.
    ///
    /// # Panics
    /// When swtpm is not installed (with the command that installs it), or does not accept
    /// connections within 20 seconds (with swtpm's output).
    pub fn start() -> Swtpm {
        let state = tempfile::Builder::new()
            .prefix("swtpm-state-")
            .tempdir()
            .expect("temp dir for the swtpm state");
        let state_dir = state.path().to_owned();
        Self::launch(state_dir, Some(state))
    }

    /// Starts swtpm on an existing state directory (which it creates if missing), e.g. one a
    /// previous [`Swtpm`] used, on free loopback ports. The directory is not removed on drop.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_in(state_dir: &Path) -> Swtpm {
        std::fs::create_dir_all(state_dir).expect("create the swtpm state dir");
        Self::launch(state_dir.to_owned(), None)
    }

    /// Starts swtpm on a state "manufactured" by `swtpm_setup --create-ek-cert`: EK
    /// certificates in NV (RSA 2048 at `0x01c00002`, ECC at `0x01c00016`), issued by a local
    /// CA made for this TPM, whose certificates are [`ek_ca`](Self::ek_ca).
    ///
    /// # Panics
    /// As [`start`](Self::start), and when `swtpm_setup` fails.
    pub fn start_manufactured() -> Swtpm {
        require_swtpm();
        crate::tools::require("swtpm_setup", "swtpm-tools");
        let state = tempfile::Builder::new()
            .prefix("swtpm-state-")
            .tempdir()
            .expect("temp dir for the swtpm state");
        let ca = state.path().join("localca");
        std::fs::create_dir_all(&ca).expect("local CA folder");
        let localca = state.path().join("swtpm-localca.conf");
        std::fs::write(
            &localca,
            format!(
                "statedir = {ca}\nsignkey = {ca}/signkey.pem\nsigningkey = {ca}/signkey.pem\n\
                 issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .expect("swtpm-localca.conf");
        let setup = state.path().join("swtpm_setup.conf");
        std::fs::write(
            &setup,
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
                 active_pcr_banks = sha256\n",
                localca.display()
            ),
        )
        .expect("swtpm_setup.conf");
        let tpm_state = state.path().join("tpm");
        std::fs::create_dir_all(&tpm_state).expect("tpm state folder");
        let output = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
            .arg(&tpm_state)
            .arg("--config")
            .arg(&setup)
            .output()
            .unwrap_or_else(|e| panic!("cannot run swtpm_setup: {e}"));
        assert!(
            output.status.success(),
            "swtpm_setup failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Self::launch(tpm_state, Some(state))
    }

    /// The local CA's certificates (root, then the issuer of the EK certificates) of a
    /// [`start_manufactured`](Self::start_manufactured) swtpm, as PEM files.
    pub fn ek_ca(&self) -> Vec<PathBuf> {
        let ca = self
            .state_dir
            .parent()
            .map(|p| p.join("localca"))
            .unwrap_or_default();
        vec![
            ca.join("swtpm-localca-rootca-cert.pem"),
            ca.join("issuercert.pem"),
        ]
    }

    fn launch(state_dir: PathBuf, owned_state: Option<TempDir>) -> Swtpm {
        require_swtpm();
        let scratch = tempfile::Builder::new()
            .prefix("swtpm-run-")
            .tempdir()
            .expect("temp dir for the swtpm log");
        let mut swtpm = Swtpm {
            child: None,
            port: 0,
            state_dir,
            _owned_state: owned_state,
            scratch,
        };
        let mut failures = String::new();
        for _ in 0..START_ATTEMPTS {
            swtpm.port = free_port_pair();
            match swtpm.spawn() {
                Ok(()) => return swtpm,
                // Most likely another process took one of the ports in between: try others.
                Err(log) => {
                    let _ = writeln!(failures, "port {}: {log}", swtpm.port);
                }
            }
        }
        panic!("swtpm did not start in {START_ATTEMPTS} attempts:\n{failures}");
    }

    /// Spawns swtpm on `self.port` and waits until it serves. `Err` (with swtpm's log) when the
    /// process exited early; panics on a timeout.
    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).expect("create the swtpm log");
        let log_err = log.try_clone().expect("clone the swtpm log handle");
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state_dir.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.ctrl_port()
            ))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run swtpm ({e}). {INSTALL_HINT}"));
        let mut child = child;
        let (port, ctrl_port) = (self.port, self.ctrl_port());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("poll the swtpm process") {
                return Err(format!("swtpm exited ({status}): {}", read_log(&log_path)));
            }
            if accepts(port) && accepts(ctrl_port) {
                // Both ports answer; make sure it is our process answering, not a stranger that
                // holds one of them while ours gave up.
                std::thread::sleep(Duration::from_millis(20));
                if let Some(status) = child.try_wait().expect("poll the swtpm process") {
                    return Err(format!("swtpm exited ({status}): {}", read_log(&log_path)));
                }
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "swtpm did not accept connections on 127.0.0.1:{port} within \
                     {READY_TIMEOUT:?}; its output:\n{}",
                    read_log(&log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCTI string for tpm2-tools (`TPM2TOOLS_TCTI`) and tss-esapi:
    /// `swtpm:host=127.0.0.1,port=N`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM command (server) port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control channel port on 127.0.0.1: always [`port`](Self::port) + 1, as the TCTIs
    /// expect.
    pub fn ctrl_port(&self) -> u16 {
        self.port + 1
    }

    /// The TPM state directory (pass it to [`start_in`](Self::start_in) to start another swtpm
    /// on the same state after this one stopped).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A scratch directory owned by this instance, removed on drop: [`tpm2`](Self::tpm2) runs
    /// there, so relative file names in its arguments land here.
    pub fn work_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Whether the swtpm process is running (false after [`stop`](Self::stop) or if it died).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the swtpm process (like pulling the plug: transient objects and sessions are lost,
    /// persistent objects and NV are on disk) and waits for it. Does nothing when stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops swtpm and starts it again on the same state directory and the same ports, so
    /// clients configured with [`tcti`](Self::tcti) reconnect to it.
    ///
    /// # Panics
    /// When swtpm cannot serve on the same ports again within 20 seconds.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // A socket of the previous process may linger for a moment.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!(
                    "swtpm did not restart on 127.0.0.1:{} within {READY_TIMEOUT:?}: {log}",
                    self.port
                ),
            }
        }
    }

    /// Runs the tpm2-tools command `tpm2_<args[0]> args[1..]` against this TPM
    /// (`TPM2TOOLS_TCTI` set to [`tcti`](Self::tcti)) in [`work_dir`](Self::work_dir), e.g.
    /// `swtpm.tpm2(&["createek", "-c", "0x81010001", "-G", "rsa", "-u", "ek.pub"])`, and returns
    /// its output whatever its exit status; see [`tpm2_ok`](Self::tpm2_ok) for the checked form.
    ///
    /// # Panics
    /// When `args` is empty or the tool cannot be run (with an install hint).
    pub fn tpm2(&self, args: &[&str]) -> Output {
        let (tool, rest) = args
            .split_first()
            .expect("Swtpm::tpm2 needs the tool name, e.g. [\"getrandom\", \"8\"]");
        let program = format!("tpm2_{tool}");
        Command::new(&program)
            .args(rest)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .current_dir(self.work_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program} ({e}). tpm2-tools not found: apt install swtpm \
                     swtpm-tools tpm2-tools (./scripts/test.sh does this for you)"
                )
            })
    }

    /// [`tpm2`](Self::tpm2), failing the test with the tool's output unless it exits
    /// successfully.
    ///
    /// # Panics
    /// As [`tpm2`](Self::tpm2), and when the command fails.
    pub fn tpm2_ok(&self, args: &[&str]) -> Output {
        let output = self.tpm2(args);
        assert!(
            output.status.success(),
            "tpm2_{} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn log_path(&self) -> PathBuf {
        self.scratch.path().join("swtpm.log")
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn require_swtpm() {
    let found = Command::new("swtpm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(found, "{INSTALL_HINT}");
}

/// A port `p` such that `p` and `p + 1` were both free on 127.0.0.1 a moment ago.
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
        let port = first.local_addr().expect("bound address").port();
        if port == u16::MAX {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}
