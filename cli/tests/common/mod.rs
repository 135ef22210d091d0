//! Shared helpers: run the built binary as a user would, check what it printed and how it
//! exited, and run a dps-emulator in the test process.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dps_emulator::{Emulator, EmulatorBuilder, KeyPair};
use tempfile::TempDir;

/// A device key (base64) for symmetric-key enrollments.
pub const DEVICE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Another key, never enrolled.
pub const WRONG_KEY: &str = "HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
/// DESIGN.md section 4's published group key, registration id and derived key.
pub const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
pub const GROUP_DEVICE_ID: &str = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
pub const GROUP_DERIVED_KEY: &str = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=";

/// The hub the emulator assigns by default.
pub const HUB: &str = "emulated-hub.azure-devices.net";

/// The binary, as cargo built it for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hsm-provision"))
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub args: String,
}

impl Run {
    /// Fails unless the exit code is `code`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code for {self}");
        self
    }

    /// Fails unless it exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.code(0)
    }

    /// Fails unless it exited with `code` after exactly one `error:` line, whose text contains
    /// `needle`, and nothing else on stderr but `caused by` lines and status lines; never a panic
    /// or a backtrace.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) -> &Self {
        self.code(code);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "expected one error line in {self}");
        assert!(
            self.error_text().contains(needle),
            "the error does not mention {needle:?}: {self}"
        );
        for line in self.stderr.lines() {
            assert!(
                line.starts_with("error:")
                    || line.starts_with("  caused by: ")
                    || line.starts_with("registering... "),
                "unexpected stderr line {line:?} in {self}"
            );
        }
        for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(!self.stderr.contains(bad), "{bad} in {self}");
        }
        self
    }

    /// The `error:` line and its causes.
    pub fn error_text(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error:") || l.starts_with("  caused by: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// stdout as one JSON value.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`hsm-provision {}` exited {} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs the binary with `args`.
pub fn run<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with(bin(), args)
}

/// Runs `command` (the binary with some environment) with `args`.
pub fn run_with<I, S>(mut command: Command, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let started = Instant::now();
    let output: Output = command.args(&args).output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A dps-emulator running on its own tokio runtime in the test process (so the test thread
/// can block on the binary), with its CA written to a temporary file.
pub struct Emu {
    pub emulator: Emulator,
    pub dir: TempDir,
    pub ca: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Emu {
    /// Starts `builder` (answers at once: Retry-After 0).
    pub fn start(builder: EmulatorBuilder) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime.block_on(builder.retry_after(0).start()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("dps-ca.pem");
        emulator.write_ca(&ca).unwrap();
        Self {
            emulator,
            dir,
            ca,
            runtime,
        }
    }

    /// `register` plus the flags that reach this emulator over HTTPS.
    pub fn register(&self) -> Vec<String> {
        vec![
            "register".into(),
            "--global-endpoint".into(),
            self.emulator.global_endpoint(),
            "--id-scope".into(),
            self.emulator.id_scope().into(),
            "--trust-ca".into(),
            self.ca.display().to_string(),
            "--mqtt-port".into(),
            self.emulator.mqtt_addr().unwrap().port().to_string(),
            "--amqp-port".into(),
            self.emulator.amqp_addr().unwrap().port().to_string(),
            "--timeout".into(),
            "20s".into(),
        ]
    }

    /// `connect` plus the flags that reach this emulator's DPS (HTTPS) and hubs.
    pub fn connect(&self) -> Vec<String> {
        let mut args = self.register();
        args[0] = "connect".into();
        args.extend([
            "--connect-to".into(),
            self.emulator.hub_addr().unwrap().to_string(),
        ]);
        args
    }

    /// A file in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The emulator's key pair type for an enrollment.
pub fn key_pair(id: &str, key: &str) -> KeyPair {
    KeyPair::from_base64(id, key, None).unwrap()
}

/// `args` with more appended.
pub fn with<S: AsRef<str>>(mut args: Vec<String>, more: &[S]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.as_ref().to_owned()));
    args
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The DER certificates in a PEM file.
pub fn certificates(path: &Path) -> Vec<hsm_core::CertificateDer<'static>> {
    hsm_x509::load_certificates(&std::fs::read(path).unwrap()).unwrap()
}

/// openssl's output with the spaces taken out (`CN = x` and `CN=x` alike).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace(' ', "")
}

/// The subject of a PEM certificate file, as `openssl x509 -subject` prints it (spaces out).
pub fn subject(dir: &Path, pem: &Path) -> String {
    text(
        &hsm_testkit::tools::openssl(
            dir,
            &["x509", "-noout", "-subject", "-in", pem.to_str().unwrap()],
        )
        .stdout,
    )
}
