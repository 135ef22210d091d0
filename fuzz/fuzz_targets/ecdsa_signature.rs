//! The raw r||s <-> DER ECDSA signature converters: never panic, and whatever converts one way
//! converts back to the same bytes.
#![no_main]

use hsm_core::KeyAlgorithm;
use hsm_core::signature::{ecdsa_der_to_raw, ecdsa_raw_to_der};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519] {
        if let Ok(raw) = ecdsa_der_to_raw(algorithm, data) {
            assert_eq!(ecdsa_raw_to_der(algorithm, &raw).ok().as_deref(), Some(data));
        }
        if let Ok(der) = ecdsa_raw_to_der(algorithm, data) {
            assert_eq!(ecdsa_der_to_raw(algorithm, &der).ok().as_deref(), Some(data));
        }
    }
});
