//! Authorisation failures and dictionary-attack lockout, typed: a key made by tpm2-tools with
//! a password the driver does not have is refused (`Error::AuthFailed`), and after the TPM's
//! maximum number of failures it locks out (`Error::Lockout`, saying how to recover).
#![allow(clippy::unwrap_used)]

mod common;

use hsm_core::{KeyHandle as _, SignatureScheme};
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{Error, PersistentHandle, TpmKey};

#[test]
fn a_wrong_authorisation_and_the_lockout_are_typed() {
    let swtpm = Swtpm::start();
    // Two failures before lockout, recovering slowly.
    swtpm.tpm2_ok(&[
        "dictionarylockout",
        "-s",
        "-n",
        "2",
        "-t",
        "600",
        "-l",
        "600",
    ]);
    // Without a resource manager, tpm2-tools leave their transient objects loaded: flush after
    // each step (swtpm has three object slots).
    swtpm.tpm2_ok(&["createprimary", "-C", "o", "-c", "primary.ctx"]);
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    swtpm.tpm2_ok(&[
        "create",
        "-C",
        "primary.ctx",
        "-G",
        "ecc256",
        "-p",
        "secret-pw",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
    ]);
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    swtpm.tpm2_ok(&[
        "load",
        "-C",
        "primary.ctx",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
        "-c",
        "key.ctx",
    ]);
    swtpm.tpm2_ok(&["evictcontrol", "-C", "o", "-c", "key.ctx", "0x81000500"]);
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    let tpm = common::connect(&swtpm);
    let key = TpmKey::open(&tpm, PersistentHandle::new(0x8100_0500).unwrap()).unwrap();
    let mut failures = 0;
    let lockout = loop {
        let error = key
            .sign(SignatureScheme::EcdsaP256Sha256, b"no password")
            .unwrap_err();
        let source = std::error::Error::source(&error).unwrap();
        let tpm_error = source
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("{source}"));
        match tpm_error {
            Error::AuthFailed { .. } => failures += 1,
            Error::Lockout { .. } => break tpm_error.to_string(),
            other => panic!("after {failures} failures: {other:?}"),
        }
        assert!(failures <= 5, "no lockout after {failures} failures");
    };
    assert!(failures >= 1, "{failures}");
    assert!(lockout.contains("dictionary-attack lockout"), "{lockout}");
    assert!(lockout.contains("--clear-lockout"), "{lockout}");
}
