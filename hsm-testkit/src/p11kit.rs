//! p11-kit remoting for tests: a token served by `p11-kit server` in another process and used
//! through `p11-kit-client.so`, the module in another process than the one that signs (as a
//! container or sandbox reaches a host's token). [`P11KitRemote::isolated`] makes a SoftHSM2
//! token in a folder of its own, serves it, and runs the test body in a child process whose
//! `P11_KIT_SERVER_ADDRESS` points at the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::softhsm::{SO_PIN, SoftHsm, USER_PIN};

/// The remote token's label.
pub const TOKEN: &str = "remote";

const CLIENT_PATHS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
];
const CHILD_ENV: &str = "HSM_TESTKIT_P11KIT_CLIENT";

/// The client side of a remoted token, as the child process of [`P11KitRemote::isolated`]
/// sees it.
#[derive(Debug)]
pub struct P11KitRemote {
    client: PathBuf,
}

/// `p11-kit server`, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl P11KitRemote {
    /// p11-kit's client module, or a failure saying how to install it.
    ///
    /// # Panics
    /// When p11-kit's client module is not installed.
    pub fn client_path() -> PathBuf {
        CLIENT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "p11-kit's client module is not installed (looked for {}). Install it with \
                     `sudo apt-get install p11-kit p11-kit-modules` (./scripts/test.sh does this \
                     for you).",
                    CLIENT_PATHS.join(", ")
                )
            })
    }

    /// Runs `body` in a child process that reaches a SoftHSM2 token ([`TOKEN`], user PIN
    /// `softhsm::USER_PIN`) served by `p11-kit server` from this process; fails the test if the
    /// child fails.
    ///
    /// # Panics
    /// When a tool is missing, the server does not start, or the child fails.
    pub fn isolated(body: impl FnOnce(&P11KitRemote)) {
        if std::env::var(CHILD_ENV).is_ok() {
            body(&Self {
                client: Self::client_path(),
            });
            return;
        }
        let client = Self::client_path();
        crate::tools::require("p11-kit", "p11-kit");
        crate::tools::require("softhsm2-util", "softhsm2");
        let dir = tempfile::Builder::new()
            .prefix("p11-kit-")
            .tempdir()
            .expect("temp dir for p11-kit");
        let conf = SoftHsm::write_config(dir.path());
        let status = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ])
            .env("SOFTHSM2_CONF", &conf)
            .stdout(Stdio::null())
            .status()
            .expect("run softhsm2-util");
        assert!(status.success(), "softhsm2-util --init-token failed");
        let socket = dir.path().join("p11-kit.sock");
        let server = Server(
            Command::new("p11-kit")
                .args(["server", "-f", "--provider"])
                .arg(SoftHsm::module_path())
                .arg("-n")
                .arg(&socket)
                .arg(format!("pkcs11:token={TOKEN}"))
                .env("SOFTHSM2_CONF", &conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run p11-kit server: {e}")),
        );
        wait_for(&socket);
        let mut command = crate::child::rerun_this_test();
        command
            .env(
                "P11_KIT_SERVER_ADDRESS",
                format!("unix:path={}", socket.display()),
            )
            .env(CHILD_ENV, "1");
        crate::child::expect_pass(command);
        drop((server, client));
    }

    /// Wrapper form of [`isolated`](Self::isolated) for
    /// [`conformance_tests!`](crate::conformance_tests)`(factory, wrap = P11KitRemote::wrap)`.
    pub fn wrap(body: &dyn Fn()) {
        Self::isolated(|_| body());
    }

    /// The client side in the child process [`isolated`](Self::isolated) started.
    ///
    /// # Panics
    /// Outside such a child process.
    pub fn current() -> Self {
        assert!(
            std::env::var(CHILD_ENV).is_ok(),
            "P11KitRemote::current inside P11KitRemote::isolated"
        );
        Self {
            client: Self::client_path(),
        }
    }

    /// The client module the child loads.
    pub fn module(&self) -> &Path {
        &self.client
    }

    /// `pkcs11:token=remote;object={object}?module-path=<client>&pin-value=...`.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}&pin-value={USER_PIN}",
            self.client.display()
        )
    }
}

fn wait_for(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "p11-kit server did not create {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
