//! The TPM example, `cargo run --example tpm_swtpm`, in a package of its own: building
//! `hsm-tpm` needs the system's libtss2 (`libtss2-dev`), and the other examples, the quickstart
//! first, must build on a machine with nothing but a Rust toolchain.
//!
//! The library half says whether swtpm is there, so that the example fails with an install hint
//! instead of a spawn error.
#![forbid(unsafe_code)]

use std::process::{Command, Stdio};

/// What to do when swtpm is missing.
pub const INSTALL_HINT: &str = "swtpm is not installed. Install it with \
                                `sudo apt install swtpm swtpm-tools` (./scripts/test.sh does this for you)";

/// Whether `swtpm` runs from `PATH`.
pub fn swtpm_installed() -> bool {
    Command::new("swtpm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}
