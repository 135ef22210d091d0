//! Signing keys in the TPM as key handles: made by tpm2-tools or by this crate, verified by
//! openssl and RustCrypto. Every test starts its own swtpm.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme};
use hsm_testkit::swtpm::Swtpm;
use hsm_testkit::{tools, verify};
use hsm_tpm::{Error, KeySpec, PersistentHandle, TpmIdentity, TpmKey};

use common::{connect, leftovers};

const KEY_HANDLE: &str = "0x81000010";

fn key_handle() -> PersistentHandle {
    KEY_HANDLE.parse().unwrap()
}

#[test]
fn tpm2_tools_ecc_key_signs_through_the_handle() {
    let swtpm = Swtpm::start();
    // A P-256 key made, loaded and persisted by tpm2-tools, under a primary of their own.
    // Without a resource manager tpm2-tools leave objects loaded: flush between steps.
    swtpm.tpm2_ok(&["createprimary", "-C", "o", "-c", "primary.ctx"]);
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    swtpm.tpm2_ok(&[
        "create",
        "-C",
        "primary.ctx",
        "-G",
        "ecc256",
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
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    swtpm.tpm2_ok(&["evictcontrol", "-C", "o", "-c", "key.ctx", KEY_HANDLE]);
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    swtpm.tpm2_ok(&["readpublic", "-c", KEY_HANDLE, "-f", "der", "-o", "key.der"]);
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    let their_spki = std::fs::read(swtpm.work_dir().join("key.der")).unwrap();

    let tpm = connect(&swtpm);
    let key = TpmKey::open(&tpm, key_handle()).unwrap();
    assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP256);
    assert_eq!(key.public_key_der(), their_spki.as_slice(), "SPKI");
    let message = b"signed in the TPM, verified by openssl";
    let signature = key.sign(SignatureScheme::EcdsaP256Sha256, message).unwrap();
    verify::rustcrypto(
        SignatureScheme::EcdsaP256Sha256,
        key.public_key_der(),
        message,
        &signature,
    )
    .unwrap();

    // openssl, with the public key tpm2-tools exported.
    let dir = swtpm.work_dir();
    std::fs::write(dir.join("msg"), message).unwrap();
    std::fs::write(dir.join("sig.der"), &signature).unwrap();
    let out = tools::openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "key.der",
            "-keyform",
            "DER",
            "-signature",
            "sig.der",
            "msg",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");

    // A CSR through the handle, checked by openssl.
    let csr = hsm_core::csr_der(Arc::new(key), "tpm-device").unwrap();
    std::fs::write(dir.join("req.der"), &csr).unwrap();
    let out = tools::openssl(
        dir,
        &[
            "req", "-verify", "-noout", "-inform", "DER", "-in", "req.der",
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("verify OK"), "{said}");

    tpm.disconnect().unwrap();
    assert_eq!(leftovers(&swtpm), "");
}

#[test]
fn created_keys_sign_every_scheme() {
    let swtpm = Swtpm::start();
    let tpm = connect(&swtpm);
    let ecc = TpmKey::create(&tpm, KeySpec::EcdsaP256, key_handle()).unwrap();
    let rsa_handle = PersistentHandle::new(0x8100_0011).unwrap();
    let rsa = TpmKey::create(&tpm, KeySpec::Rsa2048, rsa_handle).unwrap();
    assert_eq!(rsa.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });
    assert_eq!(rsa.schemes().len(), 6, "PKCS#1 v1.5 and PSS, three hashes");
    for key in [&ecc, &rsa] {
        for &scheme in key.schemes() {
            for message in [&b""[..], b"message", &[0x5a; 5000]] {
                let signature = key.sign(scheme, message).unwrap();
                verify::rustcrypto(scheme, key.public_key_der(), message, &signature)
                    .unwrap_or_else(|e| panic!("{scheme}: {e}"));
                verify::webpki(scheme, key.public_key_der(), message, &signature)
                    .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            }
        }
    }
    assert!(matches!(
        ecc.sign(SignatureScheme::RsaPkcs1Sha256, b"x"),
        Err(hsm_core::Error::UnsupportedScheme { .. })
    ));

    // Reopened from its handle (a new process would do this), the key is the same.
    let reopened = TpmKey::open(&tpm, key_handle()).unwrap();
    assert_eq!(reopened.public_key_der(), ecc.public_key_der());
    assert_eq!(reopened.tpm_public(), ecc.tpm_public());

    // The handle is taken now.
    assert!(matches!(
        TpmKey::create(&tpm, KeySpec::EcdsaP256, key_handle()),
        Err(Error::HandleInUse { handle }) if handle == key_handle()
    ));

    // tpm2-tools sees the same public key.
    tpm.disconnect().unwrap();
    assert_eq!(leftovers(&swtpm), "");
    swtpm.tpm2_ok(&[
        "readpublic",
        "-c",
        "0x81000011",
        "-f",
        "der",
        "-o",
        "rsa.der",
    ]);
    let theirs = std::fs::read(swtpm.work_dir().join("rsa.der")).unwrap();
    assert_eq!(theirs, rsa.public_key_der());
}

#[test]
fn unsuitable_objects_are_typed_errors() {
    let swtpm = Swtpm::start();
    let tpm = connect(&swtpm);
    assert!(matches!(
        TpmKey::open(&tpm, key_handle()),
        Err(Error::NotFound { handle, .. }) if handle == key_handle()
    ));
    let identity = TpmIdentity::open(&tpm).unwrap();
    // The EK and SRK are restricted decryption keys.
    for handle in [identity.ek_handle(), identity.srk_handle()] {
        match TpmKey::open(&tpm, handle) {
            Err(Error::UnsuitableKey { handle: h, reason }) => {
                assert_eq!(h, handle);
                assert!(reason.contains("sign"), "{reason}");
            }
            other => panic!("{handle}: {other:?}"),
        }
    }
    // An HMAC key is no signing key either.
    let key = common::hmac_key(9);
    identity
        .activate_identity_key(&common::blob_for(
            identity.endorsement_key(),
            identity.storage_root_key(),
            &key,
        ))
        .unwrap();
    assert!(matches!(
        TpmKey::open(&tpm, identity.identity_handle()),
        Err(Error::UnsuitableKey { .. })
    ));
    // Signing with a key that was evicted underneath the handle.
    let ecc = TpmKey::create(&tpm, KeySpec::EcdsaP256, key_handle()).unwrap();
    assert!(tpm.evict(key_handle()).unwrap());
    match ecc.sign(SignatureScheme::EcdsaP256Sha256, b"gone") {
        Err(hsm_core::Error::Device { operation, source }) => {
            assert_eq!(operation, "TPM2_Sign");
            assert!(
                matches!(source.downcast_ref::<Error>(), Some(Error::NotFound { .. })),
                "{source:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}
