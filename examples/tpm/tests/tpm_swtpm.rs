//! The TPM example, run as a user runs it (see `hsm-examples`' `tests/examples_run.rs`): it needs
//! libtss2 to build and swtpm to run, so it lives in this package of its own.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/mod.rs"]
mod common;

use common::run_example;

#[test]
fn tpm_swtpm_answers_the_challenge_in_the_tpm_and_signs_a_hub_token() {
    let run = run_example("tpm_swtpm", &[], &[]);
    run.success();
    let line = run.line("registration id '");
    let id = line.rsplit("registration id '").next().unwrap();
    let id = id.trim_end_matches('\'');
    assert_eq!(id.len(), 52, "base32 of SHA-256, unpadded: {id}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
    );
    run.line("assigned: hub 'tpm-hub.azure-devices.net', device id 'tpm-device-01' (3 requests");
    let token = run.line("SharedAccessSignature ");
    assert!(
        token.starts_with(
            "SharedAccessSignature sr=tpm-hub.azure-devices.net%2fdevices%2ftpm-device-01&sig="
        ),
        "{token}"
    );
}

#[test]
fn tpm_swtpm_without_swtpm_fails_with_the_install_hint() {
    let empty = tempfile::tempdir().unwrap();
    let run = run_example(
        "tpm_swtpm",
        &[],
        &[("PATH", empty.path().to_str().unwrap())],
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains(
            "swtpm is not installed. Install it with `sudo apt install swtpm swtpm-tools`"
        ),
        "{}",
        run.stderr
    );
}
