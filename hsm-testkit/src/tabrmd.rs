//! tpm2-abrmd for tests: the TPM access broker and resource manager in front of a test's swtpm,
//! on a private D-Bus session bus of its own (a `dbus-daemon` started here), so that several
//! processes use one TPM at once as they do on a device (`/dev/tpmrm0` or tabrmd).
//!
//! [`Broker::start`] runs `dbus-daemon --session` and `tpm2-abrmd --session --allow-root
//! --tcti=swtpm:... --dbus-name=<unique>` and waits until the broker answers. Processes reach
//! it with the TCTI [`Broker::tcti`] and the environment [`Broker::env`] (the bus address);
//! [`Broker::isolated`] runs a test body in a child process with that environment.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::swtpm::Swtpm;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Set in a child process [`Broker::isolated`] started: the broker's TCTI.
const CHILD_TCTI: &str = "HSM_TESTKIT_TABRMD_TCTI";

/// A running tpm2-abrmd (and its D-Bus daemon) in front of a swtpm; dropping it stops both
/// (the swtpm too, when the broker owns it).
#[derive(Debug)]
pub struct Broker {
    abrmd: Child,
    dbus: Child,
    bus_address: String,
    bus_name: String,
    swtpm: Option<Swtpm>,
    _dir: TempDir,
}

impl Broker {
    /// A broker in front of a fresh swtpm of its own.
    ///
    /// # Panics
    /// When tpm2-abrmd, dbus-daemon or swtpm is missing (with the command that installs them),
    /// or the broker does not answer in time.
    pub fn start() -> Self {
        Self::start_for(Swtpm::start(), true)
    }

    /// A broker in front of `swtpm`; the broker keeps it (and stops it when dropped).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_in_front_of(swtpm: Swtpm) -> Self {
        Self::start_for(swtpm, true)
    }

    fn start_for(swtpm: Swtpm, own: bool) -> Self {
        crate::tools::require("tpm2-abrmd", "tpm2-abrmd");
        crate::tools::require("dbus-daemon", "dbus");
        let dir = tempfile::Builder::new()
            .prefix("tabrmd-")
            .tempdir()
            .expect("temp dir for the broker");
        let address_file = dir.path().join("bus-address");
        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(&address_file).expect("bus address file"),
            ))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dbus-daemon: {e}"));
        let deadline = Instant::now() + READY_TIMEOUT;
        let bus_address = loop {
            let text = std::fs::read_to_string(&address_file).unwrap_or_default();
            if let Some(line) = text.lines().next().filter(|l| !l.is_empty()) {
                break line.to_owned();
            }
            if Instant::now() > deadline || matches!(dbus.try_wait(), Ok(Some(_))) {
                let _ = dbus.kill();
                panic!("dbus-daemon did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bus_name = format!(
            "com.intel.tss2.Tabrmd.hsmtestkit{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let log = dir.path().join("abrmd.log");
        let abrmd = Command::new("tpm2-abrmd")
            .args([
                "--session",
                "--allow-root",
                &format!("--dbus-name={bus_name}"),
                &format!("--tcti={}", swtpm.tcti()),
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("abrmd log")))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run tpm2-abrmd: {e}"));
        let mut broker = Self {
            abrmd,
            dbus,
            bus_address,
            bus_name,
            swtpm: own.then_some(swtpm),
            _dir: dir,
        };
        // Ready when tpm2-tools reach the TPM through it.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ok = Command::new("tpm2_getcap")
                .args(["-T", &broker.tcti(), "properties-fixed"])
                .envs(broker.env())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return broker;
            }
            if Instant::now() > deadline || matches!(broker.abrmd.try_wait(), Ok(Some(_))) {
                panic!(
                    "tpm2-abrmd did not answer within {READY_TIMEOUT:?}: {}",
                    std::fs::read_to_string(log_path(&broker)).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TCTI that reaches the TPM through this broker:
    /// `tabrmd:bus_type=session,bus_name=...`.
    pub fn tcti(&self) -> String {
        format!("tabrmd:bus_type=session,bus_name={}", self.bus_name)
    }

    /// The environment a process needs to reach the broker: its D-Bus session address.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "DBUS_SESSION_BUS_ADDRESS".to_owned(),
            self.bus_address.clone(),
        )]
    }

    /// The swtpm behind it.
    ///
    /// # Panics
    /// When the broker does not own its swtpm.
    pub fn swtpm(&self) -> &Swtpm {
        self.swtpm.as_ref().expect("the broker owns its swtpm")
    }

    /// Runs `body` in a child process of this test binary that reaches this broker (its
    /// environment set), and fails the test if the child fails. Call it from a `#[test]`
    /// function; the child finds the TCTI with [`child_tcti`].
    ///
    /// # Panics
    /// When the child fails (its output is shown).
    pub fn isolated(body: impl FnOnce(&str)) {
        if let Ok(tcti) = std::env::var(CHILD_TCTI) {
            body(&tcti);
            return;
        }
        let broker = Self::start();
        let mut command = crate::child::rerun_this_test();
        command.envs(broker.env()).env(CHILD_TCTI, broker.tcti());
        crate::child::expect_pass(command);
        drop(broker);
    }
}

/// In a child process [`Broker::isolated`] started: the broker's TCTI.
pub fn child_tcti() -> Option<String> {
    std::env::var(CHILD_TCTI).ok()
}

fn log_path(broker: &Broker) -> PathBuf {
    broker._dir.path().join("abrmd.log")
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.abrmd.kill();
        let _ = self.abrmd.wait();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
    }
}
