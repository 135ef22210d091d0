//! tpm2-pkcs11 for tests: a PKCS#11 token whose keys live in a TPM (a fresh swtpm behind
//! tpm2-abrmd, as tpm2-pkcs11 wants a resource manager), its store made with `tpm2_ptool` in a
//! temporary folder. [`Tpm2Pkcs11::isolated`] runs a test body in a child process that loads
//! `libtpm2_pkcs11.so` with `TPM2_PKCS11_STORE` and `TPM2_PKCS11_TCTI` pointing there.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tabrmd::Broker;

/// The token's label.
pub const TOKEN: &str = "tpm2-token";
/// Its user PIN.
pub const USER_PIN: &str = "tpm2-user-1234";
/// Its SO PIN.
pub const SO_PIN: &str = "tpm2-so-5678";

const MODULE_PATHS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
    "/usr/lib/pkcs11/libtpm2_pkcs11.so",
];
const CHILD_ENV: &str = "HSM_TESTKIT_TPM2_PKCS11_STORE";

/// A tpm2-pkcs11 token, as a child process of [`Tpm2Pkcs11::isolated`] sees it.
#[derive(Debug)]
pub struct Tpm2Pkcs11 {
    store: PathBuf,
    module: PathBuf,
}

impl Tpm2Pkcs11 {
    /// The module, or a failure saying how to install it.
    ///
    /// # Panics
    /// When tpm2-pkcs11 is not installed.
    pub fn module_path() -> PathBuf {
        MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "tpm2-pkcs11 is not installed (looked for {}). Install it with \
                     `sudo apt-get install libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd` \
                     (./scripts/test.sh does this for you).",
                    MODULE_PATHS.join(", ")
                )
            })
    }

    /// Runs `body` in a child process with a fresh tpm2-pkcs11 store (token [`TOKEN`], user
    /// PIN [`USER_PIN`]) on a fresh swtpm behind tpm2-abrmd; fails the test if the child fails.
    ///
    /// # Panics
    /// When a tool is missing, the store cannot be made, or the child fails.
    pub fn isolated(body: impl FnOnce(&Tpm2Pkcs11)) {
        if let Ok(store) = std::env::var(CHILD_ENV) {
            body(&Self {
                store: PathBuf::from(store),
                module: Self::module_path(),
            });
            return;
        }
        let store = Tpm2Store::create();
        let mut command = crate::child::rerun_this_test();
        command.envs(store.env()).env(CHILD_ENV, store.path());
        crate::child::expect_pass(command);
        drop(store);
    }

    /// Wrapper form of [`isolated`](Self::isolated) for
    /// [`conformance_tests!`](crate::conformance_tests)`(factory, wrap = Tpm2Pkcs11::wrap)`;
    /// the factory reaches the token with [`current`](Self::current).
    pub fn wrap(body: &dyn Fn()) {
        Self::isolated(|_| body());
    }

    /// The token of the child process [`isolated`](Self::isolated) started.
    ///
    /// # Panics
    /// Outside such a child process.
    pub fn current() -> Self {
        Self {
            store: PathBuf::from(
                std::env::var(CHILD_ENV).expect("Tpm2Pkcs11::current inside Tpm2Pkcs11::isolated"),
            ),
            module: Self::module_path(),
        }
    }

    /// The module.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The store folder.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// `pkcs11:token=tpm2-token;object={object}?module-path=...&pin-value=...`.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}&pin-value={USER_PIN}",
            self.module.display()
        )
    }
}

/// A tpm2-pkcs11 store with token [`TOKEN`] (user PIN [`USER_PIN`]) on a fresh swtpm behind
/// tpm2-abrmd, all stopped and removed on drop; for a process that loads the module itself
/// (a benchmark) with [`env`](Self::env) set before it does.
#[derive(Debug)]
pub struct Tpm2Store {
    dir: tempfile::TempDir,
    broker: Broker,
}

impl Tpm2Store {
    /// Makes the store with `tpm2_ptool init` and `addtoken`.
    ///
    /// # Panics
    /// When tpm2-pkcs11, its tools or tpm2-abrmd are missing, or a tool fails.
    pub fn create() -> Self {
        Tpm2Pkcs11::module_path();
        crate::tools::require("tpm2_ptool", "libtpm2-pkcs11-tools");
        let broker = Broker::start();
        let dir = tempfile::Builder::new()
            .prefix("tpm2-pkcs11-")
            .tempdir()
            .expect("temp dir for the store");
        let ptool = |args: &[&str]| {
            let output = Command::new("tpm2_ptool")
                .args(args)
                .envs(broker.env())
                .env("TPM2TOOLS_TCTI", broker.tcti())
                .env("TPM2_PKCS11_TCTI", broker.tcti())
                .env("TSS2_LOG", "all+NONE")
                .output()
                .unwrap_or_else(|e| panic!("cannot run tpm2_ptool: {e}"));
            assert!(
                output.status.success(),
                "tpm2_ptool {} failed:\n{}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let path = format!("--path={}", dir.path().display());
        ptool(&["init", &path]);
        ptool(&[
            "addtoken",
            "--pid=1",
            &format!("--sopin={SO_PIN}"),
            &format!("--userpin={USER_PIN}"),
            &format!("--label={TOKEN}"),
            &path,
        ]);
        Self { dir, broker }
    }

    /// The store folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What a process loading `libtpm2_pkcs11.so` needs in its environment: the store, the
    /// broker's TCTI and D-Bus address, and quiet TSS logging.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.broker.env();
        env.push(("TPM2_PKCS11_TCTI".into(), self.broker.tcti()));
        env.push((
            "TPM2_PKCS11_STORE".into(),
            self.dir.path().display().to_string(),
        ));
        env.push(("TSS2_LOG".into(), "all+NONE".into()));
        env
    }

    /// `pkcs11:token=tpm2-token;object={object}?module-path=...&pin-value=...`.
    pub fn uri(&self, object: &str) -> String {
        Tpm2Pkcs11 {
            store: self.dir.path().to_owned(),
            module: Tpm2Pkcs11::module_path(),
        }
        .uri(object)
    }
}
