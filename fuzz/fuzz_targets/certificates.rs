//! The certificate-chain loader and the identity builder (chain + key + CN check) on arbitrary
//! bytes: they may refuse, never panic.
#![no_main]

use hsm_x509::{X509IdentityBuilder, load_certificates};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(chain) = load_certificates(data) {
        assert!(!chain.is_empty());
    }
    let _ = X509IdentityBuilder::new().certificates(data).key(data).build();
});
