//! Starting a signer as a child process (the `custom_driver` example and the conformance tests
//! do; a real deployment runs the signer as its own service).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

use super::{Error, SignerKey};

/// The line a signer prints on stdout once it accepts connections.
pub(crate) const READY: &str = "remote-signer ready";
/// How long a starting signer may take to print [`READY`].
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A signer running as a child process, listening on a socket in a private temporary
/// directory. Dropping it stops the process and removes the directory; the signer also exits on
/// its own when this process dies (it watches its stdin).
#[derive(Debug)]
pub struct SignerProcess {
    child: Child,
    socket: PathBuf,
    _dir: TempDir,
}

impl SignerProcess {
    /// Runs `program --signer <socket> --key-type <name>` (or `--key-file <path>`) and waits
    /// until it is ready.
    /// `program` is a binary whose `main` calls [`run_signer`](super::run_signer) for those
    /// arguments, such as the `custom_driver` example.
    ///
    /// # Errors
    /// [`Error::Process`] when the program cannot be started, exits, or is not ready within 20
    /// seconds.
    pub fn spawn(program: &Path, key: &SignerKey) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("remote-signer-")
            .tempdir()
            .map_err(|source| Error::Process {
                reason: "cannot get a directory for its socket".into(),
                source: Some(source),
            })?;
        let socket = dir.path().join("signer.sock");
        let mut child = Command::new(program)
            .arg("--signer")
            .arg(&socket)
            .args(key.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Process {
                reason: format!("{} cannot be started", program.display()),
                source: Some(source),
            })?;
        let Some(stdout) = child.stdout.take() else {
            unreachable!("stdout is piped above")
        };
        // Read the ready line on a thread of its own, so that a hung child cannot hang us.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let outcome = rx.recv_timeout(READY_TIMEOUT);
        let mut process = Self {
            child,
            socket,
            _dir: dir,
        };
        match outcome {
            Ok(Ok(line)) if line.starts_with(READY) => Ok(process),
            Ok(Ok(line)) => {
                Err(process.failed(format!("printed {line:?} instead of the ready line")))
            }
            Ok(Err(e)) => Err(process.failed(format!("stdout could not be read: {e}"))),
            Err(_) => Err(process.failed(format!("was not ready within {READY_TIMEOUT:?}"))),
        }
    }

    /// The socket the signer listens on, for [`RemoteKey::connect`](super::RemoteKey::connect).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The signer's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    fn failed(&mut self, reason: String) -> Error {
        let _ = self.child.kill();
        let status = self.child.wait();
        Error::Process {
            reason: match status {
                Ok(status) => format!("{reason} ({status})"),
                Err(_) => reason,
            },
            source: None,
        }
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
