//! Running the current test again, alone, in a child process of the test binary: for backends
//! that are configured once per process (SoftHSM2 reads `SOFTHSM2_CONF`, tpm2-pkcs11 its store
//! and TCTI, at `C_Initialize`; a TCTI for tabrmd reads the D-Bus address from the
//! environment), or that need a namespace of their own (opencryptoki's fixed paths).

use std::process::Command;

/// A command that runs the current test, and only it, in a child process of this test binary
/// (`<binary> <test path> --exact --nocapture --test-threads=1`). Add the environment (or
/// wrap it) before [`expect_pass`].
///
/// # Panics
/// Off a libtest test thread (its name is the test's path).
pub fn rerun_this_test() -> Command {
    let test = std::thread::current().name().map(str::to_owned).expect(
        "a backend's isolated() must run on a libtest test thread (its name is the test path)",
    );
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(exe);
    command.args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"]);
    command
}

/// Runs `command` (from [`rerun_this_test`]) and fails unless its one test passed, showing its
/// output.
///
/// # Panics
/// When the child fails or cannot run.
pub fn expect_pass(mut command: Command) {
    let output = command.output().expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the test failed in its child process ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
