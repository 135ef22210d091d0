//! opencryptoki for tests: its software token (`libpkcs11_sw`, slot 3) behind its slot daemon
//! `pkcsslotd`, in a state of its own. opencryptoki's paths are fixed (`/var/lib/opencryptoki`,
//! `/run/pkcsslotd.socket`, `/run/lock/opencryptoki`, its shared memory in `/dev/shm`), so
//! [`Opencryptoki::isolated`] runs the test body in a child process inside private mount and
//! IPC namespaces (`unshare --mount --ipc`) where temporary folders are mounted over those
//! paths, starts `pkcsslotd` there and stops it afterwards. Needs root (as CI runs the suite)
//! for the namespaces.
//!
//! The body gets a token initialised as opencryptoki requires: label [`TOKEN`], the SO PIN
//! changed from the factory `87654321` (until it is, the SO's operations fail with
//! `CKR_PIN_EXPIRED`), and the user PIN set by the SO (`C_InitToken` leaves none:
//! `CKR_USER_PIN_NOT_INITIALIZED` until `C_InitPIN`).

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

/// The token's label.
pub const TOKEN: &str = "ock-soft";
/// The user PIN (opencryptoki's soft token takes 4 to 8 characters).
pub const USER_PIN: &str = "ock12345";
/// The SO PIN, once changed.
pub const SO_PIN: &str = "so123456";
/// The factory SO PIN.
const FACTORY_SO_PIN: &str = "87654321";
/// The soft token's slot in the packaged configuration.
pub const SLOT: u64 = 3;

const MODULE_PATHS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/libopencryptoki.so",
    "/usr/lib/opencryptoki/libopencryptoki.so",
];
const CHILD_ENV: &str = "HSM_TESTKIT_OPENCRYPTOKI";

/// opencryptoki's soft token, as the child process of [`Opencryptoki::isolated`] sees it.
#[derive(Debug)]
pub struct Opencryptoki {
    module: PathBuf,
}

impl Opencryptoki {
    /// The module, or a failure saying how to install it.
    ///
    /// # Panics
    /// When opencryptoki is not installed.
    pub fn module_path() -> PathBuf {
        MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "opencryptoki is not installed (looked for {}). Install it with \
                     `sudo apt-get install opencryptoki` (./scripts/test.sh does this for you).",
                    MODULE_PATHS.join(", ")
                )
            })
    }

    /// Runs `body` in a child process in a private mount namespace with opencryptoki's state
    /// in temporary folders, `pkcsslotd` running, and the soft token initialised (label
    /// [`TOKEN`], user PIN [`USER_PIN`]); fails the test if the child fails.
    ///
    /// # Panics
    /// When opencryptoki or `unshare` is missing, the process is not root, or the child fails.
    pub fn isolated(body: impl FnOnce(&Opencryptoki)) {
        if let Ok(stage) = std::env::var(CHILD_ENV) {
            let ock = Self {
                module: Self::module_path(),
            };
            // The token is initialised in a process of its own, as an administrator's tool
            // would: opencryptoki does not come back from C_Finalize in the same process.
            if stage == "initialise" {
                ock.initialise();
            } else {
                body(&ock);
            }
            return;
        }
        Self::module_path();
        crate::tools::require("unshare", "util-linux");
        assert!(
            std::fs::metadata("/usr/sbin/pkcsslotd").is_ok(),
            "pkcsslotd is not installed: `sudo apt-get install opencryptoki` \
             (./scripts/test.sh does this for you)"
        );
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        assert!(
            root,
            "the opencryptoki tests need root (a private mount namespace over its fixed \
             paths): run ./scripts/test.sh as root, as CI does"
        );
        let dir = tempfile::Builder::new()
            .prefix("opencryptoki-")
            .tempdir()
            .expect("temp dir for opencryptoki");
        let d = dir.path();
        // TOK_OBJ holds the token objects (the package makes it at install).
        for sub in ["lib/swtok/TOK_OBJ", "run/lock/opencryptoki", "log"] {
            std::fs::create_dir_all(d.join(sub)).expect("opencryptoki folders");
        }
        // opencryptoki wants its group on its folders.
        let _ = std::process::Command::new("chgrp")
            .args(["-R", "pkcs11"])
            .arg(d.join("lib"))
            .arg(d.join("run/lock/opencryptoki"))
            .status();
        let script = format!(
            "set -e; mount --bind {lib} /var/lib/opencryptoki; mount --bind {run} /run; \
             mount -t tmpfs tmpfs /dev/shm; mkdir -p /var/log/opencryptoki; /usr/sbin/pkcsslotd; \
             {env}=initialise \"$@\" >/dev/null; set +e; \"$@\"; rc=$?; \
             kill \"$(cat /run/pkcsslotd.pid)\" 2>/dev/null; exit $rc",
            lib = shell_quote(&d.join("lib")),
            run = shell_quote(&d.join("run")),
            env = CHILD_ENV,
        );
        let child = crate::child::rerun_this_test();
        let mut command = std::process::Command::new("unshare");
        command
            .args([
                "--mount",
                "--ipc",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(child.get_program())
            .args(child.get_args())
            .env(CHILD_ENV, "test");
        crate::child::expect_pass(command);
    }

    /// Wrapper form of [`isolated`](Self::isolated) for
    /// [`conformance_tests!`](crate::conformance_tests)`(factory, wrap = Opencryptoki::wrap)`.
    pub fn wrap(body: &dyn Fn()) {
        Self::isolated(|_| body());
    }

    /// The token of the child process [`isolated`](Self::isolated) started (initialised).
    ///
    /// # Panics
    /// Outside such a child process.
    pub fn current() -> Self {
        assert!(
            std::env::var(CHILD_ENV).is_ok(),
            "Opencryptoki::current inside Opencryptoki::isolated"
        );
        Self {
            module: Self::module_path(),
        }
    }

    /// Initialises the soft token as opencryptoki requires: `C_InitToken` with the factory SO
    /// PIN, the SO PIN changed, the user PIN set by the SO.
    fn initialise(&self) {
        let pkcs11 = Pkcs11::new(&self.module).expect("load opencryptoki");
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let slot = pkcs11
            .get_all_slots()
            .expect("C_GetSlotList")
            .into_iter()
            .find(|s| s.id() == SLOT)
            .expect("opencryptoki's soft token slot");
        let pin = |p: &str| AuthPin::from(p.to_owned());
        pkcs11
            .init_token(slot, &pin(FACTORY_SO_PIN), TOKEN)
            .expect("C_InitToken with the factory SO PIN");
        let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
        session
            .login(UserType::So, Some(&pin(FACTORY_SO_PIN)))
            .expect("SO login");
        session
            .set_pin(&pin(FACTORY_SO_PIN), &pin(SO_PIN))
            .expect("change the SO PIN");
        session.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
        session.logout().expect("C_Logout");
        drop(session);
        // opencryptoki leaves thread-specific data whose destructor runs when this thread
        // ends: keep the library mapped past C_Finalize, or that destructor jumps into
        // unmapped code.
        std::mem::forget(pkcs11.clone());
        pkcs11.finalize().expect("C_Finalize");
    }

    /// The module.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// `pkcs11:token=ock-soft;object={object}?module-path=...&pin-value=...`.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}&pin-value={USER_PIN}",
            self.module.display()
        )
    }
}

/// `'path'`, for the shell.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
