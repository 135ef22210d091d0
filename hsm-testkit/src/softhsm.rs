//! SoftHSM2 for tests: every test in its own token directory, in its own process.
//!
//! SoftHSM reads its configuration (`SOFTHSM2_CONF`) once per process, when the module is
//! initialised, so tests that each want their own token store run their body in a child process:
//! [`SoftHsm::isolated`] re-runs the current test binary for just the current test, with
//! `SOFTHSM2_CONF` pointing at a fresh temporary directory, and fails if the child fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::tools;

/// The user PIN of every token the harness creates.
pub const USER_PIN: &str = "1234";
/// The security officer PIN of every token the harness creates.
pub const SO_PIN: &str = "5678";

const CHILD_ENV: &str = "HSM_TESTKIT_SOFTHSM_DIR";
/// Set to [`USER_PIN`] in every [`SoftHsm::isolated`] child, for tests of PINs read from the
/// environment.
pub const PIN_ENV: &str = "HSM_TESTKIT_USER_PIN";
const MODULE_PATHS: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// A SoftHSM2 token store private to one test.
#[derive(Debug)]
pub struct SoftHsm {
    dir: PathBuf,
    module: PathBuf,
}

impl SoftHsm {
    /// The SoftHSM2 module, or a failure saying how to install it.
    ///
    /// # Panics
    /// When SoftHSM2 is not installed.
    pub fn module_path() -> PathBuf {
        MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "SoftHSM2 is not installed (looked for {}). Install it with \
                     `sudo apt-get install softhsm2 opensc` (./scripts/test.sh does this for you).",
                    MODULE_PATHS.join(", ")
                )
            })
    }

    /// Runs `body` in a child process of this test binary with its own SoftHSM token
    /// directory, and fails the test if the child fails. Call it from a `#[test]` function.
    ///
    /// # Panics
    /// When the child fails (its output is shown) or SoftHSM2 is missing.
    pub fn isolated(body: impl FnOnce(&SoftHsm)) {
        if let Ok(dir) = std::env::var(CHILD_ENV) {
            let softhsm = SoftHsm {
                dir: PathBuf::from(dir),
                module: Self::module_path(),
            };
            body(&softhsm);
            return;
        }
        tools::require("softhsm2-util", "softhsm2");
        let module = Self::module_path();
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = Self::write_config(dir.path());
        let mut command = crate::child::rerun_this_test();
        command
            .env("SOFTHSM2_CONF", &conf)
            .env(CHILD_ENV, dir.path())
            .env(PIN_ENV, USER_PIN);
        crate::child::expect_pass(command);
        drop(module);
    }

    /// Writes `softhsm2.conf` and an empty `tokens/` store into `dir`; returns the
    /// configuration's path, for `SOFTHSM2_CONF`.
    ///
    /// # Panics
    /// When the files cannot be written.
    pub fn write_config(dir: &Path) -> PathBuf {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        conf
    }

    /// Wrapper form of [`isolated`](Self::isolated) for
    /// [`conformance_tests!`](crate::conformance_tests)`(factory, wrap = SoftHsm::wrap)`; the
    /// factory reaches the store with [`current`](Self::current).
    pub fn wrap(body: &dyn Fn()) {
        Self::isolated(|_| body());
    }

    /// The store of the child process [`isolated`](Self::isolated) started.
    ///
    /// # Panics
    /// Outside such a child process.
    pub fn current() -> SoftHsm {
        let dir = std::env::var(CHILD_ENV)
            .expect("SoftHsm::current is only available inside SoftHsm::isolated");
        SoftHsm {
            dir: PathBuf::from(dir),
            module: Self::module_path(),
        }
    }

    /// The token store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module path.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// A URI for `object` on `token`, with this module and the user PIN.
    pub fn uri(&self, token: &str, object: &str) -> String {
        format!(
            "pkcs11:token={token};object={object}?module-path={}&pin-value={USER_PIN}",
            self.module.display()
        )
    }

    /// Initialises a new token with `softhsm2-util` (user PIN [`USER_PIN`], SO PIN [`SO_PIN`]).
    /// Call it before the module is loaded in this process.
    pub fn init_token(&self, label: &str) {
        self.run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ],
        );
    }

    /// Imports an unencrypted PKCS#8 PEM key with `softhsm2-util --import`.
    pub fn import_key(&self, token: &str, pem: &Path, label: &str, id_hex: &str) {
        let pem = pem.to_string_lossy();
        self.run(
            "softhsm2-util",
            &[
                "--import", &pem, "--token", token, "--label", label, "--id", id_hex, "--pin",
                USER_PIN,
            ],
        );
    }

    /// Runs `pkcs11-tool --module <softhsm> ARGS` (OpenSC) and returns its output.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        tools::require("pkcs11-tool", "opensc");
        let module = self.module.to_string_lossy().into_owned();
        let mut all = vec!["--module", module.as_str()];
        all.extend_from_slice(args);
        self.run("pkcs11-tool", &all)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let output = Command::new(tool)
            .args(args)
            .env("SOFTHSM2_CONF", self.dir.join("softhsm2.conf"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} {} failed ({}):\n{}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}
