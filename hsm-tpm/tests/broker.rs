//! The TPM as devices reach it: through tpm2-abrmd (the access broker and resource manager, on
//! a private D-Bus of its own, in front of swtpm), two processes using it at once; and the EK
//! certificate a manufacturer stored in NV, read and checked to certify the EK.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use hsm_core::{KeyHandle as _, SignatureScheme};
use hsm_testkit::swtpm::Swtpm;
use hsm_testkit::tabrmd::Broker;
use hsm_tpm::{KeySpec, PersistentHandle, Tpm, TpmIdentity, TpmKey};

const WORKER: &str = "HSM_TPM_BROKER_WORKER";
const KEY: u32 = 0x8100_0400;

/// What a process does through the broker: `setup` makes the shared key; `sign` makes 40
/// signatures with it, each verified, and reads the EK.
fn worker(role: &str, tcti: &str) {
    let tpm = Tpm::open(tcti.parse().unwrap()).unwrap();
    let handle = PersistentHandle::new(KEY).unwrap();
    if role == "setup" {
        TpmKey::create(&tpm, KeySpec::EcdsaP256, handle).unwrap();
        return;
    }
    let key = TpmKey::open(&tpm, handle).unwrap();
    for i in 0..40u32 {
        let message = format!("process {} message {i}", std::process::id());
        let signature = key
            .sign(SignatureScheme::EcdsaP256Sha256, message.as_bytes())
            .unwrap();
        hsm_testkit::verify::rustcrypto(
            SignatureScheme::EcdsaP256Sha256,
            key.public_key_der(),
            message.as_bytes(),
            &signature,
        )
        .unwrap();
    }
    TpmIdentity::open(&tpm).unwrap();
}

#[test]
fn two_processes_use_the_tpm_at_once_through_the_broker() {
    if let Ok(role) = std::env::var(WORKER) {
        worker(&role, &std::env::var("HSM_TPM_BROKER_TCTI").unwrap());
        return;
    }
    let broker = Broker::start();
    let spawn = |role: &str| {
        let mut command = hsm_testkit::child::rerun_this_test();
        command
            .envs(broker.env())
            .env(WORKER, role)
            .env("HSM_TPM_BROKER_TCTI", broker.tcti())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().unwrap()
    };
    let check = |child: std::process::Child| {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "a process using the TPM through the broker failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    check(spawn("setup"));
    // Two at once.
    let (first, second) = (spawn("sign"), spawn("sign"));
    check(first);
    check(second);
}

#[test]
fn the_ek_certificate_in_nv_certifies_the_ek() {
    let swtpm = Swtpm::start_manufactured();
    let tpm = common::connect(&swtpm);
    let identity = TpmIdentity::open(&tpm).unwrap();
    let certificates = identity.ek_certificates().unwrap();
    let rsa = certificates
        .iter()
        .find(|c| c.index == 0x01c0_0002)
        .unwrap_or_else(|| panic!("no RSA EK certificate: {certificates:?}"));
    assert_eq!(rsa.key, "RSA 2048");
    assert_eq!(
        rsa.certifies_ek,
        Some(true),
        "the RSA EK certificate is for another key"
    );
    // swtpm_setup also makes an ECC EK and its certificate; this identity uses the RSA EK.
    for other in certificates.iter().filter(|c| c.index != 0x01c0_0002) {
        assert_eq!(other.certifies_ek, None, "{other:?}");
    }
    // Issued by the manufacturer's (here: swtpm's local) CA, as openssl checks it.
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ek.pem");
    std::fs::write(&pem, hsm_core::pem::encode("CERTIFICATE", &rsa.certificate)).unwrap();
    let [root, issuer] = <[_; 2]>::try_from(swtpm.ek_ca()).unwrap();
    let verified = std::process::Command::new("openssl")
        .args(["verify", "-partial_chain", "-CAfile"])
        .arg(&issuer)
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(root.is_file());
    // A TPM without one has none.
    let bare = Swtpm::start();
    let tpm = common::connect(&bare);
    assert!(
        TpmIdentity::open(&tpm)
            .unwrap()
            .ek_certificates()
            .unwrap()
            .is_empty()
    );
}
