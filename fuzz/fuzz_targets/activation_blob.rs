//! The DPS activation blob and TPM public areas on arbitrary bytes: never panics, and what
//! parses marshals back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpm_wire::{ActivationBlob, Public};

fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = ActivationBlob::parse(data) {
        assert_eq!(blob.to_bytes().expect("a parsed blob marshals"), data);
        if let Ok(public) = blob.public_area() {
            assert_eq!(public.to_tpmt().expect("a parsed public marshals"), blob.public);
        }
    }
    if let Ok(public) = Public::from_tpm2b(data) {
        assert_eq!(public.to_tpm2b().expect("a parsed public marshals"), data);
        let _ = public.name();
        let _ = public.rsa_public_key();
    }
    if let Ok(public) = Public::from_tpmt(data) {
        assert_eq!(public.to_tpmt().expect("a parsed public marshals"), data);
    }
});
