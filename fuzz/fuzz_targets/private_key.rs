//! The private-key loader (PEM and DER, PKCS#8, encrypted PKCS#8, SEC1, PKCS#1) on arbitrary
//! bytes: it may refuse, never panic.
#![no_main]

use hsm_core::{KeyHandle, SecretString, SignatureScheme};
use hsm_x509::SoftwareKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let passphrase = SecretString::from("fuzz");
    for pass in [None, Some(&passphrase)] {
        if let Ok(key) = SoftwareKey::from_bytes(data, pass) {
            // Whatever loads must be able to sign with its first scheme.
            let scheme = key.schemes()[0];
            assert!(key.sign(scheme, b"fuzz").is_ok());
            assert!(key.sign(SignatureScheme::Ed25519, b"fuzz").is_ok() == key.algorithm().supports(SignatureScheme::Ed25519));
        }
    }
});
