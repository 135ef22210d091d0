//! External tools the suite runs (openssl today; swtpm, softhsm2-util and tpm2-tools with their
//! drivers), and a clear failure when one is missing.

use std::path::Path;
use std::process::{Command, Output};

/// Panics with an install hint when `tool` is not on `PATH`: a missing tool fails the suite, it
/// never skips it silently. `scripts/test.sh` installs every tool, so this only bites by hand.
/// The tool is looked up, not run (some daemons start on any argument).
pub fn require(tool: &str, debian_package: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
            .any(|dir| dir.join(tool).is_file())
    });
    assert!(
        found,
        "`{tool}` is not installed. Install it with `sudo apt-get install {debian_package}` \
         (./scripts/test.sh does this for you)."
    );
}

/// Runs `openssl` with `args` in `dir`, failing the test with its output on a non-zero exit.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    require("openssl", "openssl");
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        output.status.success(),
        "openssl {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
